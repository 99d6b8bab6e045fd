"""Self-describing checkpoints: config + weights (+ optimizer, scheduler, step, RNG states when training).

Written atomically (temporary file in the same folder, then ``os.replace``), so a crash mid-write leaves the previous
file intact; read with ``torch.load(weights_only=True)`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..build import build_model
from ..config import Config, config_from_dict, config_to_dict
from ..data.metadata import DatasetMeta, meta_from_checkpoint
from ..errors import CheckpointError, ConfigError, interrupts_held
from ..fileio import CUT_ARCHIVE, atomic_path, cut_archive, damaged_archive, looks_like_text, special_file
from ..inference.device import check_device

FORMAT = "maskformer-checkpoint"
VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``. A Ctrl-C or SIGTERM
    meanwhile waits until the file is in place (``interrupts_held``: a torch.save cut mid-write aborts the process).
    """
    if special_file(path):  # a named pipe, written through: opening it waits for a reader, which Ctrl-C must end
        with open(path, "wb") as f, interrupts_held():
            torch.save(obj, f)
        return
    with interrupts_held(), atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:  # (our handle: closed when the save fails too)
            torch.save(obj, f)


def save_checkpoint(
    path: str | Path, *, cfg: Config, model: nn.Module, meta: dict | None = None, **training_state: Any
) -> None:
    """Write ``{"format", "version", "config", "model", "meta", **training_state}`` atomically.

    ``meta``: the class table, ``DatasetMeta.to_dict()`` (``{"dataset", "ignore_label", "classes": [{"id", "name",
    "color", "isthing"}]}``), the one schema every producer writes; by default the config's own (``build_meta``:
    e.g. the demo's synthetic classes, or a folder dataset's ``classes.json`` when its ``data.root`` is there).
    ``training_state``: e.g. ``optimizer``, ``scheduler``, ``iteration``, ``rng``, ``sampler``.
    """
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    why = weights_mismatch(_shapes_of(cfg), state, ("the model", "the network cfg builds"))
    if why is not None:  # (written, it could never be read: every reader builds the model from the config)
        raise CheckpointError(f"{path}: cfg does not describe this model ({why}); nothing was written")
    meta = _config_meta(cfg) if meta is None else meta
    obj = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "model": state, "meta": meta}
    obj.update(training_state)
    atomic_torch_save(obj, path)


def _shapes_of(cfg: Config) -> nn.Module:
    """The network ``cfg`` builds, on the meta device (shapes, no memory, ~0.1 s for R50; no pretrained file read)."""
    copy = config_from_dict(config_to_dict(cfg))
    copy.model.backbone.weights, copy.model.backbone.timm_pretrained = "", False
    with torch.device("meta"):
        return build_model(copy, class_table=False)


def _config_meta(cfg: Config) -> dict:
    """The class table of ``cfg``'s data as training builds it, or ``{}`` (read back as the shipped table or generic
    names) when its files are not at hand or it does not fit ``model.num_classes``."""
    from ..build import build_meta
    from ..errors import UserError

    try:
        table = build_meta(cfg)
    except UserError:
        return {}
    return table.to_dict() if table.num_classes == cfg.model.num_classes else {}


_CONFIG_SECTIONS = ("_base_", "model", "loss", "data", "solver", "train", "test", "inference")


def _kind_of_file(path: Path) -> str | None:
    """Why ``path`` is not a torch checkpoint, judged from its first bytes, or None when it may be one."""
    with open(path, "rb") as f:
        head = f.read(512)
    if cut_archive(path, head):
        return CUT_ARCHIVE
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # torch's zip format or a legacy pickle
    if not head:
        return "an empty file"
    suffix = path.suffix.lower()
    text = b"\x00" not in head
    lines = [x.strip() for x in head.decode("utf-8", "replace").splitlines()] if text else []
    first = next((x for x in lines if x and not x.startswith("#")), "")
    if suffix in (".yaml", ".yml") or ":" in first and first.split(":")[0].strip() in _CONFIG_SECTIONS:
        return "a config (YAML), not a checkpoint: train it with `maskformer train` or pass a checkpoint"
    if suffix == ".pkl":
        return "an original detectron2 .pkl: convert it with `maskformer convert detectron2` first"
    if suffix == ".onnx":
        return "an ONNX graph (for onnxruntime), not a checkpoint: pass the checkpoint it was exported from"
    if text and looks_like_text(head):
        return "a text file, not a torch checkpoint"
    return "not a torch checkpoint file"


