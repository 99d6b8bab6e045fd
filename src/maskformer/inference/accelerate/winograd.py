"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016): 2.25x fewer multiplications than the direct convolution, in fp32.

Each 4x4 input tile d (stride 2) becomes V = B^T d B, each 3x3 filter g becomes U = G g G^T (once, in float64),
the 16 positions of the tile are 16 independent matrix products M[k] = V[k] @ U[k] over (tiles x Cin) @ (Cin x Cout),
and each tile's 2x2 output is A^T M A, with B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] and
A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. B^T and A^T hold only 0 and +-1, G only 0, +-1/2 and 1, so the transforms add
and subtract, and the values stay as close to the exact convolution as the direct kernel's (float64 as the reference:
max error ~6e-7 of the output range, against ~2e-6 for oneDNN's direct channels-last kernel it replaces, from 1x3 to
128x128 pictures; ``tests/test_winograd.py``). Larger tiles multiply less still but round worse: F(4x4, 3x3), whose
transforms hold 4, 5 and 8, was 7x less accurate than the direct kernel, and NNPACK's F(6x6, 3x3) 10x (git history
of ``benchmarks/bench_winograd.py``), enough to move labels at near-ties; they are not used.

It pays where the channel counts are large (``suits``): ``benchmarks/bench_winograd.py`` times both on this
project's shapes. Inference only (no autograd), fp32 only (bfloat16 keeps oneDNN's AMX kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MIN_CHANNELS", "MIN_FOLDED_OUT", "filters", "suits", "winograd_conv3x3"]

MIN_CHANNELS = 256  # both Cin and Cout; below it the transforms cost more than the products save (bench_winograd.py)
MIN_FOLDED_OUT = 64  # Cout of the folded mask convolution (256 -> Q queries at 1/4 size: 0.82x at Q = 100)

_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))  # filter transform, 4 x 3


def suits(
    weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int, *, min_out: int = MIN_CHANNELS
) -> bool:
    """True for a 3x3, stride 1, padding 1, ungrouped fp32 convolution with at least MIN_CHANNELS in and ``min_out``
    out (the pixel decoder's mask convolution folded into 100 mask embeddings pays from ``MIN_FOLDED_OUT``)."""
    cout, cin, kh, kw = weight.shape
    return (
        (kh, kw) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and weight.dtype == torch.float32
        and cin >= MIN_CHANNELS
        and cout >= min_out
    )


def filters(weight: Tensor, rows: int = 0) -> tuple[Tensor, ...]:
    """The 16 transformed filters U[k] = (G g G^T)[k] of every (Cout, Cin) pair, computed in float64, each laid out
    as a linear layer's weight: weight [Cout, Cin, 3, 3] -> 16 x [Cout, Cin] fp32. With ``rows`` (the tile count of
    the calls to come) and oneDNN built in, each is reordered once into oneDNN's blocked layout for that many rows."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ik,ockl,jl->ijoc", g, weight.detach().double(), g).to(weight.dtype)  # [4, 4, Cout, Cin]
    mats = tuple(m.contiguous() for m in u.reshape(16, *u.shape[2:]).unbind(0))
    if rows and _onednn(weight):
        mats = tuple(torch.ops.mkldnn._reorder_linear_weight(m, rows) for m in mats)
    return mats


def _onednn(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _bt(d: list[Tensor]) -> list[Tensor]:
    """B^T along one axis of the 4x4 tiles: d0 - d2, d1 + d2, d2 - d1, d1 - d3 (each a fresh contiguous tensor)."""
    return [torch.sub(d[0], d[2]), torch.add(d[1], d[2]), torch.sub(d[2], d[1]), torch.sub(d[1], d[3])]


def winograd_conv3x3(x: Tensor, u: tuple[Tensor, ...], bias: Tensor | None = None, *, relu: bool = False) -> Tensor:
    """conv2d(x, weight, bias, padding=1) (then ReLU) with u = filters(weight).

    The transforms are separable: B^T runs along the tile rows, then along the tile columns, over strided views of
    the padded input (no 4x4 tile copies); the 16 products run as separate linear layers (oneDNN where built in,
    whose packed kernels are faster than MKL's batched product on AMD CPUs); A^T runs on their outputs while they
    are still in cache and writes the 2x2 outputs into place. x [N, Cin, H, W] (any memory format) -> [N, Cout, H, W]
    in channels-last memory format."""
    n, cin, h, w = x.shape
    th, tw = -(-h // 2), -(-w // 2)  # 2x2 output tiles
    # zero border of 1 (the convolution's padding) and up to the next tile on the bottom/right: [N, 2th+2, 2tw+2, Cin]
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    by_rows = _bt([xp[:, i : i + 2 * th : 2] for i in range(4)])  # 4 x [N, th, 2tw+2, Cin]
    v = [t.view(-1, cin) for z in by_rows for t in _bt([z[:, :, j : j + 2 * tw : 2] for j in range(4)])]
    fast = _onednn(x)
    m = []
    for k in range(16):  # M[k] = V[k] @ U[k]; the bias rides on M[5], which A^T A adds to all four outputs
        b = bias if k == 5 else None
        if fast:
            m.append(torch.ops.mkldnn._linear_pointwise.default(v[k], u[k], b, "none", [], ""))
        else:
            m.append(F.linear(v[k], u[k], b))
    cout = m[0].shape[1]
    out = torch.empty((n, 2 * th, 2 * tw, cout), dtype=x.dtype, device=x.device)
    grid = out.view(n, th, 2, tw, 2, cout)
    # A^T along the tile rows (M[4a + b]): z[p][b]; then along the columns into the output pixels (2 ti + p, 2 tj + q)
    z = [
        [torch.add(m[b], m[4 + b]).add_(m[8 + b]) for b in range(4)],
        [torch.sub(m[4 + b], m[8 + b]).sub_(m[12 + b]) for b in range(4)],
    ]
    for p in range(2):
        zp = [t.view(n, th, tw, cout) for t in z[p]]
        torch.add(zp[0], zp[1], out=grid[:, :, p, :, 0]).add_(zp[2])
        torch.sub(zp[1], zp[2], out=grid[:, :, p, :, 1]).sub_(zp[3])
    if relu:
        out.relu_()
    if (2 * th, 2 * tw) != (h, w):
        out = out[:, :h, :w].contiguous()
    return out.permute(0, 3, 1, 2)
