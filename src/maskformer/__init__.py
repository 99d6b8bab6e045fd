"""maskformer: a from-scratch, typed PyTorch implementation of MaskFormer (Cheng, Schwing, Kirillov, NeurIPS 2021).

Public API::

    cfg = maskformer.load_config("configs/ade20k-150/maskformer_R50_bs16_160k.yaml", overrides=["model.num_queries=50"])
    model = maskformer.build_model(cfg)
    out = model(images)   # {"pred_logits": [B,Q,K+1], "pred_masks": [B,Q,H/4,W/4], "aux_outputs": [...]}
"""

from .build import build_criterion, build_model
from .config import Config, load_config, save_config
from .engine.checkpoint import load_model
from .errors import CheckpointError, ConfigError, DataError, UserError
from .inference.predictor import Predictor
from .zoo import from_pretrained

__all__ = [
    "Config",
    "load_config",
    "save_config",
    "build_model",
    "build_criterion",
    "load_model",
    "from_pretrained",
    "Predictor",
    "UserError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]
__version__ = "0.1.0"
