"""Bilinear upsampling (align_corners=False) of mask logits to the targets' size, and its adjoint, for the fused loss.

Bilinear upsampling is separable: up = A_h x A_w^T, with A the [out, in] 1-D interpolation matrices (taken from
F.interpolate itself, so weights and border clamping are its own), and its adjoint is A_h^T g A_w. Each row of A has
at most two non-zero weights. When an axis grows by a power of two (the training crop: logits at 1/4 of the padded
input), its rows repeat one pattern every `scale` rows (`_band`, checked against A entry by entry), and that axis is
done by a few weighted sums of whole rows or columns (`_up`, `_adjoint`). F.interpolate's kernel walks the
[k, 1, H, W] output pixel by pixel, and a dense product with A spends most of its multiplications on zeros; the sums are
faster than both (``benchmarks/bench_upsample.py``). Any other size takes F.interpolate forward and the dense
products backward. Same results up to float rounding (tests/test_fused_loss.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["interpolation_matrix", "upsample", "upsample_adjoint"]

Band = tuple[list[float], list[float], list[float]]


def upsample(src: Tensor, size: tuple[int, int]) -> Tensor:
    """[k, h, w] logits -> [k, H*W], bilinear (align_corners=False) as the original; a no-op when sizes agree."""
    k, h, w = src.shape
    if (h, w) == size:
        return src.flatten(1)
    band_h, band_w = _band(size[0], h, src.dtype, src.device), _band(size[1], w, src.dtype, src.device)
    if band_h is None or band_w is None:
        return F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False).flatten(1)
    return _up(_up(src, band_w, 2), band_h, 1).view(k, -1)  # the W axis first, as F.interpolate


def upsample_adjoint(grad: Tensor, src_shape: torch.Size, size: tuple[int, int]) -> Tensor:
    """Gradient w.r.t. the [k, h, w] input of `upsample` given the gradient [k, H*W] of its output."""
    if tuple(src_shape[-2:]) == size:
        return grad.view(src_shape)
    k, h, w = src_shape
    band_h, band_w = _band(size[0], h, grad.dtype, grad.device), _band(size[1], w, grad.dtype, grad.device)
    full = grad.view(k, size[0], size[1])
    if band_h is None:
        rows = torch.matmul(interpolation_matrix(size[0], h, grad).T, full)
    else:
        rows = _adjoint(full, band_h, 1)  # [k, h, W]
    if band_w is None:
        return (rows.reshape(k * h, size[1]) @ interpolation_matrix(size[1], w, grad)).view(k, h, w)
    return _adjoint(rows, band_w, 2)


def interpolation_matrix(size_out: int, size_in: int, like: Tensor) -> Tensor:
    """[size_out, size_in] weights of 1-D linear interpolation (align_corners=False), i.e. one axis of `upsample`: the
    identity upsampled, so the weights and border clamping are F.interpolate's own."""
    return _matrix(size_out, size_in, like.dtype, like.device)


@functools.lru_cache(maxsize=16)  # a few sizes recur in training; bounded, as padded batch sizes may vary
def _matrix(size_out: int, size_in: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    eye = torch.eye(size_in, dtype=dtype, device=device)[None]
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.contiguous()


@functools.lru_cache(maxsize=16)
def _band(size_out: int, size_in: int, dtype: torch.dtype, device: torch.device) -> Band | None:
    """Per row offset r in a block of `scale` rows: (own, prev, next) weights with which output row scale*j + r takes
    input rows j, j - 1 and j + 1, a weight past the first or last row staying on it (clamping); None unless the
    scale is a power of two >= 2, there are at least 3 input rows and the pattern reproduces A exactly."""
    scale = size_out // size_in
    if size_in < 3 or scale < 2 or scale & (scale - 1) or scale * size_in != size_out:
        return None
    a = _matrix(size_out, size_in, dtype, device)
    weights = a[scale : 2 * scale, :3].T  # the rows of block j = 1 in columns j - 1, j, j + 1
    row = torch.arange(size_out, device=device)
    j, r = row // scale, row % scale
    rebuilt = torch.zeros_like(a)
    for column, weight in ((j - 1, weights[0]), (j, weights[1]), (j + 1, weights[2])):
        rebuilt.index_put_((row, column.clamp(0, size_in - 1)), weight[r], accumulate=True)
    if not torch.equal(rebuilt, a):
        return None
    prev, own, nxt = (w.tolist() for w in weights)
    return own, prev, nxt


def _up(x: Tensor, band: Band, dim: int) -> Tensor:
    """A x along `dim` (1 or 2) of x [k, a, b]: that axis grows by `scale`, each output row (or column) a weighted
    sum of at most two input ones, written block-wise into a [.., n, scale, ..] view."""
    own, prev, nxt = band
    n, scale = x.shape[dim], len(own)
    padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)  # clamped weights land on these
    shape = list(x.shape)
    shape[dim : dim + 1] = [n, scale]
    out = x.new_empty(shape)
    for r, weight in enumerate(own):
        dst = out.select(dim + 1, r)
        torch.mul(padded.narrow(dim, 1, n), weight, out=dst)
        if prev[r] != 0.0:
            dst.add_(padded.narrow(dim, 0, n), alpha=prev[r])
        if nxt[r] != 0.0:
            dst.add_(padded.narrow(dim, 2, n), alpha=nxt[r])
    return out.flatten(dim, dim + 1)


def _adjoint(g: Tensor, band: Band, dim: int) -> Tensor:
    """A^T g along `dim` (1 or 2) of g [k, a, b]: that axis shrinks by `scale`, by weighted sums of its blocks."""
    own, prev, nxt = band
    scale = len(own)
    n = g.shape[dim] // scale
    blocks = g.unflatten(dim, (n, scale))  # output row scale*j + r is blocks.select(dim + 1, r)[j]

    def weighted(weights: list[float]) -> Tensor | None:
        out = None
        for r, weight in enumerate(weights):
            if weight != 0.0:
                if out is None:
                    out = blocks.select(dim + 1, r) * weight
                else:
                    out.add_(blocks.select(dim + 1, r), alpha=weight)
        return out

    acc = weighted(own)
    assert acc is not None  # every output row of a block takes its own input row
    to_prev, to_next = weighted(prev), weighted(nxt)
    if to_prev is not None:  # block j feeds row j - 1; block 0's share stays on row 0 (clamped)
        acc.narrow(dim, 0, n - 1).add_(to_prev.narrow(dim, 1, n - 1))
        acc.narrow(dim, 0, 1).add_(to_prev.narrow(dim, 0, 1))
    if to_next is not None:
        acc.narrow(dim, 1, n - 1).add_(to_next.narrow(dim, 0, n - 1))
        acc.narrow(dim, n - 1, 1).add_(to_next.narrow(dim, n - 1, 1))
    return acc
