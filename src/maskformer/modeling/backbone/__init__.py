"""Backbones with one feature contract: ``forward(x) -> {"res2".."res5": [B, C, H/s, W/s]}``."""

from .base import Backbone, FeatureSpec
from .norm import FrozenBatchNorm2d
from .resnet import DEPTH_BLOCKS, ResNet
from .swin import SWIN_SIZES, SwinTransformer
from .timm import TimmBackbone

__all__ = [
    "Backbone",
    "FeatureSpec",
    "FrozenBatchNorm2d",
    "ResNet",
    "DEPTH_BLOCKS",
    "SwinTransformer",
    "SWIN_SIZES",
    "TimmBackbone",
]
