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


def test_an_interrupt_while_tracing_is_not_taken_for_a_tracing_failure(tmp_path, monkeypatch):
    """Ctrl-C while the any-size graph was traced (torch wraps the KeyboardInterrupt in its own error) was said as
    "the graph of any size failed", and the export went on to a fixed-size graph, once written before "interrupted"."""
    import maskformer.inference.export as export

    calls: list[bool] = []

    def traced(lean, example, tmp, opset, dynamic):
        calls.append(dynamic)
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("tracing failed") from None  # (torch's wrapping keeps the interrupt as the context)

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    monkeypatch.setattr(export, "_export", traced)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):  # (the write's guard gives the interrupt back: fileio._as_write_errors)
        export_onnx(model, tmp_path / "m.onnx", height=64, width=64, progress=said.append)
    assert calls == [True] and not any("failed" in line for line in said), said
    assert not (tmp_path / "m.onnx").exists() and list(tmp_path.iterdir()) == []
