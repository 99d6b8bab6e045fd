"""Value ranges of the configuration: counts and sizes at least 1, rates and periods at least 0, thresholds in
[0, 1]. Checked once, when a Config is built from a dict."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .sections import Config

__all__ = ["check_ranges"]

# The smallest value each number may take (counts and sizes >= 1; rates, weights and periods that may be 0 >= 0);
# for lists, every item. Probabilities (thresholds) are checked to lie in [0, 1].
_AT_LEAST = {
    1: (
        "model.num_classes model.num_queries model.hidden_dim model.nheads model.dim_feedforward model.dec_layers "
        "model.convs_dim model.mask_dim model.backbone.embed_dim model.backbone.window_size model.backbone.patch_size "
        "model.backbone.depths model.backbone.num_heads data.crop_size data.min_size_train data.max_size_train "
        "train.max_iters train.batch_size train.grad_accum train.log_period test.min_size test.max_size "
        "test.tta_min_sizes test.tta_max_size loss.num_points loss.oversample_ratio"
    ),
    0: (
        "model.size_divisibility model.enc_layers model.dropout model.backbone.drop_path_rate data.num_workers "
        "solver.base_lr solver.weight_decay solver.warmup_iters solver.clip_grad_norm train.checkpoint_period "
        "train.max_minutes loss.class_weight loss.mask_weight loss.dice_weight loss.no_object_weight "
        "solver.weight_decay_norm solver.weight_decay_embed solver.backbone_multiplier solver.poly_power "
        "solver.warmup_factor solver.gamma solver.steps train.seed"
    ),
}
_AT_MOST = {"train.seed": 2**31 - 1}  # (the seed + rank, data workers add theirs: kept well inside every RNG's range)
_NOT_EMPTY = "data.min_size_train test.tta_min_sizes model.pixel_mean model.pixel_std"
_POSITIVE = "model.pixel_std"
_LENGTHS = {"data.crop_size": 2, "model.pixel_mean": 3, "model.pixel_std": 3}  # [H, W]; one value per RGB channel
# the values a word-valued key takes (as the builders read them; the model's own choices, e.g. model.backbone.type,
# are checked where the model is built, next to the lists they come from)
_CHOICES = {
    "model.backbone.stem": ("basic", "deeplab"),
    "model.backbone.norm": ("FrozenBN", "BN", "SyncBN", "GN", ""),
    "model.norm": ("GN", ""),
    "loss.matching": ("hungarian", "fixed"),
    "solver.optimizer": ("adamw", "sgd"),
    "solver.lr_scheduler": ("poly", "multistep"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.channels_last": (True, False, "auto"),
}
_FRACTIONS = "inference.object_mask_threshold inference.overlap_threshold loss.importance_sample_ratio"


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_ranges(cfg: Config) -> None:
    """A ``ConfigError`` naming the first value out of its range (``_AT_LEAST``, ``_NOT_EMPTY``, ``_LENGTHS``,
    ``_POSITIVE``, ``_FRACTIONS``) or not among its ``_CHOICES``."""
    for key, choices in _CHOICES.items():
        if _value(cfg, key) not in choices:
            named = [str(c).lower() if isinstance(c, bool) else repr(c) if c == "" else c for c in choices]
            raise ConfigError(f"{key}: unknown '{_value(cfg, key)}' (expected {', '.join(named[:-1])} or {named[-1]})")
    for key in _NOT_EMPTY.split():
        if not _value(cfg, key):
            raise ConfigError(f"{key}: must not be empty")
    for key, length in _LENGTHS.items():
        if len(_value(cfg, key)) != length:
            raise ConfigError(
                f"{key}={_value(cfg, key)}: must be {length} numbers" + (" [H, W]" if length == 2 else "")
            )
    for minimum, keys in _AT_LEAST.items():
        for key in keys.split():
            value = _value(cfg, key)
            if any(v < minimum for v in (value if isinstance(value, list) else [value])):
                raise ConfigError(f"{key}={value}: must be at least {minimum}")
    for key, maximum in _AT_MOST.items():
        if _value(cfg, key) > maximum:
            raise ConfigError(f"{key}={_value(cfg, key)}: must be at most {maximum}")
    for key in _POSITIVE.split():
        if any(v <= 0 for v in _value(cfg, key)):
            raise ConfigError(f"{key}={_value(cfg, key)}: must be above 0")
    for key in _FRACTIONS.split():
        if not 0.0 <= _value(cfg, key) <= 1.0:
            raise ConfigError(f"{key}={_value(cfg, key)}: must be between 0 and 1")
