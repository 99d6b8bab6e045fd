"""The Predictor's settings: each an explicit argument, else the model config's value, else a default.

One place decides what a ``Predictor`` does with a model (test resize, task, panoptic thresholds, post-processing
order, test-time augmentation), so ``predict``, ``eval``, ``serve`` and Python agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from maskformer.config import Config
from maskformer.errors import ConfigError

__all__ = ["PANOPTIC_TTA", "TASKS", "PredictorSettings", "predictor_settings"]

TASKS = ("semantic", "panoptic")
PANOPTIC_TTA = (
    "tta: test-time augmentation is for semantic labels only, as in the original (panoptic predictions have none): "
    "drop --tta (Python: tta=False) or ask for the semantic task (--task semantic)"
)


@dataclass(frozen=True)
class PredictorSettings:
    """What a Predictor does with a model.

    ``postprocess_before_inference``: combine resized mask logits instead of resizing the combined scores (the
    original does so when its flag is set or panoptic inference is on, OFFICIAL_SPEC §4; ``fast`` keeps its own
    order). ``tta_*``: the min sizes, long-side cap and flip of multi-scale test-time augmentation.
    """

    task_default: str
    min_size: int
    max_size: int
    object_mask_threshold: float
    overlap_threshold: float
    fast: bool
    postprocess_before_inference: bool
    tta: bool
    tta_min_sizes: tuple[int, ...]
    tta_max_size: int
    tta_flip: bool


def _setting(value: Any, cfg: Config | None, section: str, key: str, fallback: Any) -> Any:
    """An explicit argument, else the model config's ``section.key``, else ``fallback``."""
    if value is not None:
        return value
    return getattr(getattr(cfg, section), key) if cfg is not None else fallback


def _check_arguments(**given: object) -> None:
    """A ``ConfigError`` naming a Predictor argument of the wrong kind: sizes are positive integers, thresholds
    numbers in [0, 1], switches True or False (a string "no" switched TTA on; NaN kept no segment)."""
    for name, value in given.items():
        if value is None:
            continue
        if name.endswith("_size"):
            ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0
            want = "a positive integer"
        elif name.endswith("_threshold"):
            ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) and 0 <= value <= 1
            want = "a number between 0 and 1"
        else:
            ok, want = isinstance(value, bool | np.bool_), "True or False"
        if not ok:
            raise ConfigError(f"Predictor {name}: {want} expected, got {value!r}")


def predictor_settings(
    cfg: Config | None,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    task_default: str | None = None,
    object_mask_threshold: float | None = None,
    overlap_threshold: float | None = None,
    fast: bool | None = None,
    tta: bool | None = None,
) -> PredictorSettings:
    """Settings from explicit arguments and the model config ``cfg`` (None: a model without one, which then needs
    ``min_size`` and ``max_size``). Raises ``ValueError``/``ConfigError`` naming the setting that is wrong."""
    if cfg is None and (min_size is None or max_size is None):
        raise ConfigError("Predictor: pass min_size and max_size (this model carries no config: model.cfg)")
    _check_arguments(min_size=min_size, max_size=max_size, object_mask_threshold=object_mask_threshold,
                     overlap_threshold=overlap_threshold, fast=fast, tta=tta)  # fmt: skip
    mask_model = cfg is not None and cfg.model.meta_arch == "maskformer"
    panoptic_on = mask_model and bool(cfg.inference.panoptic_on)
    task_default = task_default or ("panoptic" if panoptic_on else "semantic")
    if task_default not in TASKS:
        raise ConfigError(f"task_default must be one of {TASKS}, got {task_default!r}")
    resolved_min = int(_setting(min_size, cfg, "test", "min_size", 0))
    if resolved_min <= 0:
        raise ConfigError(f"test.min_size (Predictor min_size): the short side must be > 0, got {resolved_min}")
    resolved_max = int(_setting(max_size, cfg, "test", "max_size", 0))
    before = mask_model and bool(cfg.inference.sem_seg_postprocess_before_inference or panoptic_on)
    return PredictorSettings(
        task_default=task_default,
        min_size=resolved_min,
        max_size=resolved_max,
        object_mask_threshold=float(_setting(object_mask_threshold, cfg, "inference", "object_mask_threshold", 0.8)),
        overlap_threshold=float(_setting(overlap_threshold, cfg, "inference", "overlap_threshold", 0.8)),
        fast=bool(_setting(fast, cfg, "test", "fast", False)),
        postprocess_before_inference=before,
        tta=bool(_setting(tta, cfg, "test", "tta", False)),
        tta_min_sizes=tuple(int(s) for s in cfg.test.tta_min_sizes) if cfg is not None else (resolved_min,),
        tta_max_size=int(cfg.test.tta_max_size) if cfg is not None else resolved_max,
        tta_flip=bool(cfg.test.tta_flip) if cfg is not None else True,
    )
