"""The network: backbones (``backbone/``), pixel decoders, the DETR transformer decoder and heads, ``MaskFormer`` and
the paper's per-pixel baselines. ``forward`` maps normalised, padded images to the outputs dict; it never computes
losses and never post-processes.

May import: torch (and timm for the adapter), ``maskformer.errors``. Never imports ``config`` (``maskformer.build``
turns a config into these constructors' keyword arguments), ``data``, ``criterion``, ``inference``, ``evaluation``,
``engine`` or ``cli``.
"""

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
