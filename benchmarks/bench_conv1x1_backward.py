"""The backward of the R50 training step's 1x1 convolutions (batch 2, 512^2 crop, channels-last): oneDNN's
``convolution_backward`` (what autograd runs) against the same two gradients as matrix products on the [N*H*W, C]
views of the channels-last tensors (input gradient dY @ W, weight gradient dY^T @ X) through MKL's ``torch.mm``.
Medians of calls timed in alternation, with GFLOP/s (2 x the forward's multiply-adds per gradient).

    .venv/bin/python benchmarks/bench_conv1x1_backward.py [--reps 15] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from maskformer.engine.timing import interleaved_medians

# (Cin, Cout, side) of the 1x1 convolutions that run at stride 1 in the step (batch 2, 512^2 input)
SHAPES = [(1024, 256, 32), (256, 1024, 32), (64, 256, 128), (256, 64, 128), (512, 128, 64), (128, 512, 64),
          (256, 256, 128), (512, 2048, 16), (2048, 512, 16)]  # fmt: skip


def _medians(cin: int, cout: int, side: int, reps: int, g: torch.Generator) -> dict[str, float]:
    x = torch.randn(2, cin, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, 1, 1, generator=g).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(2, cout, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    x2, dy2 = x.permute(0, 2, 3, 1).reshape(-1, cin), dy.permute(0, 2, 3, 1).reshape(-1, cout)  # (views)
    w2 = w.view(cout, cin)
    geometry = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])
    return interleaved_medians(
        {
            "conv": lambda: torch.ops.aten.convolution_backward(dy, x, w, None, *geometry),
            "mm": lambda: (torch.mm(dy2, w2), torch.mm(dy2.t(), x2)),
        },
        reps,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"{'Cin -> Cout @ side':20s} {'convolution_backward':>26s} {'two torch.mm':>26s}")
    for cin, cout, side in SHAPES:
        times = _medians(cin, cout, side, args.reps, g)
        gflop = 2 * 2 * 2 * side * side * cin * cout / 1e9  # two gradients, each 2 x multiply-adds of the forward
        cells = [f"{times[k] * 1e3:8.2f} ms ({gflop / times[k]:4.0f} GFLOP/s)" for k in ("conv", "mm")]
        print(f"{cin:5d} -> {cout:5d} @ {side:3d}  {cells[0]:>26s} {cells[1]:>26s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
