"""Semantic labels of a panoptic model (the original's resize-before-combine order) for large outputs run in strips of
output rows: a 4000 x 4000 image of a 133-class model held (Q + K) floats per output pixel (10 GB) before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maskformer.inference.postprocess.semantic as semantic
from maskformer.inference.postprocess import semantic_from_outputs, semantic_labels
from maskformer.inference.postprocess.row_resize import resize_rows, row_weights
from maskformer.inference.predictor import Predictor
from test_fidelity import _stub_with

SIZES = [(37, 53, 100, 141), (120, 90, 600, 451), (200, 150, 300, 225), (64, 80, 63, 79), (50, 40, 50, 40)]


@pytest.mark.parametrize("h, w, out_h, out_w", SIZES)
@pytest.mark.parametrize("step", [1, 7, 64])
def test_rows_equal_the_full_resize(h, w, out_h, out_w, step) -> None:
    x = torch.randn(5, h, w, generator=torch.Generator().manual_seed(h + w))
    full = F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    weights = row_weights(h, out_h)
    rows = torch.cat([resize_rows(x, weights, out_w, y0, min(out_h, y0 + step)) for y0 in range(0, out_h, step)], 1)
    assert rows.shape == full.shape
    # identical on the CPUs tested (module docstring); never more than an ulp or two of the values anywhere
    assert (rows - full).abs().max() <= 2 * torch.finfo(torch.float32).eps * x.abs().max()


def test_row_weights_are_the_kernels_own() -> None:
    """Resizing one-hot rows yields the kernel's own weights: the same rows, weights to the last bit of the source
    coordinate (its rounding is a fused multiply-add; 800 -> 4000 rows is where a plain product differs)."""
    h, out_h = 800, 4000
    probe = F.interpolate(torch.eye(h)[None, :, :, None], size=(out_h, 1), mode="bilinear", align_corners=False)
    probe = probe[0, :, :, 0]  # [source row, output row]
    weights = row_weights(h, out_h)
    inner = weights.first != weights.second  # (the last rows read the last source row twice)
    ys = torch.arange(out_h)[inner]
    assert torch.equal(probe[weights.first[inner], ys], weights.first_weight[inner])
    assert torch.equal(probe[weights.second[inner], ys], weights.second_weight[inner])
    assert inner.sum() > 0.99 * out_h


def _outputs(queries: int, classes: int, low: tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, queries, low[0] // 4, low[1] // 4, generator=g) * 4
    masks = F.interpolate(coarse, size=low, mode="bilinear", align_corners=False)  # smooth, as trained masks are
    return {"pred_logits": torch.randn(1, queries, classes + 1, generator=g) * 3, "pred_masks": masks}


@pytest.mark.parametrize("image_size, output_size", [((96, 120), (301, 377)), ((96, 128), (77, 100))])
def test_labels_in_strips_equal_the_full_order(monkeypatch, image_size, output_size) -> None:
    outputs = _outputs(12, 9, (24, 32))
    full = semantic_from_outputs(outputs, [image_size], [output_size], postprocess_before_inference=True)[0]
    monkeypatch.setattr(semantic, "_RESIZE_FLOATS", 1000)  # every output takes strips
    monkeypatch.setattr(semantic, "_STRIP_FLOATS", 21 * output_size[1] * 5)  # 5 rows a strip
    monkeypatch.setattr(semantic, "sem_seg_postprocess", _no_full_resize)
    labels = semantic_labels(outputs, [image_size], [output_size], postprocess_before_inference=True)[0]
    assert labels.shape == output_size and labels.dtype == torch.int64
    top2 = full.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5  # labels may differ only where two classes tie to float precision
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], full.argmax(0)[clear])


def _no_full_resize(*args, **kwargs):
    raise AssertionError("the full-size mask volume was built")


@pytest.mark.parametrize("optimize", [False, True])
def test_panoptic_model_semantic_predict_takes_strips(monkeypatch, optimize) -> None:
    """The user path: a panoptic model asked for semantic labels of a large image (Predictor, CLI, serve, eval)."""
    image = np.random.default_rng(5).integers(0, 256, (203, 271, 3), dtype=np.uint8)  # resized 40 x 53 for the model
    pred = Predictor(_stub_with(panoptic_on=True, before=False), optimize=optimize, task_default="semantic")
    assert pred.postprocess_before_inference
    want = pred.semantic_scores(image).argmax(0)  # the full volume: (Q + K) x 203 x 271 floats
    monkeypatch.setattr(semantic, "_RESIZE_FLOATS", 1000)
    monkeypatch.setattr(semantic, "_STRIP_FLOATS", 10 * 271 * 3)
    monkeypatch.setattr(semantic, "sem_seg_postprocess", _no_full_resize)
    labels = pred(image, task="semantic")
    assert labels.shape == (203, 271)
    assert (labels != want).float().mean() < 1e-3  # (only float-precision ties may differ)
