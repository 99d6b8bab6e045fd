"""Backbones with one feature contract: ``forward(x) -> {"res2".."res5": [B, C, H/s, W/s]}`` (``base``): ResNet in
detectron2's layout with FrozenBN (``resnet``, ``norm``), Swin (``swin``) and any timm model (``timm``).

May import: ``maskformer.modeling.layers`` and ``maskformer.errors``; nothing else of the package (not the heads or
the pixel decoders, which build on top of it).
"""

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
