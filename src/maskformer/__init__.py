"""maskformer: a from-scratch, typed PyTorch implementation of MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021).

Public API::

    cfg = maskformer.load_config("configs/ade20k-150/maskformer_R50_bs16_160k.yaml", overrides=["model.num_queries=50"])
    model = maskformer.build_model(cfg)
    out = model(images)   # {"pred_logits": [B,Q,K+1], "pred_masks": [B,Q,H/4,W/4], "aux_outputs": [...]}

The names below are imported when first used (PEP 562): ``import maskformer`` does not import torch, so the
``maskformer`` command starts, answers ``--help`` and takes Ctrl-C as one line before torch is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (for type checkers and editors; at run time ``__getattr__`` imports them)
    from .build import build_criterion, build_model
    from .config import Config, load_config, save_config
    from .engine.checkpoint import load_model, save_checkpoint
    from .errors import CheckpointError, ConfigError, DataError, UserError
    from .inference.predictor import Predictor
    from .zoo import from_pretrained

# public name -> the module that defines it
_EXPORTS = {
    "Config": "config",
    "load_config": "config",
    "save_config": "config",
    "build_model": "build",
    "build_criterion": "build",
    "load_model": "engine.checkpoint",
    "save_checkpoint": "engine.checkpoint",
    "from_pretrained": "zoo",
    "Predictor": "inference.predictor",
    "UserError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "CheckpointError": "errors",
}
__all__ = [
    "Config",
    "load_config",
    "save_config",
    "build_model",
    "build_criterion",
    "load_model",
    "save_checkpoint",
    "from_pretrained",
    "Predictor",
    "UserError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a subpackage or module (``maskformer.zoo``, ``maskformer.inference.render``, ...)
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'maskformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # (looked up once)
    return value


def __dir__() -> list[str]:
    # the public names and the module's dunders, not the helpers this file imports (Any, importlib, ...)
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
