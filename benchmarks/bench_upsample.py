"""The fused loss's bilinear upsampling of mask logits (``criterion/upsample.py``) and its adjoint, against
F.interpolate and its backward, and against the two dense products with the interpolation matrices (what the loss
used before): 4 masks 128^2 -> 512^2 (one chunk of the training crop), medians of alternating calls.

    .venv/bin/python benchmarks/bench_upsample.py [--masks 4] [--low 128] [--reps 200] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from maskformer.allocator import reuse_freed_memory
from maskformer.criterion import upsample as up
from maskformer.engine.timing import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=4)
    parser.add_argument("--low", type=int, default=128, help="logit size; upsampled 4x")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as `maskformer train` runs
    g = torch.Generator().manual_seed(0)
    k, low = args.masks, args.low
    size = (4 * low, 4 * low)
    src = torch.randn(k, low, low, generator=g)
    grad = torch.randn(k, size[0] * size[1], generator=g)
    grad4 = grad.view(k, 1, *size)
    a_h = up.interpolation_matrix(size[0], low, src)
    a_w = up.interpolation_matrix(size[1], low, src)

    def dense_adjoint() -> torch.Tensor:
        return torch.matmul(a_h.T, (grad.view(k * size[0], size[1]) @ a_w).view(k, size[0], low))

    calls = {
        "forward: F.interpolate": lambda: F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False),
        "forward: row sums": lambda: up.upsample(src, size),
        "adjoint: upsample_bilinear2d_backward": lambda: torch.ops.aten.upsample_bilinear2d_backward(
            grad4, list(size), [k, 1, low, low], False
        ),
        "adjoint: two dense products": dense_adjoint,
        "adjoint: row sums": lambda: up.upsample_adjoint(grad, src.shape, size),
    }
    ref_up = calls["forward: F.interpolate"]().flatten(1)
    ref_adj = calls["adjoint: upsample_bilinear2d_backward"]()[:, 0]
    print(f"largest difference: forward {(up.upsample(src, size) - ref_up).abs().max().item():.1e}, adjoint "
          f"{(up.upsample_adjoint(grad, src.shape, size) - ref_adj).abs().max().item():.1e}")  # fmt: skip
    medians = interleaved_medians(calls, args.reps)
    print(f"{k} masks {low}^2 -> {size[0]}^2, {args.threads} threads, median of {args.reps} alternating calls:")
    for name, seconds in medians.items():
        print(f"  {name:40s} {seconds * 1000:7.3f} ms")


if __name__ == "__main__":
    main()
