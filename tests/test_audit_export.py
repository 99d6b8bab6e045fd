"""Audit: ONNX export of a Swin MaskFormer. The dynamic-shape graph failed in onnxruntime with a Reshape error at
every size whose token grid is not a multiple of the window: the window padding ``(-h) % ws`` and the window count
``-(-h // ws)`` have negative operands, which ONNX's Mod and Div truncate towards zero (Python floors), so the graph
padded by a negative amount. `maskformer export onnx` fell back to a static graph; now the dynamic one runs."""

from __future__ import annotations

import pytest
import torch

import maskformer
from conftest import DEMO_YAML, TINY_SWIN
from maskformer.inference.export import export_onnx, verify_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_swin_export_is_dynamic_and_runs_at_sizes_that_need_window_padding(tmp_path):
    torch.manual_seed(0)
    model = maskformer.build_model(maskformer.load_config(DEMO_YAML, TINY_SWIN)).eval()
    report = export_onnx(model, tmp_path / "swin.onnx", height=96, width=128)
    assert report.path.is_file() and report.dynamic
    assert max(report.max_abs_diff.values()) < 1e-3
    # token grids 24x32, 16x40, 40x56, 56x56 at 1/4: padded to the window 7 differently in each direction
    for seed, (h, w) in enumerate([(96, 128), (64, 160), (160, 224), (224, 224)]):
        images = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(5 + seed))
        assert max(verify_onnx(report.path, model, images).values()) < 1e-3, (h, w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.onnx"]  # no temporary file left
