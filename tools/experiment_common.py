"""What the two experiment tools share: running the CLI, one training + evaluation run, tables, plots, verdicts.

Imported by ``camvid_experiment.py``, ``synthetic_classes_experiment.py`` and ``camvid_sequence_holdout.py``;
no tool imports another tool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MASKFORMER = [sys.executable, "-m", "maskformer.cli"]


@dataclass
class Variant:
    """One formulation: ``key`` (directory name), the paper's ``name``, and its config file."""

    key: str
    name: str
    config: Path
    what: str


# The paper's four formulations (Table 4 / Figure 3): key (directory and config file name), name, what it is.
FORMULATIONS = (
    ("per_pixel", "PerPixelBaseline", "per-pixel softmax, no decoder"),
    ("per_pixel_plus", "PerPixelBaseline+", "per-pixel softmax + transformer decoder, Q = K"),
    ("maskformer_fixed", "MaskFormer-fixed", "mask classification, N = K, fixed matching"),
    ("maskformer", "MaskFormer", "mask classification, N = 32, bipartite matching"),
)


def formulations(config_dir: Path) -> list[Variant]:
    """The four formulations with their configs ``config_dir/<key>.yaml``."""
    return [Variant(key, name, config_dir / f"{key}.yaml", what) for key, name, what in FORMULATIONS]


@dataclass
class RunResult:
    """What the report needs from one trained variant (``curve``: (train seconds, val mIoU) pairs)."""

    variant: Variant
    final: dict[str, Any]
    iterations: int
    wall_seconds: float
    train_seconds: float
    parameters: int
    flops: int
    curve: list[tuple[float, float]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- running


def run_cmd(cmd: list[str], *, threads: int, log: Path | None = None) -> str:
    """Run a ``maskformer`` subprocess with ``threads`` intra-op threads; return stdout, raise on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """``(loss records, eval records)`` of a metrics.jsonl file."""
    losses, evals = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "eval" in rec:
            evals.append(rec)
        elif "iteration" in rec:
            losses.append(rec)
    return losses, evals


def model_info(config: Path, size: tuple[int, int], overrides: list[str], threads: int) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of the model at input ``size`` (``maskformer info``; FLOPs as the paper counts them)."""
    cmd = [*MASKFORMER, "info", str(config), "--size", str(size[0]), str(size[1]), "--json"]
    for o in overrides:
        cmd += ["--set", o]
    info = json.loads(run_cmd(cmd, threads=threads))
    return int(info["parameters"]["total"]), int(info["flops"]["original"])


def train_and_evaluate(
    variant: Variant,
    *,
    out: Path,
    data_root: str | None,
    overrides: list[str],
    threads: int,
    size: tuple[int, int],
    reuse: bool,
    report_only: bool = False,
) -> RunResult:
    """Train one variant (unless ``reuse`` and a final model exists), then evaluate the final model on val.

    ``report_only``: neither train nor evaluate; read the saved evaluation of the final model (``metrics.json``).
    """
    run_dir = out / variant.key
    log = out / "commands.log"
    sets: list[str] = []
    for o in overrides:
        sets += ["--set", o]
    root = ["--data-root", data_root] if data_root else []
    final_model = run_dir / "model_final.pt"
    timing = run_dir / "wall_seconds.txt"
    if report_only and not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'metrics.json'}: no saved evaluation (run without --report-only)")
    if not report_only and not (reuse and final_model.is_file() and timing.is_file()):
        if run_dir.exists():
            for f in ("metrics.jsonl", "checkpoint_last.pt", "model_final.pt"):
                (run_dir / f).unlink(missing_ok=True)
        tic = time.perf_counter()
        run_cmd([*MASKFORMER, "train", str(variant.config), "--output-dir", str(run_dir), "--quiet", *root, *sets],
                threads=threads, log=log)  # fmt: skip
        timing.write_text(f"{time.perf_counter() - tic:.1f}\n")
    wall = float(timing.read_text())
    # The final model, evaluated by the same command anyone can run on it (and on the held-out test split).
    if report_only:
        final = json.loads((run_dir / "metrics.json").read_text())
    else:
        text = run_cmd([*MASKFORMER, "eval", str(final_model), *root, "--split", "val", "--json",
                        "--output-dir", str(run_dir)], threads=threads, log=log)  # fmt: skip
        final = json.loads(text)
    losses, evals = read_metrics(run_dir / "metrics.jsonl")
    curve = [(float(e["train_seconds"]), float(e["eval"]["mIoU"])) for e in evals]
    params, flops = model_info(variant.config, size, overrides, threads)
    iterations = max((int(r["iteration"]) for r in losses + evals), default=0)
    train_seconds = float(evals[-1]["train_seconds"]) if evals else 0.0
    return RunResult(variant=variant, final=final, iterations=iterations, wall_seconds=wall,
                     train_seconds=train_seconds, parameters=params, flops=flops, curve=curve,
                     overrides=list(overrides))  # fmt: skip


