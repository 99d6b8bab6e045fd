"""Direct vs Winograd 3x3 convolution on the FPN's largest layer (256 -> 256 channels at 128x128, R50 at 512x512).

Direct: oneDNN (``F.conv2d`` on channels-last tensors, what the optimized model runs). Winograd: NNPACK's F(6x6, 3x3)
(``torch._nnpack_spatial_convolution``, part of PyTorch's CPU build). Reports median times (interleaved) and the
maximum absolute error of each against a float64 convolution, to show why the exact path keeps the direct one: the
Winograd transform's rounding error is about an order of magnitude larger, enough to move labels at near-ties.

Run: .venv/bin/python benchmarks/bench_winograd.py [--reps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions per side (default 10)")
    args = parser.parse_args()
    if not torch._nnpack_available():
        print("NNPACK is not available in this PyTorch build")
        return 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 256, 128, 128, generator=g)
    w = torch.randn(256, 256, 3, 3, generator=g) / 48
    b = torch.randn(256, generator=g)
    x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    sides = {
        "direct (oneDNN, channels-last)": lambda: F.conv2d(x_cl, w_cl, b, padding=1),
        "Winograd F(6x6,3x3) (NNPACK)": lambda: torch._nnpack_spatial_convolution(x, w, b, [1, 1], [1, 1]),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    with torch.inference_mode():
        exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
        errors = {k: float((fn().double() - exact).abs().max()) for k, fn in sides.items()}
        for _ in range(args.reps):
            for k, fn in sides.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    flops = 2 * 256 * 256 * 9 * 128 * 128
    print(f"3x3 conv 256->256 at 128x128, {torch.get_num_threads()} threads, median of {args.reps}")
    print(f"{'side':34s} {'ms':>8s} {'GFLOP/s (direct count)':>24s} {'max |err| vs fp64':>19s}")
    for k, v in times.items():
        med = statistics.median(v)
        print(f"{k:34s} {med * 1e3:8.1f} {flops / med / 1e9:24.0f} {errors[k]:19.2e}")
    print(f"output magnitude: max |y| = {float(exact.abs().max()):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
