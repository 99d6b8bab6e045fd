"""Pieces of the training mask product (``modeling/mask_product.py``) at the R50 step's sizes (batch 2, 6 layers x 100
queries, 256 channels at 128 x 128, channels-last features), each variant timed in alternation, medians:

- the forward product: one ``torch.bmm`` over the batch against one ``torch.mm`` per image into the output;
- the backward's scan for non-zero gradient rows ([100, 128^2] per layer and image, ~10 % of rows non-zero): float
  ``aminmax`` against int32 ``amax`` / ``amin`` of the bit patterns;
- the mask features' 3x3 convolution (256 -> 256) in the training forward: direct (oneDNN) against Winograd.

    .venv/bin/python benchmarks/bench_mask_product.py [--reps 9] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from maskformer.engine.timing import interleaved_medians
from maskformer.modeling.winograd import apply_filters, transform_filters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batch, rows, channels, side = 2, 600, 256, 128
    embed = torch.randn(batch, rows, channels, generator=g)
    features = torch.randn(batch, channels, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    flat = features.reshape(batch, channels, side * side)
    out = torch.empty(batch, rows, side * side)

    def per_image() -> None:
        for b in range(batch):
            torch.mm(embed[b], flat[b], out=out[b])

    grad = torch.zeros(100, side * side)
    grad[::10] = torch.randn(10, side * side, generator=g)
    bits = grad.view(torch.int32)
    weight = torch.randn(channels, channels, 3, 3, generator=g) / 48
    bias = torch.zeros(channels)
    results = {
        "product: bmm": lambda: torch.bmm(embed, flat),
        "product: mm per image": per_image,
        "rows: float aminmax": lambda: torch.aminmax(grad, dim=-1),
        "rows: int32 amax, amin": lambda: (bits.amax(-1), bits.amin(-1)),
        "mask conv: direct": lambda: F.conv2d(features, weight, bias, padding=1),
        "mask conv: Winograd": lambda: apply_filters(features, transform_filters(weight).unbind(0), bias),
    }
    for name, seconds in interleaved_medians(results, args.reps).items():
        print(f"{name:26s} {seconds * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
