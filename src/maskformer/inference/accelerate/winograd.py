"""Inference's 3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3): 2.25x fewer multiplications than the
direct convolution, in fp32. The algorithm and its transforms are in ``maskformer.modeling.winograd`` (shared with
training); here the filters are transformed once in float64 and packed into oneDNN's layout, and the forward runs
without autograd.

Its results are closer to the exact convolution than oneDNN's direct channels-last kernel it replaces (float64 as
the reference: ~6e-7 of the output range against ~2e-6, from 1x3 to 128x128 pictures; ``tests/test_winograd.py``).
Larger tiles multiply less still but round worse: F(4x4, 3x3), whose transforms hold 4, 5 and 8, was 7x less
accurate than the direct kernel, and NNPACK's F(6x6, 3x3) 10x (``benchmarks/bench_winograd_tiles.py``), enough to
move labels at near-ties; they are not used.

It pays where the channel counts are large (``suits``): ``benchmarks/bench_winograd.py`` times both on this
project's shapes. fp32 only (bfloat16 keeps oneDNN's bf16 kernels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from maskformer.modeling.winograd import apply_filters, plain_3x3, transform_filters

__all__ = ["MIN_CHANNELS", "MIN_FOLDED_OUT", "filters", "suits", "winograd_conv3x3"]

MIN_CHANNELS = 256  # both Cin and Cout; below it the transforms cost more than the products save (bench_winograd.py)
MIN_FOLDED_OUT = 64  # Cout of the folded mask convolution (256 -> Q queries at 1/4 size: 0.82x at Q = 100)


def suits(
    weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int, *, min_out: int = MIN_CHANNELS
) -> bool:
    """True for a 3x3, stride 1, padding 1, ungrouped fp32 convolution with at least MIN_CHANNELS in and ``min_out``
    out (the pixel decoder's mask convolution folded into 100 mask embeddings pays from ``MIN_FOLDED_OUT``)."""
    cout, cin = weight.shape[:2]
    return plain_3x3(weight, stride, padding, dilation, groups) and cin >= MIN_CHANNELS and cout >= min_out


def filters(weight: Tensor, rows: int = 0) -> tuple[Tensor, ...]:
    """The 16 transformed filters U[k] = (G g G^T)[k] of every (Cout, Cin) pair, computed in float64, each laid out
    as a linear layer's weight: weight [Cout, Cin, 3, 3] -> 16 x [Cout, Cin] fp32. With ``rows`` (the tile count of
    the calls to come) and oneDNN built in, each is reordered once into oneDNN's blocked layout for that many rows."""
    u = transform_filters(weight.detach().double()).to(weight.dtype).unbind(0)
    if rows and weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return tuple(torch.ops.mkldnn._reorder_linear_weight(m, rows) for m in u)
    return tuple(m.contiguous() for m in u)


def winograd_conv3x3(x: Tensor, u: tuple[Tensor, ...], bias: Tensor | None = None, *, relu: bool = False) -> Tensor:
    """conv2d(x, weight, bias, padding=1) (then ReLU) with u = filters(weight), without autograd. x [N, Cin, H, W]
    (any memory format) -> [N, Cout, H, W] in channels-last memory format."""
    out = apply_filters(x, u, bias)
    return out.relu_() if relu else out
