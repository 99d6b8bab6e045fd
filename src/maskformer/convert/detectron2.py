"""Original MaskFormer (detectron2) checkpoints -> this project's state dict.

Model-zoo files are pickles ``{"model": {name: ndarray}}`` in the *old* key layout (``sem_seg_head.layer_4`` rather than
``sem_seg_head.pixel_decoder.layer_4``); files written by newer code use the new layout. Both are accepted.
Backbone-only ImageNet files (torchvision ResNet ``.pth``, detectron2's converted ``R-50.pkl``, official Swin
``.pth``) load into the backbone only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import CUT_ARCHIVE, not_a_file, weight_file_problem
from .pickle_io import as_numpy_state, load_pkl
from .rename import DROP, convert_state

# Full MaskFormer / baseline checkpoints (old or new layout) -> ours.
FULL_MODEL_RULES: list[tuple[str, str | None]] = [
    (r"criterion\.empty_weight", DROP),
    (r"pixel_(mean|std)", DROP),
    (r"sem_seg_head\.predictor\.(.*)", r"predictor.\1"),
    (r"sem_seg_head\.pixel_decoder\.(.*)", r"pixel_decoder.\1"),
    (r"sem_seg_head\.(.*)", r"pixel_decoder.\1"),  # old (version-1) layout
    (r"backbone\.(.*)", r"backbone.\1"),
]

# torchvision ResNet -> backbone
TORCHVISION_RESNET_RULES: list[tuple[str, str | None]] = [
    (r"fc\..*", DROP),
    (r".*num_batches_tracked", DROP),
    (r"conv1\.weight", r"backbone.stem.conv1.weight"),
    (r"bn1\.(.*)", r"backbone.stem.conv1.norm.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", r"backbone.res\1.\2.conv\3.weight"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(.*)", r"backbone.res\1.\2.conv\3.norm.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", r"backbone.res\1.\2.shortcut.weight"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(.*)", r"backbone.res\1.\2.shortcut.norm.\3"),
]

# detectron2-converted backbone pickles (R-50.pkl, R-103.pkl) and Swin .pth -> backbone
BACKBONE_RULES: list[tuple[str, str | None]] = [
    (r"stem\.fc\..*|fc\..*|fc1000\..*|head\..*|norm\.(weight|bias)", DROP),
    (r".*attn_mask", DROP),
    (r".*num_batches_tracked", DROP),
    (r"backbone\.(.*)", r"backbone.\1"),
    # "(.+)", not "(.*)": re.sub would also replace the empty match at the end of the key
    (r"(.+)", r"backbone.\1"),
]


def _fix_torchvision_stage_numbers(state: dict) -> dict:
    # torchvision counts layer1..4; detectron2 names them res2..5
    out = {}
    for k, v in state.items():
        if k.startswith("layer") and k[5].isdigit():
            k = f"layer{int(k[5]) + 1}{k[6:]}"
        out[k] = v
    return out


# torch.save's older format (before torch 1.6, or _use_new_zipfile_serialization=False) begins with a pickled magic
_LEGACY_TORCH = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")


def _starts_as_archive(path: Path) -> bool:
    """Whether the file is a torch weight file by its first bytes: a zip archive or torch's older pickled format."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_TORCH))
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head == _LEGACY_TORCH


