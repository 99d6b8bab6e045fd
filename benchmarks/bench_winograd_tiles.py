"""Which Winograd tile for the wide 3x3 convolutions: F(m x m, 3 x 3) for m = 2 (the one the optimised copy runs),
3 and 4, built by Toom-Cook from their interpolation points, against oneDNN's direct kernel.

For every tile: the largest error against float64 (as a fraction of the output range, as ``tests/test_winograd.py``
measures it) on three of the project's shapes, and the time of the 256 -> 256 convolution at 128 x 128 (the R50 pixel
decoder's ``layer_1``), median of --reps, with this project's allocator setting. Larger tiles multiply less
(16 / 4 = 4, 25 / 9 = 2.8, 36 / 16 = 2.25 products per output against 9 for the direct kernel) but their transforms
hold larger numbers and round worse; the optimised copy keeps only what rounds no worse than the direct kernel.

Toom-Cook for correlation (transpose of the polynomial product): with V the Vandermonde matrix of the finite points
plus the point at infinity, B^T = V^-T, G = V[:, :3], A^T = V[:, :m]^T (each B^T row scaled to small integers, G's row
divided by the same factor). The filter transform is applied in float64 once, the others in fp32.

Run: .venv/bin/python benchmarks/bench_winograd_tiles.py [--reps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time
from fractions import Fraction

import sympy
import torch
import torch.nn.functional as F

TILES = {  # m: interpolation points (and infinity)
    "F(2x2) points 0, 1, -1": (2, [0, 1, -1]),
    "F(3x3) points 0, 1, -1, 2": (3, [0, 1, -1, 2]),
    "F(3x3) points 0, 1, -1, 1/2": (3, [0, 1, -1, Fraction(1, 2)]),
    "F(4x4) points 0, 1, -1, 2, -2": (4, [0, 1, -1, 2, -2]),
    "F(4x4) points 0, 1, -1, 1/2, -1/2": (4, [0, 1, -1, Fraction(1, 2), Fraction(-1, 2)]),
}
SHAPES = [(256, 128), (256, 16), (2048, 16)]  # (Cin, side); Cout = 256


def transforms(m: int, points: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B^T [n, n], G [n, 3] float64, A^T [m, n]) for F(m, 3), n = m + 2."""
    n = m + 2
    pts = [sympy.Rational(str(Fraction(p))) for p in points]
    v = sympy.Matrix([[p**k for k in range(n)] for p in pts] + [[0] * (n - 1) + [1]])
    bt = v.inv().T
    g = sympy.Matrix([[p**k for k in range(3)] for p in pts] + [[0, 0, 1]])
    at = sympy.Matrix([[p**i for p in pts] + [1 if i == m - 1 else 0] for i in range(m)])
    for j in range(n):  # scale B^T's row to coprime integers, G's row by the inverse
        den = math.lcm(*[int(sympy.fraction(x)[1]) for x in bt.row(j)])
        num = math.gcd(*[int(sympy.fraction(x)[0] * den / sympy.fraction(x)[1]) for x in bt.row(j)]) or 1
        bt[j, :] = bt.row(j) * den / num
        g[j, :] = g.row(j) * num / den
    as_tensor = lambda mat: torch.tensor([[float(x) for x in mat.row(i)] for i in range(mat.rows)])  # noqa: E731
    return as_tensor(bt), as_tensor(g).double(), as_tensor(at)


def conv(x: torch.Tensor, u: torch.Tensor, bt2: torch.Tensor, at2: torch.Tensor, m: int) -> torch.Tensor:
    """3x3 convolution (padding 1) of x [1, Cin, H, W] by the transformed filters u [t^2, Cin, Cout]."""
    n, cin, h, w = x.shape
    t, cout = m + 2, u.shape[2]
    th, tw = -(-h // m), -(-w // m)
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, m * tw + 1 - w, 1, m * th + 1 - h))
    s = xp.stride()
    tiles = xp.as_strided((t, t, n, th, tw, cin), (s[1], s[2], s[0], m * s[1], m * s[2], s[3])).reshape(t * t, -1)
    prod = torch.bmm((bt2 @ tiles).view(t * t, n * th * tw, cin), u)
    y = (at2 @ prod.view(t * t, -1)).view(m, m, n, th, tw, cout)
    out = torch.empty(n, m * th, m * tw, cout)
    out.view(n, th, m, tw, m, cout).copy_(y.permute(2, 3, 0, 4, 1, 5))
    return out[:, :h, :w].permute(0, 3, 1, 2)


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> int:
    from maskformer.allocator import reuse_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    cases = []
    for cin, side in SHAPES:
        g = torch.Generator().manual_seed(cin + side)
        x = torch.randn(1, cin, side, side, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, cin, 3, 3, generator=g) / (3 * cin**0.5)
        cases.append((x, w, F.conv2d(x.double(), w.double(), padding=1)))
    err = lambda y, exact: float((y.double() - exact).abs().max() / exact.abs().max())  # noqa: E731
    print(f"{args.threads} thread(s); error = max |y - float64| / max |float64| on Cin x side = {SHAPES}, Cout 256")
    x, w, _ = cases[0]
    direct = [err(F.conv2d(x, w, padding=1), exact) for x, w, exact in cases]
    print(f"{'direct (oneDNN)':>36}  errors {' '.join(f'{e:.1e}' for e in direct)}  "
          f"256->256 at 128²: {median_ms(lambda: F.conv2d(x, w, padding=1), args.reps):6.1f} ms")  # fmt: skip
    for name, (m, points) in TILES.items():
        bt, g, at = transforms(m, points)
        bt2, at2 = torch.kron(bt, bt), torch.kron(at, at)
        t = m + 2
        filters = [torch.einsum("ik,ockl,jl->ijco", g, w.double(), g).reshape(t * t, w.shape[1], 256).float()
                   for _, w, _ in cases]  # fmt: skip
        errors = [err(conv(x, u, bt2, at2, m), exact) for (x, _, exact), u in zip(cases, filters)]
        ms = median_ms(lambda u=filters[0], b=bt2, a=at2, m=m: conv(cases[0][0], u, b, a, m), args.reps)
        print(f"{name:>36}  errors {' '.join(f'{e:.1e}' for e in errors)}  256->256 at 128²: {ms:6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
