"""Before / after: the same timing in two source trees (e.g. a checkout of an older commit and this one), each in a
process of its own, called in alternation so that load from elsewhere hits both alike.

Parts: ``semantic`` / ``panoptic`` (the default Predictor on the suite's 512x512 picture, ``benchmarks/suite.py``'s
configs and weights), ``train`` (one R50 training step at batch 2 with deep supervision, as
``compare_transformers.py --parts train`` runs ``ours_exact``; its loss is printed for both trees) and ``criterion``
(that step's losses alone, forward + backward, on the model's outputs of one step held fixed).

Run: git worktree add /tmp/old <commit>
     .venv/bin/python benchmarks/ab_trees.py --a /tmp/old/src --b src --part semantic --model r50 [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_WORKER = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
part, model_name, threads = sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
if part in ("train", "criterion"):
    import compare_transformers as ct
    from maskformer.allocator import reuse_freed_memory
    from maskformer.build import build_criterion
    cfg, ours, hf = ct._models(aux_loss=True, point_sample=False)
    del hf
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 512, 512, generator=g).contiguous(memory_format=torch.channels_last)
    targets = ct._train_targets(cfg, 2, 512, g)
    reuse_freed_memory()
    model = ours.train().to(memory_format=torch.channels_last)
    try:  # what `maskformer train` does where the tree has it
        from maskformer.modeling.layers import set_winograd
        set_winograd(model, cfg.train.winograd)
    except ImportError:
        pass
    criterion = build_criterion(cfg)

    def call():
        model.zero_grad(set_to_none=True)
        loss = criterion(model(x), targets)["loss"]
        loss.backward()
        return loss.item()

    if part == "criterion":  # the losses' forward + backward alone, on one step's outputs as leaves
        with torch.no_grad():
            fixed = model(x)

        def leaves(o):
            if isinstance(o, torch.Tensor):
                return o.detach().requires_grad_()
            if isinstance(o, dict):
                return {k: leaves(v) for k, v in o.items()}
            return [leaves(v) for v in o] if isinstance(o, list) else o

        def call():
            loss = criterion(leaves(fixed), targets)["loss"]
            loss.backward()
            return loss.item()
else:
    import suite
    from maskformer import Predictor
    _, ours, _, _ = suite._build(suite.MODELS[model_name][part == "panoptic"], transformers=False)
    predictor = Predictor(ours, min_size=suite.SIZE, max_size=4 * suite.SIZE)
    image = suite._image(0)

    def call():
        predictor(image, task=part)
        return None
for _ in range(2):
    call()
print("ready", flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    value = call()
    print(json.dumps([time.perf_counter() - start, value]), flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="the first tree's src/ folder (e.g. an older commit's)")
    parser.add_argument("--b", default=str(HERE.parent / "src"), help="the second tree's src/ (default: this one)")
    parser.add_argument("--part", default="semantic", choices=("semantic", "panoptic", "train", "criterion"))
    parser.add_argument("--model", default="r50", choices=("r50", "swin-t"), help="(semantic / panoptic)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    procs = {}
    for name, src in (("a", args.a), ("b", args.b)):
        env = {"PYTHONPATH": f"{Path(src).resolve()}:{HERE}", "PATH": "/usr/bin:/bin"}
        argv = [sys.executable, "-c", _WORKER, str(Path(src).resolve()), args.part, args.model, str(args.threads)]
        procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for name, proc in procs.items():
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the worker of tree {name} did not start")
    times: dict[str, list[float]] = {name: [] for name in procs}
    values: dict[str, object] = {}
    for _ in range(args.rounds):
        for name, proc in procs.items():
            time.sleep(0.2)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            seconds, values[name] = json.loads(proc.stdout.readline())
            times[name].append(seconds)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    med = {name: statistics.median(t) for name, t in times.items()}
    what = {"train": "R50 training step", "criterion": "R50 step's criterion (forward + backward)"}.get(
        args.part, f"{args.model} {args.part} predict"
    )
    print(f"{what}, {args.threads} threads, median of {args.rounds} alternating calls: a {med['a']:.3f} s, "
          f"b {med['b']:.3f} s, b / a = {med['b'] / med['a']:.3f}")  # fmt: skip
    if args.part in ("train", "criterion"):
        print(f"loss: a {values['a']!r}, b {values['b']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
