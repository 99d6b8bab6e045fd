"""`maskformer benchmark`: runs end to end on the tiny demo config and reports consistent figures.

No wall-clock assertions (shared machine): only the structure, the internal consistency of the numbers and the
label agreement of the optimized path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import maskformer
from maskformer.cli import main
from maskformer.cli.benchmark import conv_ceiling
from maskformer.engine.analysis import count_flops

DEMO_YAML = Path(maskformer.__file__).parent / "resources" / "demo.yaml"


def test_benchmark_json_is_consistent(capsys):
    assert main(["benchmark", str(DEMO_YAML), "--size", "64", "96", "--reps", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["size"] == [64, 96] and r["reps"] == 2
    med = r["median_seconds"]
    assert set(med) == {f"{p}_{v}" for p in ("forward", "post", "predict") for v in ("reference", "optimized")}
    assert all(v > 0 for v in med.values())
    for part in ("forward", "post", "predict"):
        assert r["optimized_over_reference"][part] == pytest.approx(med[f"{part}_optimized"] / med[f"{part}_reference"])
    macs, _ = count_flops(maskformer.build_model(maskformer.load_config(DEMO_YAML)), height=64, width=96, lean=True)
    assert r["semantic_inference_gflop_fvcore"] == pytest.approx(macs / 1e9)
    # the network alone does less than the whole inference graph (no semantic combine / upsampling); folding the
    # mask_features conv into the queries' embeddings (10 queries < 64 mask channels here) removes more
    assert 0 < r["forward_optimized_real_gflop"] < r["forward_reference_real_gflop"] < 2 * macs / 1e9
    assert r["forward_optimized_gflops"] == pytest.approx(r["forward_optimized_real_gflop"] / med["forward_optimized"])
    assert r["forward_lower_bound_seconds"] == pytest.approx(
        r["forward_optimized_real_gflop"] / r["conv_ceiling_gflops_fp32"]
    )
    assert r["ceiling_dtype"] == "fp32" and "conv_ceiling_gflops_bf16" not in r
    assert r["forward_optimized_fraction_of_ceiling"] == pytest.approx(
        r["forward_optimized_gflops"] / r["conv_ceiling_gflops_fp32"]
    )
    assert r["predict_label_agreement"] > 0.999  # fp32 folded model: rounding-level differences only


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
