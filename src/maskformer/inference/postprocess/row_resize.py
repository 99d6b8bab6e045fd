"""Rows of a bilinear resize without the whole output (label maps of large images in strips).

``resize_rows(x, weights, width, y0, y1)`` gives rows y0..y1 of
``F.interpolate(x[None], size=(H, width), mode="bilinear", align_corners=False)[0]`` for ``weights =
row_weights(h, H)``, holding only the source rows they read.

How PyTorch's CPU kernel (torch 2.14, float32, NCHW) computes an output pixel, and so how this does: the source row
coordinate is ``(y + 0.5) * s - 0.5`` with the float32 scale ``s = h / H``, rounded once (a fused multiply-add), and
clamped at 0; its floor (at most h - 1) and the next row (the same row at the bottom edge) are read with weights
``1 - lambda`` and ``lambda``. Each of the two rows is first interpolated along the width (this runs the kernel
itself on the rows, with the height unchanged, which returns them unchanged), then the pixel is
``fma(t0, w0, t1 * w1)``, which ``torch.addcmul`` computes on x86-64 CPUs with FMA. tests/test_row_resize.py checks
the rows against the full resize: bit-identical for upscales on the project's CPUs; where an instruction set rounds
otherwise they differ by an ulp, so label maps built from them can differ only at exact ties.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RowWeights", "resize_rows", "row_weights"]


class RowWeights(NamedTuple):
    """Per output row of a resize of h rows to H: the two source rows read ([H] int64) and their weights ([H] fp32)."""

    first: Tensor
    second: Tensor
    first_weight: Tensor
    second_weight: Tensor


def row_weights(in_rows: int, out_rows: int, device: torch.device | str = "cpu") -> RowWeights:
    """The height weights of a bilinear resize (align_corners=False) of ``in_rows`` rows to ``out_rows``."""
    scale = torch.tensor(in_rows, dtype=torch.float32) / torch.tensor(out_rows, dtype=torch.float32)
    y = torch.arange(out_rows, dtype=torch.float64)
    # In float64 the product of the float32 scale and y + 0.5 is exact, so one rounding to float32 = the kernel's FMA.
    source = (scale.double() * (y + 0.5) - 0.5).float().clamp(min=0.0)
    first = source.floor().long().clamp(max=in_rows - 1)
    lam = (source - first.float()).clamp(0.0, 1.0)
    second = first + (first < in_rows - 1).long()
    return RowWeights(first.to(device), second.to(device), (1.0 - lam).to(device), lam.to(device))


def resize_rows(x: Tensor, weights: RowWeights, width: int, y0: int, y1: int) -> Tensor:
    """Rows y0..y1 of the bilinear resize of x [C, h, w] to [C, H, width] (``weights = row_weights(h, H)``).

    Returns [C, y1 - y0, width] (float32).
    """
    first, second = weights.first[y0:y1], weights.second[y0:y1]
    lo, hi = int(first[0]), int(second[-1]) + 1  # rows are monotonic in y
    rows = F.interpolate(x[None, :, lo:hi], size=(hi - lo, width), mode="bilinear", align_corners=False)[0]
    w0 = weights.first_weight[y0:y1, None]
    w1 = weights.second_weight[y0:y1, None]
    return torch.addcmul(rows[:, second - lo] * w1, rows[:, first - lo], w0)
