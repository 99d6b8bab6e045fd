"""Inference: parity with the original's semantic and panoptic outputs (../shared fixtures), loop transcriptions,
panoptic rule unit cases, the fast semantic mode's tolerance, the per-pixel path and TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskformer.data.transforms import resize_shortest_edge_size
from maskformer.inference.postprocess import (
    panoptic_from_outputs,
    panoptic_inference,
    sem_seg_postprocess,
    semantic_from_outputs,
    semantic_from_sem_logits,
    semantic_inference,
    semantic_labels,
)
from maskformer.inference.tta import semantic_tta

PARITY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parity"
COCO_THINGS = set(range(80))


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not available")


def _cls_from_probs(rows: list[dict[int, float]], num_classes: int) -> torch.Tensor:
    """Class logits whose softmax is exactly the given probabilities (rest spread evenly)."""
    logits = torch.empty(len(rows), num_classes + 1, dtype=torch.float64)
    for i, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (num_classes + 1 - len(row))
        probs = torch.full((num_classes + 1,), rest, dtype=torch.float64)
        for c, p in row.items():
            probs[c] = p
        logits[i] = probs.log()
    return logits.float()


def _box_masks(boxes: list[tuple[int, int, int, int]], size=(8, 8)) -> torch.Tensor:
    """Mask logits +5 inside (y0, y1, x0, x1), -5 outside."""
    masks = torch.full((len(boxes), *size), -5.0)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 5.0
    return masks


# ---------------------------------------------------------------- semantic
def test_semantic_inference_loop_transcription():
    g = torch.Generator().manual_seed(0)
    cls, masks = torch.randn(5, 4, generator=g), torch.randn(5, 3, 6, generator=g)
    ref = torch.zeros(3, 3, 6, dtype=torch.float64)
    for q in range(5):
        probs = torch.exp(cls[q].double()) / torch.exp(cls[q].double()).sum()  # softmax over K+1 ...
        for c in range(3):  # ... then drop the no-object column, no renormalisation
            ref[c] += probs[c] * torch.sigmoid(masks[q].double())
    torch.testing.assert_close(semantic_inference(cls, masks).double(), ref, atol=1e-6, rtol=1e-6)


def test_sem_seg_postprocess_crop_and_bilinear():
    x = torch.full((1, 4, 5), 99.0)
    x[0, :2, :2] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out = sem_seg_postprocess(x, (2, 2), (4, 2))
    # align_corners=False, 2 -> 4 rows: sources -0.25 (clamped), 0.25, 0.75, 1.25 (clamped); columns unchanged.
    expected = torch.tensor([[[0.0, 1.0], [0.5, 1.5], [1.5, 2.5], [2.0, 3.0]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(sem_seg_postprocess(x, (4, 5), (4, 5)), x)


def test_semantic_exact_order_with_padding():
    """Original order, transcribed: upsample logits x4 to the padded size, einsum there, crop, resize the scores."""
    g = torch.Generator().manual_seed(1)
    out = {"pred_logits": torch.randn(2, 6, 5, generator=g), "pred_masks": torch.randn(2, 6, 8, 12, generator=g) * 3}
    image_sizes, output_sizes = [(30, 41), (32, 48)], [(45, 60), (20, 25)]
    ours = semantic_from_outputs(out, image_sizes, output_sizes)
    up = F.interpolate(out["pred_masks"], size=(32, 48), mode="bilinear", align_corners=False)
    for i in range(2):
        probs = out["pred_logits"][i].softmax(-1)[:, :-1]
        full = torch.einsum("qc,qhw->chw", probs, up[i].sigmoid())
        h, w = image_sizes[i]
        ref = F.interpolate(full[None, :, :h, :w], size=output_sizes[i], mode="bilinear", align_corners=False)[0]
        assert ours[i].shape == (4, *output_sizes[i])
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=1e-5)
    # Panoptic configs' order: crop and resize the logits first, then combine at the output size.
    before = semantic_from_outputs(out, image_sizes, output_sizes, postprocess_before_inference=True)
    for i in range(2):
        h, w = image_sizes[i]
        logits = F.interpolate(up[i : i + 1, :, :h, :w], size=output_sizes[i], mode="bilinear", align_corners=False)[0]
        ref = torch.einsum("qc,qhw->chw", out["pred_logits"][i].softmax(-1)[:, :-1], logits.sigmoid())
        torch.testing.assert_close(before[i], ref, atol=1e-5, rtol=1e-5)
        assert (before[i] - ours[i]).abs().max() > 1e-3  # the two orders really differ


@pytest.mark.parametrize(
    "variant", ["R50_ade150", "R101c_ade150", "swinT_ade150", "swinB_ade150", "R50_cocopan133_6enc"]
)
def test_semantic_matches_original(variant):
    _need(PARITY / f"{variant}.npz")
    data = np.load(PARITY / f"{variant}.npz")
    out = {"pred_logits": torch.from_numpy(data["pred_logits"]), "pred_masks": torch.from_numpy(data["pred_masks"])}
    before = variant.startswith("R50_coco")  # PANOPTIC_ON: the original postprocesses logits first
    scores = semantic_from_outputs(out, [(160, 224)], [(160, 224)], postprocess_before_inference=before)[0]
    np.testing.assert_allclose(scores.max(0).values.numpy(), data["sem_max"], atol=2e-4, rtol=0)
    assert np.array_equal(scores.argmax(0).numpy(), data["sem_argmax"].astype(np.int64))


def _smooth_outputs(seed: int, queries=100, classes=150, low=(128, 176)):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, queries, low[0] // 8, low[1] // 8, generator=g) * 8
    masks = F.interpolate(coarse, size=low, mode="bilinear", align_corners=False)
    return {"pred_logits": torch.randn(1, queries, classes + 1, generator=g) * 3, "pred_masks": masks}


def test_fast_mode_tolerance():
    """The numbers quoted in semantic_from_outputs' docstring (smooth mask logits, padded and resized)."""
    out = _smooth_outputs(0)
    args = ([(512, 683)], [(480, 640)])
    exact = semantic_from_outputs(out, *args, input_size=(512, 704))[0]
    fast = semantic_from_outputs(out, *args, input_size=(512, 704), fast=True)[0]
    diff = (exact - fast).abs()
    assert diff.max() < 0.25 and diff.mean() < 0.005
    assert (exact.argmax(0) == fast.argmax(0)).float().mean() > 0.97


