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


def test_suite_rejects_a_bad_size_an_unknown_model_and_a_negative_pause():
    for args in (["--size", "100"], ["--models", "r18"], ["--pause", "-1"]):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks/suite.py"), *args], capture_output=True, text=True)
        assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr
