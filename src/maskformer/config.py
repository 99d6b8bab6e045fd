"""One configuration for everything: nested dataclasses, YAML load/save, type-checked ``a.b=c`` overrides.

A YAML file may name a parent with ``_base_: relative/path.yaml``; the child's keys are merged over it.
Unknown keys and values of the wrong type are errors that name the key (``ConfigError``).
Modules never read this object: ``build.py`` turns it into plain constructor arguments.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .fileio import atomic_write_text

__all__ = ["Config", "ConfigError", "load_config", "save_config", "config_from_dict", "config_to_dict"]


@dataclass
class BackboneConfig:
    """Which backbone and its shape. ``type``: resnet | swin | timm."""

    type: str = "resnet"
    # ResNet (detectron2 layout): depth 50/101 or explicit ``blocks``; "deeplab" stem for R101c.
    depth: int = 50
    blocks: list[int] = field(default_factory=list)  # overrides depth when set, e.g. [1, 1, 1, 1] for tiny models
    stem: str = "basic"  # basic | deeplab
    stem_out_channels: int = 64
    width_per_group: int = 64  # bottleneck width of res2 (channels of res2 = 4 * this)
    res5_multi_grid: list[int] = field(default_factory=lambda: [1, 1, 1])
    norm: str = "FrozenBN"  # FrozenBN | BN | SyncBN | GN (BN/GN for training from scratch)
    # Swin
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    pretrain_img_size: int = 224
    # timm: any model with features_only
    timm_name: str = ""
    timm_pretrained: bool = False
    # Path to backbone-only ImageNet weights (torchvision R-50 .pth, converted .pkl, Swin .pth); "" = random init.
    weights: str = ""


@dataclass
class ModelConfig:
    """Architecture. ``meta_arch``: maskformer | per_pixel | per_pixel_plus (the paper's two baselines)."""

    meta_arch: str = "maskformer"
    num_classes: int = 150
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: str = "fpn"  # fpn | transformer_encoder ("+6 Enc")
    pixel_decoder_enc_layers: int = 6  # encoder layers of the transformer_encoder pixel decoder
    convs_dim: int = 256
    mask_dim: int = 256
    norm: str = "GN"  # pixel-decoder norm: GN | "" (none)
    transformer_in_feature: str = "res5"  # res5 | transformer_encoder
    num_queries: int = 100
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    enc_layers: int = 0
    dec_layers: int = 6
    pre_norm: bool = False
    deep_supervision: bool = True
    enforce_input_proj: bool = False
    size_divisibility: int = 32  # pad the batch to a multiple of this (0 = no rounding)
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    weights: str = ""  # full-model checkpoint to start from ("" = none)


@dataclass
class LossConfig:
    """Criterion weights and options (OFFICIAL_SPEC §3)."""

    class_weight: float = 1.0
    mask_weight: float = 20.0  # focal
    dice_weight: float = 1.0
    no_object_weight: float = 0.1
    matching: str = "hungarian"  # hungarian | fixed (query i <-> class i; the paper's MaskFormer-fixed)
    point_sample: bool = False  # memory-light mask losses on sampled points (Mask2Former-style)
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class DataConfig:
    """Dataset and training-time augmentation (OFFICIAL_SPEC §5)."""

    dataset: str = "ade20k_150"
    root: str = "datasets"
    train_split: str = "train"
    val_split: str = "val"
    aspect_ratio_grouping: bool = True  # batches of one orientation (landscape / other), as detectron2's loader
    mapper: str = "semantic"  # semantic | panoptic | detr_panoptic
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    min_size_train: list[int] = field(default_factory=lambda: [512])
    max_size_train: int = 2048
    single_category_max_area: float = 1.0
    color_aug_ssd: bool = True
    pad_to_crop: bool = True  # pad image (128) and labels (ignore) to exactly crop_size
    num_workers: int = 2
    skip_bad_samples: bool = False
    # coco_panoptic on data in another layout: paths under data.root, "{split}" = the split; "" = COCO's own layout
    panoptic_json: str = ""  # e.g. "annotations/{split}.json"
    panoptic_images: str = ""
    panoptic_masks: str = ""  # the folder of panoptic PNGs (id = R + 256 G + 256^2 B)
    # synthetic dataset (maskformer.data.synthetic)
    synthetic_num_classes: int = 8
    synthetic_image_size: int = 128
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 100
    synthetic_seed: int = 0


@dataclass
class SolverConfig:
    """Optimizer and schedule (OFFICIAL_SPEC §2.7, §10 items 11-12)."""

    optimizer: str = "adamw"
    base_lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    lr_scheduler: str = "poly"  # poly | multistep
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    clip_grad_norm: float = 0.01  # full-model L2 clipping; 0 disables


@dataclass
class TrainConfig:
    """The training loop."""

    max_iters: int = 160000
    batch_size: int = 16  # total over all processes
    grad_accum: int = 1
    checkpoint_period: int = 5000
    eval_period: int = 0  # evaluate every N iterations; 0 = only at the end; < 0 = never
    log_period: int = 20
    seed: int = 0
    amp: str = "none"  # none | bf16 | fp16
    max_minutes: float = 0.0  # stop early after this wall time (0 = no limit); used by the demo
    tf32: bool = False  # TF32 matmuls/convolutions on Ampere+ GPUs; false = exact fp32, as the original trained
    channels_last: bool = True  # NHWC weights and batches: oneDNN's faster convolution kernels (same arithmetic)


@dataclass
class TestConfig:
    """Test-time resize and TTA."""

    min_size: int = 512
    max_size: int = 2048
    tta: bool = False
    tta_min_sizes: list[int] = field(default_factory=lambda: [256, 384, 512, 640, 768, 896])
    tta_max_size: int = 3584
    tta_flip: bool = True
    fast: bool = False  # combine masks at 1/4 resolution (documented tolerance)


@dataclass
class InferenceConfig:
    """Post-processing switches and thresholds (OFFICIAL_SPEC §4)."""

    semantic_on: bool = True
    panoptic_on: bool = False
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    sem_seg_postprocess_before_inference: bool = False


@dataclass
class Config:
    """The whole configuration; one YAML file per paper setting in ``configs/``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


# ----------------------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has a value of the wrong type: {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown config key '{key}'")
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build a Config from a nested dict; unknown keys, wrong types and values out of range raise ConfigError."""
    cfg = _from_dict(Config, data or {})
    _check_ranges(cfg)
    return cfg


# The smallest value each number may take (counts and sizes >= 1; rates, weights and periods that may be 0 >= 0);
# for lists, every item. Probabilities (thresholds) are checked to lie in [0, 1].
_AT_LEAST = {
    1: (
        "model.num_classes model.num_queries model.hidden_dim model.nheads model.dim_feedforward model.dec_layers "
        "model.convs_dim model.mask_dim model.backbone.embed_dim model.backbone.window_size model.backbone.patch_size "
        "model.backbone.depths model.backbone.num_heads data.crop_size data.min_size_train data.max_size_train "
        "train.max_iters train.batch_size train.grad_accum train.log_period test.min_size test.max_size "
        "test.tta_min_sizes test.tta_max_size loss.num_points"
    ),
    0: (
        "model.size_divisibility model.enc_layers model.dropout model.backbone.drop_path_rate data.num_workers "
        "solver.base_lr solver.weight_decay solver.warmup_iters solver.clip_grad_norm train.checkpoint_period "
        "train.max_minutes loss.class_weight loss.mask_weight loss.dice_weight loss.no_object_weight"
    ),
}
_NOT_EMPTY = "data.min_size_train test.tta_min_sizes model.pixel_mean model.pixel_std"
_POSITIVE = "model.pixel_std"
_FRACTIONS = "inference.object_mask_threshold inference.overlap_threshold loss.importance_sample_ratio"


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_ranges(cfg: Config) -> None:
    for key in _NOT_EMPTY.split():
        if not _value(cfg, key):
            raise ConfigError(f"{key}: must not be empty")
    for minimum, keys in _AT_LEAST.items():
        for key in keys.split():
            value = _value(cfg, key)
            if any(v < minimum for v in (value if isinstance(value, list) else [value])):
                raise ConfigError(f"{key}={value}: must be at least {minimum}")
    for key in _POSITIVE.split():
        if any(v <= 0 for v in _value(cfg, key)):
            raise ConfigError(f"{key}={_value(cfg, key)}: must be above 0")
    for key in _FRACTIONS.split():
        if not 0.0 <= _value(cfg, key) <= 1.0:
            raise ConfigError(f"{key}={_value(cfg, key)}: must be between 0 and 1")


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:  # e.g. `maskformer info run/model_final.pt`
        raise ConfigError(f"{path}: not a YAML config (binary content; a checkpoint?)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping")
    base = data.pop("_base_", None)
    if base:
        parent = _read_yaml(path.parent / base, (*seen, path))
        data = _deep_merge(parent, data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], parsed c); the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. model.num_queries=50")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = _deep_merge({}, data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):  # a section: merged, not replaced
            value = _deep_merge(node[path[-1]], value)
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with ``_base_`` inheritance) and apply ``a.b=c`` overrides, checking every key."""
    data = _read_yaml(Path(path)) if path else {}
    return config_from_dict(apply_overrides(data, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
