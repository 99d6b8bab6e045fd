"""Audit: ONNX export of a Swin MaskFormer (the dynamic-shape graph kept a trace-time window count, so onnxruntime
failed with a Reshape error and `maskformer export onnx` ended in a traceback; now it falls back to a static graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import maskformer
from conftest import DEMO_YAML, TINY_SWIN
from maskformer.inference.export import export_onnx, verify_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.slow  # the dynamic trace of a Swin takes about a minute on one thread before it falls back
def test_swin_export_gives_a_graph_that_runs_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = maskformer.build_model(maskformer.load_config(DEMO_YAML, TINY_SWIN)).eval()
    report = export_onnx(model, tmp_path / "swin.onnx", height=96, width=128)
    assert report.path.is_file()
    assert max(report.max_abs_diff.values()) < 1e-3
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    assert max(verify_onnx(report.path, model, images).values()) < 1e-3
    if report.dynamic:  # a dynamic graph must also run at another size
        other = torch.randn(1, 3, 64, 160, generator=torch.Generator().manual_seed(6))
        assert np.isfinite(max(verify_onnx(report.path, model, other).values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.onnx"]  # no temporary file left
