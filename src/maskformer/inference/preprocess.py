"""Test-time preprocessing of the original (OFFICIAL_SPEC §4.7): read an image, shortest-edge resize with PIL
bilinear (antialiased), normalise with the model's pixel mean/std, zero-pad after normalisation to the size
divisibility. The training augmentations (``maskformer.data.transforms``) reuse the two resize functions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_shortest_edge_size", "resize_image"]


def resize_shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output ``(newh, neww)`` of detectron2's ResizeShortestEdge: short side -> ``short``, long side capped at
    ``max_size`` (0 or negative = no cap), each rounded with ``int(x + 0.5)``."""
    scale = short / min(h, w)
    if h < w:
        newh, neww = float(short), scale * w
    else:
        newh, neww = scale * h, float(short)
    if max_size > 0 and max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 image ``[H, W, 3]`` or ``[H, W]`` to ``size = (h, w)``."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
