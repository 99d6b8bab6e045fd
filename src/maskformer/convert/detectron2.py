"""Original MaskFormer (detectron2) checkpoints -> this project's state dict.

Model-zoo files are pickles ``{"model": {name: ndarray}}`` in the *old* key layout (``sem_seg_head.layer_4`` rather than
``sem_seg_head.pixel_decoder.layer_4``); files written by newer code use the new layout. Both are accepted.
Backbone-only ImageNet files (torchvision ResNet ``.pth``, detectron2's converted ``R-50.pkl``, official Swin
``.pth``) load into the backbone only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
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


def read_checkpoint_state(path: str | Path) -> dict[str, np.ndarray | torch.Tensor]:
    """The weight dict of a ``.pkl`` (restricted unpickler) or ``.pth``/``.pt`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".pkl":
        data = load_pkl(path)
        return as_numpy_state(data.get("model", data), str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
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


# Released model-zoo files (OFFICIAL_SPEC §7) -> the config in configs/ they were trained with. The .pkl files carry
# no config, so `maskformer convert detectron2` needs --config; this table lets its error message name the right one.
MODEL_ZOO: dict[str, str] = {
    # ADE20K-150 semantic
    "model_final_1043f3.pkl": "ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml",
    "model_final_833630.pkl": "ade20k-150/per_pixel_baseline_plus_R50_bs16_160k.yaml",
    "model_final_d8dbeb.pkl": "ade20k-150/maskformer_R50_bs16_160k.yaml",
    "model_final_1aeb94.pkl": "ade20k-150/maskformer_R101_bs16_160k.yaml",
    "model_final_b432ea.pkl": "ade20k-150/maskformer_R101c_bs16_160k.yaml",
    "model_final_8657a5.pkl": "ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml",
    "model_final_528157.pkl": "ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml",
    "model_final_45388b.pkl": "ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml",
    "model_final_aefa3b.pkl": "ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml",
    # COCO-Stuff-10K
    "model_final_275ab0.pkl": "coco-stuff-10k-171/per_pixel_baseline_R50_bs32_60k.yaml",
    "model_final_1fa920.pkl": "coco-stuff-10k-171/per_pixel_baseline_plus_R50_bs32_60k.yaml",
    "model_final_cb03eb.pkl": "coco-stuff-10k-171/maskformer_R50_bs32_60k.yaml",
    "model_final_eb19bb.pkl": "coco-stuff-10k-171/maskformer_R101_bs32_60k.yaml",
    "model_final_bffd25.pkl": "coco-stuff-10k-171/maskformer_R101c_bs32_60k.yaml",
    # ADE20K-Full-847
    "model_final_9f66a9.pkl": "ade20k-full-847/per_pixel_baseline_R50_bs16_200k.yaml",
    "model_final_4d31f2.pkl": "ade20k-full-847/per_pixel_baseline_plus_R50_bs16_200k.yaml",
    "model_final_f4e3f6.pkl": "ade20k-full-847/maskformer_R50_bs16_200k.yaml",
    "model_final_88df33.pkl": "ade20k-full-847/maskformer_R101_bs16_200k.yaml",
    "model_final_75d34e.pkl": "ade20k-full-847/maskformer_R101c_bs16_200k.yaml",
    # Cityscapes, Mapillary Vistas
    "model_final_38c00c.pkl": "cityscapes/maskformer_R101_bs16_90k.yaml",
    "model_final_4f8ff9.pkl": "cityscapes/maskformer_R101c_bs16_90k.yaml",
    "model_final_f3fc73.pkl": "mapillary-vistas/maskformer_R50_bs16_300k.yaml",
    # COCO panoptic
    "model_final_6f60dc.pkl": "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml",
    "model_final_57b049.pkl": "coco-panoptic/maskformer_panoptic_R101_bs64_554k.yaml",
    "model_final_539394.pkl": "coco-panoptic/swin/maskformer_panoptic_swin_tiny_bs64_554k.yaml",
    "model_final_5bf6b1.pkl": "coco-panoptic/swin/maskformer_panoptic_swin_small_bs64_554k.yaml",
    "model_final_4b7f49.pkl": "coco-panoptic/swin/maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml",
    "model_final_7505c4.pkl": "coco-panoptic/swin/maskformer_panoptic_swin_large_IN21k_384_bs64_554k.yaml",
    # ADE20K panoptic
    "model_final_7aa977.pkl": "ade20k-150-panoptic/maskformer_panoptic_R50_bs16_720k.yaml",
    "model_final_0b3cc8.pkl": "ade20k-150-panoptic/maskformer_panoptic_R101_bs16_720k.yaml",
}
