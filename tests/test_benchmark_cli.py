"""`maskformer benchmark`: runs end to end on the tiny demo config and reports consistent figures.

No wall-clock assertions (shared machine): only the structure, the internal consistency of the numbers and the
label agreement of the optimized path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import maskformer
from maskformer.cli import main
from maskformer.cli.benchmark import conv_ceiling
from maskformer.engine.analysis import count_flops

DEMO_YAML = Path(maskformer.__file__).parent / "resources" / "demo.yaml"


def test_benchmark_json_reports_the_timings_it_measured(capsys, monkeypatch):
    """Controlled timings in, known ratios and rates out (the timer itself: the next test)."""
    from maskformer.cli import benchmark
    from maskformer.engine import timing

    seconds = {"forward_reference": 0.4, "forward_optimized": 0.2, "post_reference": 0.1, "post_optimized": 0.025,
               "predict_reference": 1.0, "predict_optimized": 0.6}  # fmt: skip
    called = []

    def medians(fns: dict, reps: int, progress: str = "") -> dict[str, float]:
        assert reps == 2 and progress == "benchmark"
        for name, fn in fns.items():  # every variant really runs once
            fn()
            called.append(name)
        return {name: seconds[name] for name in fns}

    monkeypatch.setattr(timing, "interleaved_medians", medians)
    monkeypatch.setattr(benchmark, "conv_ceiling", lambda *, bf16=False, reps=5: 50e9)
    assert main(["benchmark", str(DEMO_YAML), "--size", "64", "96", "--reps", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert sorted(called) == sorted(seconds) and r["size"] == [64, 96] and r["reps"] == 2
    assert r["median_seconds"] == seconds
    assert r["optimized_over_reference"] == pytest.approx({"forward": 0.5, "post": 0.25, "predict": 0.6})
    macs, _ = count_flops(maskformer.build_model(maskformer.load_config(DEMO_YAML)), height=64, width=96, lean=True)
    assert r["semantic_inference_gflop_fvcore"] == pytest.approx(macs / 1e9)
    # the network alone does less than the whole inference graph (no semantic combine / upsampling); folding the
    # mask_features conv into the queries' embeddings (10 queries < 64 mask channels here) removes more
    ref_gflop, opt_gflop = r["forward_reference_real_gflop"], r["forward_optimized_real_gflop"]
    assert 0 < opt_gflop < ref_gflop < 2 * macs / 1e9
    assert r["forward_reference_gflops"] == pytest.approx(ref_gflop / 0.4)
    assert r["forward_optimized_gflops"] == pytest.approx(opt_gflop / 0.2)
    assert r["conv_ceiling_gflops_fp32"] == pytest.approx(50.0) and r["ceiling_dtype"] == "fp32"
    assert "conv_ceiling_gflops_bf16" not in r
    assert r["forward_lower_bound_seconds"] == pytest.approx(opt_gflop / 50.0)
    assert r["forward_optimized_fraction_of_ceiling"] == pytest.approx(opt_gflop / 0.2 / 50.0)
    assert r["predict_label_agreement"] > 0.999  # fp32 folded model: rounding-level differences only
    # where the figures came from (a report said only "x86_64, 2 CPUs", and nothing about the model or task)
    assert r["source"] == str(DEMO_YAML) and r["task"] == "semantic" and r["ceiling_disturbed"] is False
    assert r["machine"]["cpus"] == os.cpu_count() and r["machine"]["torch"] == torch.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", r["machine"]["date"]), r["machine"]
    root = Path(maskformer.__file__).resolve().parents[2]
    if (root / ".git").exists():  # (a checkout: the figures name its commit)
        import subprocess

        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        assert r["machine"]["commit"] == head.stdout.strip(), r["machine"]
    if Path("/proc/cpuinfo").is_file():
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
        assert ("AVX2" in r["machine"]["isa"]) == ("avx2" in flags), r["machine"]
        assert ("AMX" in r["machine"]["isa"]) == ("amx_tile" in flags), r["machine"]
    # a forward faster than the ceiling measured beside it: said, not printed as "128 % of the ceiling" alone
    monkeypatch.setattr(benchmark, "conv_ceiling", lambda *, bf16=False, reps=5: 0.01e9)
    assert main(["benchmark", str(DEMO_YAML), "--size", "64", "96", "--reps", "2"]) == 0
    captured = capsys.readouterr()
    assert "note: the forward ran above the measured ceiling" in captured.out, captured.out
    assert f"{DEMO_YAML}: semantic labels" in captured.out and "measured " in captured.out
    assert "6 variants, one warm-up call and 2 timed rounds" in captured.err, captured.err


def test_interleaved_medians_warm_up_once_then_take_turns(monkeypatch):
    import time

    from maskformer.engine.timing import interleaved_medians

    clock, order = [0.0], []

    def fn(name: str, durations: list[float]):
        steps = iter(durations)

        def call() -> None:
            order.append(name)
            clock[0] += next(steps)

        return call

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    # the first (warm-up) call of each is slow and must not count
    med = interleaved_medians({"a": fn("a", [9.0, 1.0, 3.0, 2.0]), "b": fn("b", [7.0, 5.0, 4.0, 6.0])}, reps=3)
    assert med == {"a": 2.0, "b": 5.0}
    assert order == ["a", "b"] * 4


def test_interleaved_medians_pause_before_each_timed_call_is_not_counted(monkeypatch):
    import time

    from maskformer.engine.timing import interleaved_medians

    clock, events = [0.0], []

    def sleep(seconds: float) -> None:
        events.append("sleep")
        clock[0] += seconds

    def call() -> None:
        events.append("call")
        clock[0] += 1.0

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    assert interleaved_medians({"a": call}, reps=2, pause=0.5) == {"a": 1.0}
    assert events == ["call", "sleep", "call", "sleep", "call"]  # warm-up, then a pause before each timed call


def test_conv_ceiling_is_the_convolution_flops_over_the_median_time(monkeypatch):
    import time

    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 3.0])  # three timed calls: 0.5 s, 0.25 s, 1.0 s -> median 0.5 s
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    flops = 2 * 256 * 256 * 9 * 128 * 128  # one 3x3 conv, 256 -> 256 channels, 128 x 128
    assert conv_ceiling(reps=3) == pytest.approx(flops / 0.5)


def test_benchmark_errors_are_one_line(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["benchmark", str(DEMO_YAML), "--reps", "0"]) == 2
    assert "--reps" in capsys.readouterr().err
    assert main(["benchmark", str(DEMO_YAML), "--threads", "-1"]) == 2  # (it ran on with torch's default)
    assert "--threads must be >= 0" in capsys.readouterr().err


def test_small_rates_are_not_printed_as_zero() -> None:
    from maskformer.cli.benchmark import _rate

    assert [_rate(v) for v in (0.35, 0.0049, 9.96, 12.7, 347.2)] == ["0.35", "0.0049", "10", "13", "347"]


def test_benchmark_runs_on_a_per_pixel_baseline(tmp_path, capsys):
    """The FLOP count read ``pred_masks``, which a per-pixel baseline has none of: a KeyError traceback."""
    config = tmp_path / "per_pixel.yaml"
    config.write_text(f"_base_: {DEMO_YAML}\nmodel: {{meta_arch: per_pixel}}\n")
    assert main(["benchmark", str(config), "--size", "64", "64", "--reps", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["forward_reference_real_gflop"] == r["forward_optimized_real_gflop"] > 0
    assert r["mask_features_folded"] is False and r["predict_label_agreement"] > 0.999


def test_benchmark_counts_the_flops_of_a_model_whose_folded_mask_convolution_takes_winograd(tmp_path, capsys):
    """A 256-channel pixel decoder and 64 queries (as every zoo model has at least): the FLOP count traced the
    optimised forward into the Winograd kernels' oneDNN calls, which the tracer refused (a traceback, exit 1)."""
    config = tmp_path / "wide.yaml"
    config.write_text(f"_base_: {DEMO_YAML}\nmodel: {{convs_dim: 256, mask_dim: 256, num_queries: 64}}\n")
    assert main(["benchmark", str(config), "--size", "64", "64", "--reps", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mask_features_folded"] is True and r["predict_label_agreement"] > 0.999
    assert 0 < r["forward_optimized_real_gflop"] < r["forward_reference_real_gflop"]
