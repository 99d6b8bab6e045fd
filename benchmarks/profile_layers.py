"""Per-layer convolution rates of the default Predictor's optimised copy: where the fp32 forward time goes.

Builds the suite's model (benchmarks/suite.py: same configs and spread random weights), runs a few predicts on a
512x512 picture with forward hooks on every oneDNN ``Conv`` of ``accelerate/onednn.py`` (the ResNet bottlenecks'
last convolution is timed through its fused add), and prints the slowest layers with their GFLOP/s (2 per
multiply-add of the direct convolution, also for the layers that take Winograd's algorithm; a layer with GroupNorm
includes it), then the total over all of them. Compare with the 3x3
convolution ceiling of ``maskformer benchmark``.

Run: .venv/bin/python benchmarks/profile_layers.py [--model r50|swin-t] [--threads 1] [--rows 20] [--no-winograd]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import suite

    from maskformer import Predictor
    from maskformer.inference.accelerate.onednn import Conv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="r50", choices=sorted(suite.MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by other load)")
    parser.add_argument("--rows", type=int, default=20, help="layers to list")
    parser.add_argument("--no-winograd", action="store_true", help="oneDNN's direct kernel for every convolution")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, ours, _, _ = suite._build(suite.MODELS[args.model][0], transformers=False)
    predictor = Predictor(ours, min_size=suite.SIZE, max_size=4 * suite.SIZE)
    image = suite._image(0)
    for module in predictor.model.modules():
        if isinstance(module, Conv):
            module.winograd = not args.no_winograd
    predictor(image)
    records: dict[str, list[tuple[float, int, tuple]]] = {}

    def record(name: str, seconds: float, out: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> None:
        macs = out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
        shapes = (tuple(x.shape), tuple(weight.shape))
        records.setdefault(name, []).append((seconds, macs, shapes))

    for name, module in predictor.model.named_modules():
        if not isinstance(module, Conv):
            continue

        def forward(x, _f=module.forward, _m=module, _n=name):
            start = time.perf_counter()
            y = _f(x)
            record(_n, time.perf_counter() - start, y, _m.weight, x)
            return y

        def add_relu(x, other, *, inplace, _f=module.add_relu, _m=module, _n=name):
            start = time.perf_counter()
            y = _f(x, other, inplace=inplace)
            record(_n, time.perf_counter() - start, y, _m.weight, x)
            return y

        module.forward, module.add_relu = forward, add_relu  # type: ignore[method-assign]
    for _ in range(4):
        predictor(image)
    rows = []
    for name, calls in records.items():
        seconds = min(c[0] for c in calls[-3:])
        rows.append((seconds, name, calls[-1][1], calls[-1][2]))
    rows.sort(reverse=True)
    print(f"{args.model}, {args.threads} thread(s), the default Predictor's optimised copy, 512x512:")
    modules = dict(predictor.model.named_modules())
    for seconds, name, macs, (x, w) in rows[: args.rows]:
        wino = " (Winograd)" if modules[name].winograd and modules[name]._suits_winograd() else ""
        print(f"{seconds * 1e3:8.2f} ms {2 * macs / seconds / 1e9:6.0f} GFLOP/s  {name}  input {x} weight {w}{wino}")
    total_s, total_macs = sum(r[0] for r in rows), sum(r[2] for r in rows)
    print(f"all {len(rows)} convolutions: {total_s:.3f} s, {2 * total_macs / 1e9:.1f} GFLOP, "
          f"{2 * total_macs / total_s / 1e9:.0f} GFLOP/s")  # fmt: skip
    start = time.perf_counter()
    predictor(image)
    print(f"one predict (hooks on): {time.perf_counter() - start:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
