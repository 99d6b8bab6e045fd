"""Geometric transforms shared by the mappers and the Predictor (OFFICIAL_SPEC §4.7, §5).

Arrays are numpy, images uint8 ``[H, W, 3]`` RGB, label maps ``[H, W]`` integers. Interpolation follows the
original exactly, because it changes pixels and therefore numbers:
- images: PIL bilinear on uint8 (antialiased when downscaling);
- semantic labels: ``torch.nn.functional.interpolate(mode="nearest")`` on float64 (legacy nearest,
  ``src = floor(dst * in / out)``), as detectron2 does for non-uint8 arrays;
- panoptic id maps: PIL NEAREST (pixel-centre sampling), as detectron2 does for the uint8 RGB panoptic PNG.
Random choices take a ``numpy.random.Generator`` so a sample's augmentation depends only on its seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..inference.preprocess import resize_image, resize_shortest_edge_size

__all__ = [
    "resize_shortest_edge_size",
    "choose_short_side",
    "resize_image",
    "resize_label",
    "resize_ids",
    "category_area_crop",
    "absolute_range_crop",
    "pad_to",
]


def choose_short_side(min_sizes: list[int] | tuple[int, ...], rng: np.random.Generator) -> int:
    """ResizeShortestEdge "choice" sampling: one of ``min_sizes`` uniformly."""
    return int(min_sizes[int(rng.integers(len(min_sizes)))])


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a semantic label map as the original: torch legacy nearest on float64.

    ``label``: ``[H, W]`` integer array -> ``[h, w]`` of the same dtype.
    """
    h, w = size
    if label.shape == (h, w):
        return label.copy()
    t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float64))[None, None]
    out = F.interpolate(t, size=(h, w), mode="nearest")[0, 0].numpy()
    return out.astype(label.dtype)


def resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL NEAREST resize of a panoptic id map (ids < 2^31), same sampling as resizing the RGB PNG.

    ``ids``: ``[H, W]`` integers -> ``[h, w]`` int64.
    """
    h, w = size
    if ids.shape == (h, w):
        return ids.astype(np.int64)
    img = Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32), mode="I")
    return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)).astype(np.int64)


def category_area_crop(
    sem_seg: np.ndarray | None,
    image_hw: tuple[int, int],
    crop_size: tuple[int, int],
    single_category_max_area: float,
    ignore_label: int,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """RandomCrop_CategoryAreaConstraint (absolute crop). Returns ``(y0, x0, ch, cw)``.

    The crop is ``(min(crop_h, h), min(crop_w, w))``. With ``single_category_max_area >= 1`` it is a plain random
    crop; otherwise up to 10 crops are drawn until one has more than one class and no class covering
    ``>= max_area`` of the labelled pixels (ignore excluded); the last draw is kept if none qualifies.
    """
    h, w = image_hw
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    if single_category_max_area >= 1.0 or sem_seg is None:
        return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1)), ch, cw
    y0 = x0 = 0
    for _ in range(10):
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        labels, cnt = np.unique(sem_seg[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
        cnt = cnt[labels != ignore_label]
        if len(cnt) > 1 and np.max(cnt) < np.sum(cnt) * single_category_max_area:
            break
    return y0, x0, ch, cw


def absolute_range_crop(
    image_hw: tuple[int, int], crop_range: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """detectron2 RandomCrop("absolute_range", (lo, hi)): crop h in [min(h, lo), min(h, hi)], w likewise.

    Returns ``(y0, x0, ch, cw)``.
    """
    h, w = image_hw
    lo, hi = crop_range
    ch = int(rng.integers(min(h, lo), min(h, hi) + 1))
    cw = int(rng.integers(min(w, lo), min(w, hi) + 1))
    return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1)), ch, cw


def pad_to(array: np.ndarray, size: tuple[int, int], value: int) -> np.ndarray:
    """Pad bottom/right with ``value`` up to ``size = (H, W)`` (no-op where already as large).

    ``array``: ``[h, w]`` or ``[h, w, C]``.
    """
    ph, pw = max(size[0] - array.shape[0], 0), max(size[1] - array.shape[1], 0)
    if ph == 0 and pw == 0:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)
