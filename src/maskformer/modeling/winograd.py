"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016), with autograd: 2.25x fewer multiplications than the direct convolution, in fp32.

Each 4x4 input tile d (stride 2) becomes V = B^T d B, each 3x3 filter g becomes U = G g G^T, the 16 positions of the
tile are 16 independent matrix products M[k] = V[k] @ U[k]^T over (tiles x Cin) @ (Cin x Cout), and each tile's 2x2
output is A^T M A, with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]],
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].

B^T and A^T hold only 0 and +-1, G only 0, +-1/2 and 1, so the transforms add and subtract and the results are
closer to the exact convolution than the direct kernel's (~6e-7 of the output range against ~2e-6, float64 as the
reference; tests/test_winograd.py). The transforms are separable: each runs along the tile rows, then the columns,
over strided views (no 4x4 tile copies). The backward is the same algorithm transposed: dM = A dY A^T, then
dU[k] = dM[k]^T V[k] (the weight gradient G^T dU G) and dV[k] = dM[k] U[k] (the input gradient B dV B^T, tiles
overlapping by two pixels added up).

``conv3x3`` is what training runs (``ConvNorm.winograd``, set by ``train.winograd``); ``inference.accelerate`` runs
the forward alone with filters packed once. It pays where the channel counts and pictures are large (``pays``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "G",
    "apply_filters",
    "conv3x3",
    "input_transform",
    "output_transform",
    "pays",
    "plain_3x3",
    "products",
    "transform_filters",
]

G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))  # filter transform, 4 x 3

# training: both channel counts and the tile count (batch x H/2 x W/2) from which forward + backward pay
# (benchmarks/bench_winograd.py --train: 0.66x at 2 x 256 x 128^2, 0.73x at 2 x 256 x 64^2, 1.04x at 32^2)
MIN_TRAIN_CHANNELS = 256
MIN_TRAIN_TILES = 2048


