"""Hungarian matcher speed: maskformer.matcher.HungarianMatcher vs transformers' MaskFormerHungarianMatcher.

Same random problem for both (default: 2 images x 100 queries, 150 classes, 20 targets per image, 128x128 mask logits,
512x512 targets), the same cost weights (class 1, mask 20, dice 1). Each side gets its natural target format:
transformers float masks, maskformer bool masks (the format the data pipeline produces). Calls alternate
(ours, theirs, ours, ...) so load changes from other processes hit both alike; the figure is the ratio of medians.
The assignments are checked to be identical before timing.

Run: .venv/bin/python benchmarks/bench_matcher.py [--reps 30] [--threads N] [--output benchmarks/results_matcher.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import torch

from maskformer.criterion.matcher import HungarianMatcher


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--pred-size", type=int, default=128)
    parser.add_argument("--target-size", type=int, default=512)
    parser.add_argument("--reps", type=int, default=30, help="timed calls per side (after 3 warm-up calls)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--output", default="", help="write a markdown report here")
    parser.add_argument("--append", action="store_true", help="append to --output as a new section (no title)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from transformers.models.maskformer.modeling_maskformer import MaskFormerHungarianMatcher

    g = torch.Generator().manual_seed(0)
    b, q, k, n = args.batch, args.queries, args.classes, args.targets
    logits = torch.randn(b, q, k + 1, generator=g) * 2
    masks = torch.randn(b, q, args.pred_size, args.pred_size, generator=g) * 4
    tgt_bool = [torch.rand(n, args.target_size, args.target_size, generator=g) > 0.7 for _ in range(b)]
    tgt_float = [m.float() for m in tgt_bool]
    labels = [torch.randint(0, k, (n,), generator=g) for _ in range(b)]
    outputs = {"pred_logits": logits, "pred_masks": masks}
    targets = [{"labels": lab, "masks": m} for lab, m in zip(labels, tgt_bool)]

    ours = HungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
    theirs = MaskFormerHungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)

    def run_ours():
        return ours(outputs, targets)

    def run_theirs():
        return theirs(masks, logits, tgt_float, labels)

    for (r1, c1), (r2, c2) in zip(run_ours(), run_theirs()):
        if not (torch.equal(r1, r2) and torch.equal(c1, c2)):
            print("assignments differ", file=sys.stderr)
            return 1
    for _ in range(3):
        run_ours()
        run_theirs()
    t_ours, t_theirs = [], []
    for _ in range(args.reps):
        for fn, times in ((run_ours, t_ours), (run_theirs, t_theirs)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    m_ours, m_theirs = statistics.median(t_ours) * 1e3, statistics.median(t_theirs) * 1e3
    ratio = m_theirs / m_ours

    import transformers

    command = "  ".join(["$", ".venv/bin/python", *sys.argv]).replace("  ", " ")
    machine = f"{_cpu_name()}, {torch.get_num_threads()} torch threads, {platform.system()} {platform.release()}"
    try:
        with open("/proc/loadavg") as f:  # other processes on a shared machine move both timings
            machine += f", load average at the end {f.read().split()[0]}"
    except OSError:
        pass
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"
    problem = (
        f"{b} images x {q} queries, {k} classes, {n} targets/image, {args.pred_size}x{args.pred_size} mask logits, "
        f"{args.target_size}x{args.target_size} targets"
    )
    lines = [
        f"## {torch.get_num_threads()} thread(s)",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {machine}",
        f"- Versions: {versions}",
        f"- Problem: {problem}; identical assignments checked before timing",
        f"- Timing: median of {args.reps} alternating calls per side after 3 warm-up calls each",
        "",
        "| matcher | median ms / call | min ms | max ms |",
        "|---|---|---|---|",
        f"| maskformer.matcher.HungarianMatcher | {m_ours:.2f} | {min(t_ours) * 1e3:.2f} | {max(t_ours) * 1e3:.2f} |",
        f"| transformers MaskFormerHungarianMatcher | {m_theirs:.2f} | {min(t_theirs) * 1e3:.2f} | "
        f"{max(t_theirs) * 1e3:.2f} |",
        "",
        f"**Speed-up (ratio of medians): {ratio:.1f}x**",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        with open(args.output, "a" if args.append else "w") as f:
            f.write("\n" if args.append else "# Hungarian matcher: maskformer vs transformers\n\n")
            f.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