def weights_mismatch(model: nn.Module, state: object, where: tuple[str, str] = ("the file", "the model")) -> str | None:
    """Why the state dict ``state`` does not load into ``model`` (strict), naming keys and shapes; None when it fits.
    ``where`` names the two sides in the message (the state's, the model's)."""
    if not isinstance(state, dict):
        return f"its weights are a {type(state).__name__}, not a dict of tensors"
    expected = model.state_dict()
    problems = []
    for what, keys in (
        ("missing", [k for k in expected if k not in state]),
        ("unexpected", [k for k in state if k not in expected]),
    ):
        if keys:
            problems.append(f"{what} {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""))
    for k, v in expected.items():
        got = state.get(k)
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(v.shape):
            problems.append(f"{k} is {list(got.shape)} in {where[0]}, {list(v.shape)} in {where[1]}")
            break
    return "; ".join(problems) or None


def non_finite_weights(state: dict) -> str | None:
    """The first floating-point tensor of ``state`` holding NaN or infinity (with how many more do), or None."""
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]  # fmt: skip
    if not bad:
        return None
    return bad[0] + (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else "")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; every error is one ``CheckpointError`` line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    check_device(map_location)
    why = _kind_of_file(path) or damaged_archive(path)
    if why is not None:
        raise CheckpointError(f"{path}: {why}")
    try:
        with warnings.catch_warnings():  # (a plain pickle's "Detected pickle protocol" warning: the error says it)
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e)
        if "central directory" in text or "zip archive" in text or isinstance(e, EOFError) or "EOF" in text:
            raise CheckpointError(f"{path}: {CUT_ARCHIVE}") from None
        if "Weights only load failed" in text or "weights_only" in text:
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain values; not loaded, as unpickling them "
                "could run code (a maskformer checkpoint holds none: write it with `maskformer train`, `convert` or "
                "maskformer.save_checkpoint)"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable maskformer checkpoint ({first.rstrip('.')[:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a maskformer checkpoint (convert original or transformers weights with `maskformer convert`;"
            " a model built in Python: maskformer.save_checkpoint(path, cfg=cfg, model=model))"
        )
    version = obj.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, newer than this maskformer reads "
                              f"(up to {VERSION}): upgrade maskformer")  # fmt: skip
    for key in ("config", "meta", "model"):  # (every reader takes these as mappings)
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: its {key!r} is a {type(obj[key]).__name__}, not a mapping (a damaged "
                                  "checkpoint)")  # fmt: skip
    return obj


def config_of(obj: dict, path: str | Path) -> Config:
    """The config stored in a loaded checkpoint ``obj`` (errors name ``path``)."""
    if "config" not in obj:
        raise CheckpointError(f"{path}: holds no config (a maskformer checkpoint carries the config it was built from)")
    try:
        return config_from_dict(obj["config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: its config is invalid: {e}") from None


def meta_of(obj: dict, cfg: Config, path: str | Path) -> DatasetMeta:
    """The class table of a loaded checkpoint ``obj``: the one reader of the metadata schema (see
    ``maskformer.data.metadata.meta_from_checkpoint``; old layouts load too)."""
    return meta_from_checkpoint(
        obj.get("meta"), num_classes=cfg.model.num_classes, dataset=cfg.data.dataset, where=str(path)
    )


def load_model_and_config(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Config, DatasetMeta]:
    """Build the checkpoint's model from its own config and load its weights (strict). Returns (model, cfg, meta).

    The model carries both: ``model.cfg`` (the config) and ``model.class_meta`` (the class table), so
    ``Predictor(model)`` needs nothing else.
    """
    obj = load_checkpoint(path, map_location)
    cfg = config_of(obj, path)
    meta = meta_of(obj, cfg, path)
    model = build_model(cfg, class_table=False)  # (the checkpoint's own table is attached below)
    why = weights_mismatch(model, obj.get("model"))
    if why is None:
        try:
            model.load_state_dict(obj["model"], strict=True)
        except (RuntimeError, KeyError) as e:
            why = str(e).splitlines()[0][:300]
    if why is not None:
        raise CheckpointError(f"{path}: weights do not fit its config ({why})") from None
    bad = non_finite_weights(obj["model"])
    if bad is not None:
        raise CheckpointError(f"{path}: weights {bad} hold NaN or infinite values (the training that wrote them "
                              "diverged): use an earlier checkpoint")  # fmt: skip
    model.class_meta = meta
    return model.to(map_location).eval(), cfg, meta


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The public loader: a ready-to-run model in eval mode, built from the checkpoint's own config, with
    ``model.cfg`` and ``model.class_meta`` attached."""
    return load_model_and_config(path, map_location)[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """RNG states of python, numpy and torch as plain types/tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x
