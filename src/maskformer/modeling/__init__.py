"""Model code: backbones, pixel decoders, the transformer predictor, MaskFormer and the per-pixel baselines."""

from .baselines import PerPixelBaseline, PerPixelBaselinePlus
from .heads import TransformerPredictor
from .maskformer import MaskFormer
from .pixel_decoder import FPNPixelDecoder, TransformerEncoderPixelDecoder

__all__ = [
    "MaskFormer",
    "PerPixelBaseline",
    "PerPixelBaselinePlus",
    "TransformerPredictor",
    "FPNPixelDecoder",
    "TransformerEncoderPixelDecoder",
]