def plain_3x3(weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> bool:
    """A 3x3, stride 1, padding 1, undilated, ungrouped fp32 convolution: the one F(2x2, 3x3) computes."""
    return (
        tuple(weight.shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(padding) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
        and weight.dtype == torch.float32
    )


def pays(x: Tensor, weight: Tensor, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> bool:
    """Whether a training convolution takes ``conv3x3``: a ``plain_3x3`` CPU convolution of an fp32 input outside
    autocast, with at least 256 channels in and out and 2048 output tiles, and oneDNN built in."""
    cout, cin = weight.shape[:2]
    n, _, h, w = x.shape
    return (
        plain_3x3(weight, stride, padding, dilation, groups)
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and min(cin, cout) >= MIN_TRAIN_CHANNELS
        and n * -(-h // 2) * -(-w // 2) >= MIN_TRAIN_TILES
        and torch.backends.mkldnn.is_available()
    )


def _g(t: Tensor) -> Tensor:
    return torch.tensor(G, dtype=t.dtype, device=t.device)


def transform_filters(weight: Tensor) -> Tensor:
    """U = G g G^T of every filter: weight [Cout, Cin, 3, 3] -> [16, Cout, Cin] (contiguous, the weight's dtype)."""
    cout, cin = weight.shape[:2]
    g = _g(weight)
    u = g @ weight.reshape(cout * cin, 3, 3) @ g.T  # [Cout * Cin, 4, 4]
    return u.view(cout, cin, 16).permute(2, 0, 1).contiguous()


def _bt(d: list[Tensor]) -> list[Tensor]:
    """B^T along one axis of the 4x4 tiles: d0 - d2, d1 + d2, d2 - d1, d1 - d3 (each a fresh contiguous tensor)."""
    return [torch.sub(d[0], d[2]), torch.add(d[1], d[2]), torch.sub(d[2], d[1]), torch.sub(d[1], d[3])]


def _b(d: list[Tensor]) -> list[Tensor]:
    """The transpose of ``_bt``: the gradients of the four tile positions from those of the four transformed ones,
    except that the last is returned as d3, not -d3 (``_overlap_add`` subtracts it: one full-size pass less)."""
    return [d[0], torch.sub(d[1], d[2]).add_(d[3]), torch.add(d[1], d[2]).sub_(d[0]), d[3]]


def input_transform(x: Tensor) -> tuple[list[Tensor], int, int]:
    """V = B^T d B of every 4x4 tile (stride 2) of x [N, Cin, H, W] padded by 1: (16 x [N * th * tw, Cin], th, tw)
    with th, tw = ceil(H / 2), ceil(W / 2); V[4a + b] is row transform a, column transform b."""
    n, cin, h, w = x.shape
    th, tw = -(-h // 2), -(-w // 2)
    # zero border of 1 (the convolution's padding) and up to the next tile on the bottom/right: [N, 2th+2, 2tw+2, Cin]
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    by_rows = _bt([xp[:, i : i + 2 * th : 2] for i in range(4)])  # 4 x [N, th, 2tw+2, Cin]
    v = [t.view(-1, cin) for z in by_rows for t in _bt([z[:, :, j : j + 2 * tw : 2] for j in range(4)])]
    return v, th, tw


def products(v: list[Tensor], u: list[Tensor] | tuple[Tensor, ...], bias: Tensor | None = None) -> list[Tensor]:
    """M[k] = V[k] @ U[k]^T for the 16 positions (u: 16 x [Cout, Cin], plain or packed by oneDNN), through oneDNN's
    linear kernels where built in (faster than MKL's on AMD CPUs). The bias rides on M[5], which A^T M A adds to all
    four outputs of a tile."""
    fp32 = v[0].device.type == "cpu" and v[0].dtype == torch.float32 and torch.backends.mkldnn.is_available()
    fp32 = fp32 and not torch.jit.is_tracing()  # (a tracer rejects the oneDNN op's optional arguments)
    out = []
    for k in range(16):
        b = bias if k == 5 else None
        if fp32:
            out.append(torch.ops.mkldnn._linear_pointwise.default(v[k], u[k], b, "none", [], ""))
        else:
            out.append(F.linear(v[k], u[k], b))
    return out


def output_transform(m: list[Tensor], n: int, th: int, tw: int) -> Tensor:
    """A^T M A of every tile, written into place: 16 x [N * th * tw, Cout] -> [N, 2th, 2tw, Cout] (NHWC)."""
    cout = m[0].shape[1]
    out = torch.empty((n, 2 * th, 2 * tw, cout), dtype=m[0].dtype, device=m[0].device)
    grid = out.view(n, th, 2, tw, 2, cout)
    z = [  # A^T along the tile rows (M[4a + b]); then along the columns into the output pixels (2 ti + p, 2 tj + q)
        [torch.add(m[b], m[4 + b]).add_(m[8 + b]) for b in range(4)],
        [torch.sub(m[4 + b], m[8 + b]).sub_(m[12 + b]) for b in range(4)],
    ]
    for p in range(2):
        zp = [t.view(n, th, tw, cout) for t in z[p]]
        torch.add(zp[0], zp[1], out=grid[:, :, p, :, 0]).add_(zp[2])
        torch.sub(zp[1], zp[2], out=grid[:, :, p, :, 1]).sub_(zp[3])
    return out


def apply_filters(x: Tensor, u: list[Tensor] | tuple[Tensor, ...], bias: Tensor | None = None) -> Tensor:
    """conv2d(x, weight, bias, padding=1) from the transformed filters u (``transform_filters(weight)`` unbound, or
    packed by oneDNN), without autograd: x [N, Cin, H, W] (any memory format) -> [N, Cout, H, W], channels-last."""
    n, _, h, w = x.shape
    v, th, tw = input_transform(x)
    out = output_transform(products(v, u, bias), n, th, tw)
    if (2 * th, 2 * tw) != (h, w):
        out = out[:, :h, :w].contiguous()
    return out.permute(0, 3, 1, 2)


def _overlap_add(parts: list[Tensor], axis: int, tiles: int) -> Tensor:
    """Sum four per-tile gradients [.., tiles, ..] of tile positions 0..3 (stride 2; the last one comes negated, see
    ``_b``) along ``axis`` into the [.., 2 tiles, ..] gradient of the picture: the padded picture's rows 1 .. 2 tiles
    (its border rows 0 and 2 tiles + 1 are the convolution's zero padding, whose gradient is not wanted). Position k
    of tile j lands on row 2j + k - 1: positions 1 and 3 fill the even rows (2j and 2j + 2), 2 and 0 the odd ones
    (2j + 1 and 2j - 1), so each half is one copy and one add (a subtraction for position 3), and the result is
    contiguous (no strided crop for the next layer to copy)."""
    shape = list(parts[0].shape)
    shape[axis] = 2 * tiles
    out = parts[0].new_empty(shape)
    halves = out.unflatten(axis, (tiles, 2))
    even, odd = halves.select(axis + 1, 0), halves.select(axis + 1, 1)
    even.copy_(parts[1])
    even.narrow(axis, 1, tiles - 1).sub_(parts[3].narrow(axis, 0, tiles - 1))
    odd.copy_(parts[2])
    odd.narrow(axis, 0, tiles - 1).add_(parts[0].narrow(axis, 1, tiles - 1))
    return out


class _Conv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        n, _, h, w = x.shape
        u = transform_filters(weight)
        v, th, tw = input_transform(x)
        out = output_transform(products(v, u.unbind(0), bias), n, th, tw)
        ctx.save_for_backward(*v, u)
        ctx.geometry = (x.shape, bias is not None)
        if (2 * th, 2 * tw) != (h, w):
            out = out[:, :h, :w].contiguous()
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (n, cin, h, w), has_bias = ctx.geometry
        *v, u = ctx.saved_tensors
        th, tw = -(-h // 2), -(-w // 2)
        gy = grad.permute(0, 2, 3, 1)  # [N, H, W, Cout]
        if (2 * th, 2 * tw) != (h, w):
            gy = F.pad(gy, (0, 0, 0, 2 * tw - w, 0, 2 * th - h))
        cout = gy.shape[-1]
        # dM = A dY A^T: A along the rows (a) for each output column q, then along the columns (b). A's last column
        # is (0, -1): dm[k] holds sign[k] * dM[k] (no full-size negation), and the sign goes on the small factors
        # instead (exact: negation commutes with rounding)
        rows = []
        for q in range(2):
            d0, d1 = gy[:, 0::2, q::2], gy[:, 1::2, q::2]
            rows.append([d0, torch.add(d0, d1), torch.sub(d0, d1), d1])
        dm = []
        for a in range(4):
            c0, c1 = rows[0][a], rows[1][a]
            dm += [t.reshape(-1, cout) for t in (c0, torch.add(c0, c1), torch.sub(c0, c1), c1)]
        flips = [-1.0 if (k // 4 == 3) != (k % 4 == 3) else 1.0 for k in range(16)]
        sign = torch.tensor(flips, dtype=u.dtype, device=u.device)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            du = torch.stack([torch.mm(dm[k].T, v[k]) for k in range(16)]).mul_(sign.view(16, 1, 1))  # [16, Co, Ci]
            g = _g(du)
            grad_w = (g.T @ du.permute(1, 2, 0).reshape(-1, 4, 4) @ g).view(cout, cin, 3, 3)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        if ctx.needs_input_grad[0]:
            signed = u.transpose(1, 2).mul(sign.view(16, 1, 1)).contiguous()  # [16, Cin, Cout]
            dv = [t.view(n, th, tw, cin) for t in products(dm, signed.unbind(0))]
            by_cols = [_overlap_add(_b(dv[4 * a : 4 * a + 4]), 2, tw) for a in range(4)]  # 4 x [N, th, 2tw, Cin]
            picture = _overlap_add(_b(by_cols), 1, th)  # [N, 2th, 2tw, Cin]
            if (2 * th, 2 * tw) != (h, w):
                picture = picture[:, :h, :w]
            grad_x = picture.permute(0, 3, 1, 2)
        return grad_x, grad_w, grad_b


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """conv2d(x, weight, bias, padding=1) by Winograd F(2x2, 3x3), differentiable: x [N, Cin, H, W] (any memory
    format), weight [Cout, Cin, 3, 3] -> [N, Cout, H, W] in channels-last memory format."""
    return _Conv3x3.apply(x, weight, bias)