def test_fast_mode_coordinates():
    """Near-linear mask logits (where sigmoid ~ linear) make both orders agree: any misplaced crop/resize would not."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    out = {
        "pred_logits": torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(2)),
        "pred_masks": torch.stack([0.01 * yy, 0.01 * xx, -0.005 * (xx + yy)])[None],
    }
    for image_size, output_size in [((61, 90), (61, 90)), ((61, 90), (122, 180)), ((50, 73), (97, 130))]:
        exact = semantic_from_outputs(out, [image_size], [output_size], input_size=(64, 96))[0]
        fast = semantic_from_outputs(out, [image_size], [output_size], input_size=(64, 96), fast=True)[0]
        torch.testing.assert_close(fast, exact, atol=2e-4, rtol=0)


def test_per_pixel_semantic_path():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 8, 8, generator=g)
    ours = semantic_from_outputs({"sem_logits": logits}, [(30, 29), (32, 32)], [(15, 20), (64, 64)])
    direct = semantic_from_sem_logits(logits, [(30, 29), (32, 32)], [(15, 20), (64, 64)])
    up = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)  # d2's head: x4, then postprocess
    ref0 = F.interpolate(up[0:1, :, :30, :29], size=(15, 20), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(ours[0], ref0)
    torch.testing.assert_close(direct[1], F.interpolate(up[1:2], size=(64, 64), mode="bilinear")[0])


@pytest.mark.parametrize("budget", [1, 3 * 97 * 130 + 5, 1 << 30])  # one class, 3 classes, all at once
def test_semantic_labels_in_class_chunks_equal_the_argmax_of_the_scores(monkeypatch, budget):
    """Large outputs take their labels a few classes at a time: the same labels as the argmax of the full scores,
    ties (equal classes here) going to the first class as in argmax."""
    import maskformer.inference.postprocess.semantic as post

    monkeypatch.setattr(post, "_RESIZE_FLOATS", budget)
    g = torch.Generator().manual_seed(5)
    masks = torch.randn(2, 6, 16, 24, generator=g)
    logits = torch.randn(2, 6, 8, generator=g)
    logits[:, :3, 1] += 4.0
    logits[:, :, 3] = logits[:, :, 1]  # classes 1 and 3 tie everywhere (and win where the first queries do)
    out = {"pred_logits": logits, "pred_masks": masks}
    sizes = ([(61, 90), (50, 73)], [(97, 130), (50, 73)])
    for fast in (False, True):
        want = [s.argmax(0) for s in semantic_from_outputs(out, *sizes, input_size=(64, 96), fast=fast)]
        got = semantic_labels(out, *sizes, input_size=(64, 96), fast=fast)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert not any((lab == 3).any() for lab in got) and any((lab == 1).any() for lab in got)
    sem = {"sem_logits": torch.randn(2, 7, 16, 24, generator=g)}
    want = [s.argmax(0) for s in semantic_from_outputs(sem, *sizes, input_size=(64, 96))]
    assert all(torch.equal(a, b) for a, b in zip(semantic_labels(sem, *sizes, input_size=(64, 96)), want))


# ---------------------------------------------------------------- panoptic: the original's outputs
def test_panoptic_synthetic_fixture():
    _need(PARITY / "panoptic_synthetic.npz")
    data = np.load(PARITY / "panoptic_synthetic.npz")
    ref = json.loads((PARITY / "panoptic_synthetic.json").read_text())
    pan, segments = panoptic_inference(
        torch.from_numpy(data["mask_cls"]),
        torch.from_numpy(data["mask_pred"]),
        thing_ids=COCO_THINGS,
        object_mask_threshold=ref["object_mask_threshold"],
        overlap_threshold=ref["overlap_threshold"],
    )
    assert pan.dtype == torch.int32
    assert np.array_equal(pan.numpy(), data["pan_seg"])
    assert segments == ref["segments_info"]


def test_panoptic_coco_model_outputs_all_void():
    _need(PARITY / "R50_cocopan133_6enc.npz")
    data = np.load(PARITY / "R50_cocopan133_6enc.npz")
    ref = json.loads((PARITY / "R50_cocopan133_6enc_panoptic.json").read_text())
    out = {"pred_logits": torch.from_numpy(data["pred_logits"]), "pred_masks": torch.from_numpy(data["pred_masks"])}
    (pan, segments), = panoptic_from_outputs(
        out, [(160, 224)], [(160, 224)], thing_ids=COCO_THINGS, object_mask_threshold=0.0, overlap_threshold=0.8
    )  # fmt: skip
    assert np.array_equal(pan.numpy(), data["pan_seg"]) and segments == ref["segments_info"] == []


# ---------------------------------------------------------------- panoptic: rule unit cases (K = 4, things {0, 1})
def _pan(cls, masks, threshold=0.8, overlap=0.8):
    return panoptic_inference(cls, masks, thing_ids={0, 1}, object_mask_threshold=threshold, overlap_threshold=overlap)


def test_panoptic_score_threshold_and_no_object():
    cls = _cls_from_probs([{0: 0.79}, {1: 0.81}, {4: 0.95}], num_classes=4)  # class 4 = no object
    pan, segments = _pan(cls, _box_masks([(0, 4, 0, 4), (4, 8, 4, 8), (0, 8, 0, 8)]))
    assert segments == [{"id": 1, "isthing": True, "category_id": 1}]
    # The only kept query owns every pixel: MaskFormer has no "& sigmoid >= 0.5" on the segment (Mask2Former has).
    assert (pan == 1).all()


def test_panoptic_no_detection_is_all_void():
    pan, segments = _pan(_cls_from_probs([{0: 0.5}, {4: 0.9}], 4), _box_masks([(0, 8, 0, 8), (0, 8, 0, 8)]))
    assert segments == [] and pan.shape == (8, 8) and int(pan.abs().sum()) == 0


def test_panoptic_overlap_rejection_leaves_void():
    # Query 0 (score .95) covers rows 0-3; query 1 (score .9) wants rows 2-7 (48 px) but keeps rows 4-7 (32 px):
    # 32/48 < 0.8 -> rejected, and its pixels stay VOID (they are not handed to another query).
    cls = _cls_from_probs([{0: 0.95}, {1: 0.9}], 4)
    pan, segments = _pan(cls, _box_masks([(0, 4, 0, 8), (2, 8, 0, 8)]))
    assert segments == [{"id": 1, "isthing": True, "category_id": 0}]
    assert (pan[:4] == 1).all() and (pan[4:] == 0).all()
    _, kept = _pan(cls, _box_masks([(0, 4, 0, 8), (2, 8, 0, 8)]), overlap=0.6)  # 0.667 >= 0.6 -> kept
    assert [s["id"] for s in kept] == [1, 2]


def test_panoptic_stuff_merging_and_unique_ids():
    # HF's id-collision case: queries [stuff 2, thing 0, stuff 2, thing 1] must give ids 1, 2, (1), 3.
    cls = _cls_from_probs([{2: 0.9}, {0: 0.9}, {2: 0.9}, {1: 0.9}], 4)
    pan, segments = _pan(cls, _box_masks([(0, 2, 0, 8), (2, 4, 0, 8), (4, 6, 0, 8), (6, 8, 0, 8)]))
    assert segments == [
        {"id": 1, "isthing": False, "category_id": 2},
        {"id": 2, "isthing": True, "category_id": 0},
        {"id": 3, "isthing": True, "category_id": 1},
    ]
    assert pan[:, 0].tolist() == [1, 1, 2, 2, 1, 1, 3, 3]
    # Two queries of one thing class stay two segments.
    _, things = _pan(_cls_from_probs([{0: 0.9}, {0: 0.9}], 4), _box_masks([(0, 4, 0, 8), (4, 8, 0, 8)]))
    assert [(s["id"], s["category_id"]) for s in things] == [(1, 0), (2, 0)]


def test_panoptic_query_order_ties_and_empty_masks():
    # Identical scores and masks: the first query owns every pixel; the second owns none and is skipped.
    # A kept query whose sigmoid never reaches 0.5 (original_area 0) is skipped too.
    cls = _cls_from_probs([{3: 0.9}, {1: 0.9}, {0: 0.99}], 4)
    masks = _box_masks([(0, 8, 0, 8), (0, 8, 0, 8), (0, 0, 0, 0)])
    masks[2] = -0.1  # sigmoid 0.475 < 0.5 everywhere, but 0.99 * 0.475 < 0.9 * 0.993 anyway
    pan, segments = _pan(cls, masks)
    assert segments == [{"id": 1, "isthing": False, "category_id": 3}] and (pan == 1).all()


def test_panoptic_from_outputs_resizes_logits_first():
    # A 2x2 checkerboard of logits +-4: resizing logits then thresholding gives sharp quadrants; resizing
    # probabilities would too, so check the values directly against a transcription of the order.
    cls = _cls_from_probs([{0: 0.9}, {1: 0.9}], 4)[None]
    low = torch.tensor([[[4.0, -4.0], [-4.0, 4.0]], [[-4.0, 4.0], [4.0, -4.0]]])[None]
    (pan, segments), = panoptic_from_outputs(
        {"pred_logits": cls, "pred_masks": low}, [(7, 8)], [(14, 16)], thing_ids={0, 1}, object_mask_threshold=0.8,
        overlap_threshold=0.5,
    )  # fmt: skip
    up = F.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)[:, :, :7, :8]
    logits = F.interpolate(up, size=(14, 16), mode="bilinear", align_corners=False)[0]
    ref, ref_segments = _pan(cls[0], logits, overlap=0.5)
    assert torch.equal(pan, ref) and segments == ref_segments and pan.shape == (14, 16)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("image_size, output_size", [((61, 64), (61, 64)), ((50, 63), (97, 120))])
def test_panoptic_from_outputs_resizes_only_kept_queries_with_the_same_result(image_size, output_size, channels_last):
    # 12 queries, about half kept: the result equals resizing every query first (the original's order) and then
    # running the rule; with no query kept the map is all VOID at the output size.
    g = torch.Generator().manual_seed(sum(output_size))
    cls = torch.randn(1, 12, 6, generator=g) * 4
    masks = torch.randn(1, 12, 16, 16, generator=g) * 3
    if channels_last:
        masks = masks.contiguous(memory_format=torch.channels_last)
    kw = {"thing_ids": {0, 1}, "object_mask_threshold": 0.6, "overlap_threshold": 0.5}
    (pan, segments), = panoptic_from_outputs(
        {"pred_logits": cls, "pred_masks": masks}, [image_size], [output_size], **kw
    )  # fmt: skip
    up = F.interpolate(masks.contiguous(), size=(64, 64), mode="bilinear", align_corners=False)[0]
    ref, ref_segments = panoptic_inference(cls[0], sem_seg_postprocess(up, image_size, output_size), **kw)
    kept = int(((cls[0].softmax(-1).max(-1).values > 0.6) & (cls[0].argmax(-1) != 5)).sum())
    assert 0 < kept < 12 and len(segments) > 0
    assert torch.equal(pan, ref) and segments == ref_segments
    (void, none), = panoptic_from_outputs(
        {"pred_logits": cls, "pred_masks": masks}, [image_size], [output_size], **{**kw, "object_mask_threshold": 1.0}
    )  # fmt: skip
    assert none == [] and void.shape == output_size and void.dtype == torch.int32 and int(void.abs().sum()) == 0


# ---------------------------------------------------------------- TTA and resizing
@pytest.mark.parametrize("budget", [1, 3 * 64 * 64])  # one kept query at a time, three at a time
@pytest.mark.parametrize("resized", [False, True])
def test_panoptic_of_large_outputs_in_query_chunks_equals_all_at_once(monkeypatch, budget, resized):
    """Outputs over the budget take the kept queries a few at a time: the same map and segments as the rule on every
    kept query's map at once. Unresized, query 9 is a copy of query 2 (an exact tie: the first one owns the pixels,
    as in argmax); a resize of a few maps can round differently from one of all maps (1 ulp, by the number of maps),
    so there the queries are distinct."""
    import maskformer.inference.postprocess.panoptic as panoptic

    g = torch.Generator().manual_seed(0)
    cls = torch.randn(1, 12, 6, generator=g) * 4
    masks = torch.randn(1, 12, 16, 16, generator=g) * 3
    if not resized:
        cls[0, 9], masks[0, 9] = cls[0, 2], masks[0, 2]
    kw = {"thing_ids": {0, 1}, "object_mask_threshold": 0.3, "overlap_threshold": 0.0}  # (8 queries kept)
    sizes = ([(50, 63)], [(97, 120)]) if resized else ([(64, 64)], [(64, 64)])
    args = ({"pred_logits": cls, "pred_masks": masks}, *sizes)
    (want, want_segments), = panoptic_from_outputs(*args, **kw)  # fmt: skip
    calls = []
    monkeypatch.setattr(panoptic, "_CHUNK_FLOATS", budget)
    chunked = panoptic._panoptic_in_chunks
    monkeypatch.setattr(panoptic, "_panoptic_in_chunks", lambda *a, **k: calls.append(1) or chunked(*a, **k))
    (pan, segments), = panoptic_from_outputs(*args, **kw)  # fmt: skip
    assert calls and torch.equal(pan, want) and segments == want_segments and len(segments) > 2


def test_shortest_edge_size_hand_computed():
    assert resize_shortest_edge_size(480, 640, 512, 2048) == (512, 683)  # 640 * 512/480 = 682.67
    assert resize_shortest_edge_size(640, 480, 512, 2048) == (683, 512)
    assert resize_shortest_edge_size(100, 1000, 512, 2048) == (205, 2048)  # 512 x 5120 capped: x0.4 -> 204.8
    assert resize_shortest_edge_size(512, 512, 512, 2048) == (512, 512)


def test_semantic_tta_scales_flip_and_mean():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :, 0] = np.linspace(0, 255, 60).astype(np.uint8)[None]  # red grows left -> right
    calls = []

    def run(view: np.ndarray, size):
        calls.append((view.shape[:2], bool(view[0, 0, 0] > view[0, -1, 0])))
        profile = torch.from_numpy(view[0, :, 0].astype(np.float32))
        profile = F.interpolate(profile[None, None], size=size[1], mode="linear", align_corners=False)[0, 0]
        return torch.stack([torch.full(size, float(view.shape[0])), profile[None].expand(size)])

    scores = semantic_tta(run, image, min_sizes=[20, 80], max_size=1000, flip=True, output_size=(10, 30))
    assert [c[0] for c in calls] == [(20, 30), (20, 30), (80, 120), (80, 120)]
    assert [c[1] for c in calls] == [False, True, False, True]  # every other view is mirrored
    assert scores.shape == (2, 10, 30)
    torch.testing.assert_close(scores[0], torch.full((10, 30), 50.0))  # mean of view heights 20, 20, 80, 80
    assert (scores[1, :, 1:] >= scores[1, :, :-1]).all() and scores[1, 0, -1] > scores[1, 0, 0] + 150  # flipped back
    single = semantic_tta(run, image, min_sizes=[40], max_size=1000, flip=False)
    assert single.shape == (2, 40, 60) and calls[-1] == ((40, 60), False)
