"""benchmarks/suite.py (`make perf`) runs end to end and reports every part (slow: `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_suite_reports_every_part_for_a_small_image(tmp_path):
    report = tmp_path / "report.md"
    cmd = [sys.executable, str(ROOT / "benchmarks/suite.py"), "--models", "r50", "--reps", "1", "--size", "64"]
    out = subprocess.run([*cmd, "--output", str(report)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = report.read_text()
    for part in ("semantic_b1", "semantic_b4", "panoptic_b1", "forward"):
        assert f"| r50 | {part} |" in text
    assert "ours_default" in text and "onnxruntime" in text and "differing pixels" in text


def test_suite_rejects_a_bad_size_an_unknown_model_and_a_negative_pause(tmp_path):
    # (--reps 0 failed after building the models; an --output in no folder after the whole run)
    bad = (["--size", "100"], ["--models", "r18"], ["--pause", "-1"], ["--reps", "0"],
           ["--output", str(tmp_path / "no" / "report.md")], ["--output", str(tmp_path)])  # fmt: skip
    for args in bad:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks/suite.py"), *args], capture_output=True, text=True)
        assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.strip().splitlines()[-1].startswith("suite.py: error: "), out.stderr  # (after the usage)


def test_compare_transformers_says_bad_options_before_it_starts(tmp_path):
    """An unknown part ran nothing and exited 0; a missing --config, 0 rounds or an --output in no folder ended in a
    traceback (the last one after the whole run)."""
    bad = {
        ("--parts", "predcit"): "--parts: choose from",
        ("--config", str(tmp_path / "nope.yaml")): "nope.yaml: no such file",
        ("--parts", "train", "--train-rounds", "0"): "--train-rounds must be at least 1",
        ("--reps", "0"): "--reps must be at least 1",
        ("--size", "50"): "--size must be a positive multiple of 32",
        ("--output", str(tmp_path / "no" / "r.md")): "its folder does not exist",
        ("--output", str(tmp_path)): "is a folder; give a file name",
    }
    for args, said in bad.items():
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks/compare_transformers.py"), *args],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)


@pytest.mark.slow
def test_compare_transformers_inference_runs_on_every_cpu(tmp_path):
    """On a CPU without bfloat16 instructions the inference parts ended in a traceback (bf16 is refused there): they
    leave the bf16 variants out, as suite.py does."""
    from maskformer.inference.accelerate.onednn import native_bf16

    report = tmp_path / "r.md"
    cmd = [sys.executable, str(ROOT / "benchmarks/compare_transformers.py"), "--reps", "1", "--size", "64", "--parts",
           "forward", "--output", str(report)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = report.read_text()
    assert "| forward | ours_fp32 |" in text and ("| forward | ours_bf16 |" in text) == native_bf16(), text
    assert "- Machine: " in text and "torch threads" in text