# --------------------------------------------------------------------------------------------------- report


def _f(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def results_table(results: list[RunResult]) -> str:
    """Markdown table: mIoU, PQ^St/SQ^St/RQ^St, fwIoU, pixel accuracy, params, FLOPs, iterations, time."""
    rows = [
        "| variant | formulation | mIoU | PQ^St | SQ^St | RQ^St | pACC | params | GFLOPs | iters | train s | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        st = r.final.get("PQ_St", {})
        rows.append(
            f"| {r.variant.name} | {r.variant.what} | {_f(r.final.get('mIoU'))} | {_f(st.get('PQ'))} | "
            f"{_f(st.get('SQ'))} | {_f(st.get('RQ'))} | {_f(r.final.get('pACC'))} | {r.parameters / 1e6:.2f} M | "
            f"{r.flops / 1e9:.2f} | {r.iterations} | {r.train_seconds:.0f} | {r.wall_seconds:.0f} |"
        )
    return "\n".join(rows)


def per_class_table(results: list[RunResult], class_names: list[str]) -> str:
    """Markdown table of per-class IoU (rows: classes, columns: variants)."""
    head = "| class | " + " | ".join(r.variant.name for r in results) + " |"
    sep = "|---|" + "---:|" * len(results)
    rows = [head, sep]
    for i, name in enumerate(class_names):
        cells = []
        for r in results:
            iou = r.final.get("IoU", [])
            cells.append(_f(iou[i]) if i < len(iou) and iou[i] is not None else "–")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_curves(results: list[RunResult], path: Path, *, title: str) -> None:
    """Validation mIoU against training seconds, one line per variant (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for r in results:
        if r.curve:
            xs, ys = zip(*r.curve)
            ax.plot([x / 60 for x in xs], ys, marker="o", markersize=3, label=r.variant.name)
    ax.set_xlabel("training time (minutes, evaluation excluded)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def ordering_verdict(results: list[RunResult]) -> str:
    """Plain-language comparison against the paper's predictions for a few-class dataset (K = 11)."""
    by = {r.variant.key: r for r in results}
    lines = []

    def miou(k: str) -> float:
        return float(by[k].final["mIoU"])

    def pq(k: str) -> float:
        return float(by[k].final["PQ_St"]["PQ"])

    def cmp(a: str, b: str) -> str:
        da, dp = miou(a) - miou(b), pq(a) - pq(b)
        word_m = "higher" if da > 0 else "not higher"
        word_p = "higher" if dp > 0 else "not higher"
        head = f"{by[a].variant.name} vs {by[b].variant.name}"
        return f"{head}: mIoU {da:+.1f}, PQ^St {dp:+.1f} ({word_m} mIoU, {word_p} PQ^St)"

    pairs = [("maskformer", "per_pixel"), ("maskformer", "per_pixel_plus"), ("maskformer", "maskformer_fixed"),
             ("maskformer_fixed", "per_pixel_plus"), ("per_pixel_plus", "per_pixel")]  # fmt: skip
    for a, b in pairs:
        if a in by and b in by:
            lines.append(f"- {cmp(a, b)}")
    return "\n".join(lines) if lines else "- (not enough variants finished to compare)"
