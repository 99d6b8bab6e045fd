"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016): 2.25x fewer multiplications than the direct convolution, in fp32.

Each 4x4 input tile d (stride 2) becomes V = B^T d B, each 3x3 filter g becomes U = G g G^T (once, in float64),
the 16 positions of the tile are 16 independent matrix products M[k] = V[k] @ U[k] over (tiles x Cin) @ (Cin x Cout),
and each tile's 2x2 output is A^T M A. B^T and A^T hold only 0 and +-1, G only 0, +-1/2 and 1, so the transforms add
and subtract, and the values stay as close to the exact convolution as the direct kernel's (float64 as the reference:
max error ~6e-7 of the output range, against ~2e-6 for oneDNN's direct channels-last kernel it replaces, from 1x3 to
128x128 pictures; ``tests/test_winograd.py``). Larger tiles multiply less still but round worse: F(4x4, 3x3), whose
transforms hold 4, 5 and 8, was 7x less accurate than the direct kernel, and NNPACK's F(6x6, 3x3) 10x (git history
of ``benchmarks/bench_winograd.py``), enough to move labels at near-ties; they are not used.

It pays where the channel counts are large (``suits``): ``benchmarks/bench_winograd.py`` times both on this
project's shapes. Inference only (no autograd), fp32 only (bfloat16 keeps oneDNN's AMX kernels).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["MIN_CHANNELS", "filters", "suits", "winograd_conv3x3"]

MIN_CHANNELS = 256  # both Cin and Cout; below it the transforms cost more than the products save (bench_winograd.py)

_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # input transform, 4 x 4
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))  # filter transform, 4 x 3
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))  # output transform, 2 x 4


def suits(weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> bool:
    """True for a 3x3, stride 1, padding 1, ungrouped fp32 convolution with at least MIN_CHANNELS in and out."""
    cout, cin, kh, kw = weight.shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and weight.dtype == torch.float32
        and min(cin, cout) >= MIN_CHANNELS
    )


def filters(weight: Tensor) -> Tensor:
    """U = G g G^T for every filter, computed in float64: weight [Cout, Cin, 3, 3] -> [16, Cin, Cout] fp32."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.detach().double(), g)  # [4, 4, Cin, Cout]
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


@functools.cache
def _kron(rows: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    """kron(T, T) of a transform (the 2-D transform of a flattened tile), made once per dtype and device."""
    t = torch.tensor(rows, dtype=dtype, device=device)
    return torch.kron(t, t)


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None = None, *, relu: bool = False) -> Tensor:
    """conv2d(x, weight, bias, padding=1) (then ReLU) with u = filters(weight).

    x [N, Cin, H, W] (any memory format) -> [N, Cout, H, W] in channels-last memory format."""
    n, cin, h, w = x.shape
    cout = u.shape[2]
    th, tw = -(-h // 2), -(-w // 2)  # 2x2 output tiles
    nhwc = x.permute(0, 2, 3, 1)
    # zero border of 1 (the convolution's padding) and up to the next tile on the bottom/right: [N, 2th+2, 2tw+2, Cin]
    xp = torch.nn.functional.pad(nhwc, (0, 0, 1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    s = xp.stride()
    # the 16 elements of every 4x4 tile (stride 2), element-major: [16, N * th * tw * Cin]
    tiles = xp.as_strided((4, 4, n, th, tw, cin), (s[1], s[2], s[0], 2 * s[1], 2 * s[2], s[3])).reshape(16, -1)
    v = (_kron(_BT, x.dtype, x.device) @ tiles).view(16, n * th * tw, cin)  # B^T d B, flattened
    m = torch.bmm(v, u)  # [16, tiles, Cout]
    y = (_kron(_AT, x.dtype, x.device) @ m.view(16, -1)).view(2, 2, n, th, tw, cout)  # A^T M A
    out = torch.empty((n, 2 * th, 2 * tw, cout), dtype=x.dtype, device=x.device)
    grid = out.view(n, th, 2, tw, 2, cout)
    if bias is None:
        grid.copy_(y.permute(2, 3, 0, 4, 1, 5))
    else:
        torch.add(y.permute(2, 3, 0, 4, 1, 5), bias, out=grid)
    if relu:
        out.relu_()
    if (2 * th, 2 * tw) != (h, w):
        out = out[:, :h, :w].contiguous()
    return out.permute(0, 3, 1, 2)