def read_checkpoint_state(path: str | Path) -> dict[str, np.ndarray | torch.Tensor]:
    """The weight dict of a ``.pkl`` (restricted unpickler) or ``.pth``/``.pt`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_a_file(path)}")
    if path.suffix == ".pkl" and not _starts_as_archive(path):  # (a torch archive named .pkl is read as one)
        data = load_pkl(path)
        return as_numpy_state(data.get("model", data), str(path))
    why = weight_file_problem(path)
    if why is not None:
        raise CheckpointError(f"{path}: cannot read checkpoint ({why})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text:  # torch's advice to load unsafely is not for this file
            why = "not a torch weight file, or one holding objects other than tensors (not unpickled, for safety)"
        elif "central directory" in text or "zip archive" in text or isinstance(e, EOFError):  # (+ miniz's advice)
            why = CUT_ARCHIVE
        else:
            first = (str(e).splitlines() or [""])[0]
            detail = "" if isinstance(e, KeyError | IndexError | EOFError) or len(first) < 12 else f": {first}"
            why = f"not a torch weight file, nor a .pkl of the original's{detail}"  # (a KeyError's number says nothing)
        raise CheckpointError(f"{path}: cannot read checkpoint ({why})") from None
    if isinstance(data, dict):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: no weight dict found")
    return dict(data)


def load_detectron2_weights(model: nn.Module, path: str | Path) -> None:
    """Load a full original MaskFormer checkpoint into ``model``; every key must be consumed and filled."""
    state = read_checkpoint_state(path)
    target = model.state_dict()
    converted = convert_state(state, FULL_MODEL_RULES, target, source_name=str(path))
    model.load_state_dict(converted, strict=True)


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load ImageNet backbone weights (torchvision ResNet, detectron2 R-50/R-103 .pkl, Swin .pth) into
    ``model.backbone``. Every source key must be used; only the Swin per-stage output norms may stay unfilled."""
    state = read_checkpoint_state(path)
    target = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    if any(k.startswith("layer1.") for k in state):
        rules, state = TORCHVISION_RESNET_RULES, _fix_torchvision_stage_numbers(state)
    else:
        rules = BACKBONE_RULES
    converted = convert_state(
        state, rules, target, source_name=str(path), allow_missing=[r"backbone\.norm\d\.(weight|bias)"]
    )
    model.load_state_dict(converted, strict=False)


def convert_detectron2_state(path: str | Path, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of a full original checkpoint renamed to ``target``'s keys (``target`` may hold meta tensors:
    only names and shapes are compared). Same rules and errors as ``load_detectron2_weights``."""
    return convert_state(read_checkpoint_state(path), FULL_MODEL_RULES, target, source_name=str(path))


def detectron2_name(key: str) -> str:
    """Our state-dict key -> its name in a released model-zoo file (old layout): the inverse of
    ``FULL_MODEL_RULES``."""
    if key.startswith("pixel_decoder."):
        return "sem_seg_head." + key.removeprefix("pixel_decoder.")
    if key.startswith("predictor."):
        return "sem_seg_head." + key
    if key.startswith("backbone."):
        return key
    raise CheckpointError(f"{key}: no place for this weight in an original MaskFormer checkpoint")


def ours_state_to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Our state dict -> the weight dict of a released model-zoo ``.pkl``: numpy arrays under the original's names in
    the old (version-1) layout the zoo files use (``pixel_decoder.X`` -> ``sem_seg_head.X``, ``predictor.X`` ->
    ``sem_seg_head.predictor.X``, ``backbone.X`` unchanged), which the original's loader upgrades on reading; no
    ``criterion.empty_weight`` (the original builds it from its config, as for its own zoo files).

    Checked on the way out: ``FULL_MODEL_RULES`` read the result back into exactly ``state``'s keys and shapes."""
    out = {detectron2_name(key): value.detach().cpu().numpy().copy() for key, value in state.items()}
    back = convert_state(out, FULL_MODEL_RULES, state, source_name="the converted weights")
    assert back.keys() == state.keys()
    return out


@functools.cache
def zoo_file_configs() -> dict[str, str]:
    """The released model-zoo files' names (OFFICIAL_SPEC §7) -> the config under configs/ each was trained with
    (the table is resources/model_zoo.json, read on first use). The .pkl files carry no config, so `maskformer
    convert detectron2` needs --config; this table lets its error message name the right one."""
    import json
    from importlib import resources

    data = json.loads(resources.files("maskformer").joinpath("resources", "model_zoo.json").read_text())
    return {m["path"].rsplit("/", 1)[-1]: f"{m['name']}.yaml" for m in data["models"]}
