"""PanopticEvaluator / SemanticPQEvaluator against an independent transcription of panopticapi's pq_compute.

The transcription below (``reference_pq``) is deliberately the obvious per-image dict-and-loop code of panopticapi's
``pq_compute_single_core`` + ``PQStat.pq_average``; the evaluator under test is vectorised. They share nothing.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from maskformer.evaluation import PanopticEvaluator, SemanticPQEvaluator, semantic_to_panoptic

CATEGORIES = [
    {"id": 1, "isthing": 1, "name": "a"},
    {"id": 2, "isthing": 1, "name": "b"},
    {"id": 5, "isthing": 1, "name": "c"},
    {"id": 9, "isthing": 1, "name": "d"},
    {"id": 10, "isthing": 0, "name": "e"},
    {"id": 17, "isthing": 0, "name": "f"},
    {"id": 30, "isthing": 0, "name": "g"},
]
THINGS = [c["id"] for c in CATEGORIES if c["isthing"]]
STUFF = [c["id"] for c in CATEGORIES if not c["isthing"]]


# ---------------------------------------------------------------------------------------------------------------
# reference: panopticapi's pq_compute, transcribed the straightforward way
# ---------------------------------------------------------------------------------------------------------------
OFFSET = 256 * 256 * 256


def reference_image(stat, pan_gt, gt_segments, pan_pred, pred_segments, categories, void=0):
    """One image of panopticapi's pq_compute_single_core. ``stat[cat] = {"iou", "tp", "fp", "fn"}``.

    panopticapi reads ground-truth areas from the JSON; the random cases carry none, so they are counted here.
    """
    gt_segms = {el["id"]: dict(el) for el in gt_segments}
    pred_segms = {el["id"]: dict(el) for el in pred_segments}
    for el in gt_segms.values():
        el["area"] = int((pan_gt == el["id"]).sum())

    pred_labels_set = {el["id"] for el in pred_segments}
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            if label == void:
                continue
            raise KeyError(f"segment {label} in PNG and not in JSON")
        pred_segms[label]["area"] = label_cnt
        pred_labels_set.remove(label)
        if pred_segms[label]["category_id"] not in categories:
            raise KeyError("unknown category")
    if len(pred_labels_set) != 0:
        raise KeyError("segments in JSON and not in PNG")

    pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_id = int(label // OFFSET)
        pred_id = int(label % OFFSET)
        gt_pred_map[(gt_id, pred_id)] = intersection

    gt_matched = set()
    pred_matched = set()
    for label_tuple, intersection in gt_pred_map.items():
        gt_label, pred_label = label_tuple
        if gt_label not in gt_segms:
            continue
        if pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (
            pred_segms[pred_label]["area"]
            + gt_segms[gt_label]["area"]
            - intersection
            - gt_pred_map.get((void, pred_label), 0)
        )
        iou = intersection / union
        if iou > 0.5:
            stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
            stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        stat[gt_info["category_id"]]["fn"] += 1

    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((void, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
        if intersection / pred_info["area"] > 0.5:
            continue
        stat[pred_info["category_id"]]["fp"] += 1


def reference_average(stat, categories, isthing):
    """PQStat.pq_average. Returns None where panopticapi divides by n = 0."""
    pq, sq, rq, n = 0, 0, 0, 0
    per_class = {}
    for label, label_info in categories.items():
        if isthing is not None and isthing != (label_info["isthing"] == 1):
            continue
        iou, tp, fp, fn = (stat[label][k] for k in ("iou", "tp", "fp", "fn"))
        if tp + fp + fn == 0:
            per_class[label] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        pq_class = iou / (tp + 0.5 * fp + 0.5 * fn)
        sq_class = iou / tp if tp != 0 else 0
        rq_class = tp / (tp + 0.5 * fp + 0.5 * fn)
        per_class[label] = {"pq": pq_class, "sq": sq_class, "rq": rq_class}
        pq += pq_class
        sq += sq_class
        rq += rq_class
    if n == 0:
        return None, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def reference_pq(cases, categories_list, void=0):
    categories = {c["id"]: c for c in categories_list}
    stat = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    for pan_pred, pred_segments, pan_gt, gt_segments in cases:
        reference_image(stat, pan_gt, gt_segments, pan_pred, pred_segments, categories, void=void)
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = reference_average(stat, categories, isthing)
        if name == "All":
            results["per_class"] = per_class
    return results, stat


def assert_same(ours, ref, stat, tol=1e-9):
    for name in ("All", "Things", "Stuff"):
        if name not in ref:
            continue
        expected = ref[name] or {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}  # n = 0: documented 0.0 instead of raise
        assert ours[name]["n"] == expected["n"], name
        for key in ("pq", "sq", "rq"):
            assert ours[name][key] == pytest.approx(expected[key], abs=tol), (name, key)
    assert ours["PQ"] == pytest.approx(100 * (ref["All"] or {"pq": 0.0})["pq"], abs=1e-7)
    for cat, values in ref["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert ours["per_class"][cat][key] == pytest.approx(values[key], abs=tol), (cat, key)
        for key in ("tp", "fp", "fn"):
            assert ours["per_class"][cat][key] == stat[cat][key], (cat, key)


# ---------------------------------------------------------------------------------------------------------------
# random cases: things, stuff, crowd, VOID; predictions derived from the ground truth by random edits
# ---------------------------------------------------------------------------------------------------------------
def _ids(rng, n, style):
    if style == "small":
        return rng.permutation(np.arange(1, n + 1))
    if style == "rgb":  # COCO-like random colours
        ids = np.unique(rng.integers(1, 256**3, size=n + 8))[:n]
        return rng.permutation(ids)
    return (rng.choice(np.arange(1, 64), size=n, replace=False) << 18).astype(np.int64)  # defeats low-bit hashing


def _rect(rng, h, w):
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    return slice(y0, y0 + rng.integers(2, h // 2 + 3)), slice(x0, x0 + rng.integers(2, w // 2 + 3))


def random_case(rng, *, crowd=True, pred_void=True, one_stuff_segment=False, absent_gt=True):
    """``(pan_pred, pred_segments, pan_gt, gt_segments)`` of size 16..64."""
    h, w = rng.integers(16, 65, size=2)
    # segment-index map: stuff regions from an upsampled coarse grid, then thing rectangles, then VOID (-1)
    gh, gw = rng.integers(1, 5, size=2)
    n_stuff = int(rng.integers(1, 5))
    coarse = rng.integers(0, n_stuff, size=(gh, gw))
    seg = np.kron(coarse, np.ones((h // gh + 1, w // gw + 1), dtype=np.int64))[:h, :w]
    cats = [int(rng.choice(STUFF)) for _ in range(n_stuff)]
    if one_stuff_segment:
        seg = np.array([cats.index(cats[s]) for s in range(n_stuff)])[seg]  # merge stuff segments of equal category
    for _ in range(rng.integers(0, 7)):
        seg[_rect(rng, h, w)] = len(cats)
        cats.append(int(rng.choice(THINGS)))
    for _ in range(rng.integers(0, 3)):
        seg[_rect(rng, h, w)] = -1
    if rng.random() < 0.05:
        seg[:] = -1  # all VOID
    present = [s for s in range(len(cats)) if (seg == s).any()]
    listed = present + ([s for s in range(len(cats)) if s not in present] if absent_gt and rng.random() < 0.2 else [])
    gt_ids = dict(zip(listed, _ids(rng, len(listed), rng.choice(["small", "rgb", "spread"])).tolist()))
    crowd_flags = {s: crowd and THINGS.count(cats[s]) and rng.random() < 0.2 for s in listed}
    if crowd and rng.random() < 0.05:  # only crowd
        crowd_flags = {s: True for s in listed}
    pan_gt = np.zeros((h, w), dtype=np.int64)
    for s in present:
        pan_gt[seg == s] = gt_ids[s]
    gt_segments = [{"id": gt_ids[s], "category_id": cats[s], "iscrowd": int(bool(crowd_flags[s]))} for s in listed]
    if (
        absent_gt and rng.random() < 0.1
    ):  # an id missing from the list: panopticapi treats it as neither VOID nor segment
        pan_gt[_rect(rng, h, w)] = 256**3 - 1 if 256**3 - 1 not in gt_ids.values() else 256**3 - 2

    # prediction: move the whole map a little, then merge/split/relabel/void segments and paint rectangles
    pseg = np.roll(seg, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1)) if rng.random() < 0.5 else seg.copy()
    pseg = np.where(pseg == -1, -1 if pred_void and rng.random() < 0.5 else len(cats), pseg)  # GT VOID: keep/predict
    pcats = {
        s: (c if rng.random() < 0.8 else int(rng.choice([k["id"] for k in CATEGORIES]))) for s, c in enumerate(cats)
    }
    pcats[len(cats)] = int(rng.choice(STUFF))
    nxt = len(cats) + 1
    for s in list(pcats):
        r = rng.random()
        if r < 0.1:
            pseg[pseg == s] = -1 if pred_void else rng.choice(list(pcats))
        elif r < 0.2:  # split: the lower half becomes a new segment
            ys, _ = np.nonzero(pseg == s)
            if len(ys):
                pseg[(pseg == s) & (np.arange(h)[:, None] >= np.median(ys))] = nxt
                pcats[nxt] = pcats[s]
                nxt += 1
    for _ in range(rng.integers(0, 3)):
        pseg[_rect(rng, h, w)] = nxt
        pcats[nxt] = int(rng.choice([k["id"] for k in CATEGORIES]))
        nxt += 1
    if pred_void and rng.random() < 0.3:
        pseg[_rect(rng, h, w)] = -1
    if pred_void and rng.random() < 0.05:
        pseg[:] = -1  # empty prediction
    if one_stuff_segment:  # one segment per stuff category (torchmetrics merges them anyway)
        first = {}
        for s in sorted(set(np.unique(pseg).tolist()) - {-1}):
            if pcats[s] in STUFF:
                pseg[pseg == s] = first.setdefault(pcats[s], s)
    p_present = sorted(set(np.unique(pseg).tolist()) - {-1})
    p_ids = dict(zip(p_present, _ids(rng, len(p_present), rng.choice(["small", "rgb", "spread"])).tolist()))
    pan_pred = np.zeros((h, w), dtype=np.int64)
    for s in p_present:
        pan_pred[pseg == s] = p_ids[s]
    pred_segments = [{"id": p_ids[s], "category_id": pcats[s]} for s in p_present]
    return pan_pred, pred_segments, pan_gt, gt_segments


def test_matches_panopticapi_transcription_on_1000_random_images():
    rng = np.random.default_rng(0)
    cases = [random_case(rng) for _ in range(1000)]
    total = PanopticEvaluator(categories=CATEGORIES)
    for case in cases:  # per image: catches errors that averaging over many images would blur
        one = PanopticEvaluator(categories=CATEGORIES)
        one.update(*case)
        total.update(*case)
        assert_same(one.compute(), *reference_pq([case], CATEGORIES))
    assert_same(total.compute(), *reference_pq(cases, CATEGORIES))
    # the random cases exercise every rule at least once
    _, stat = reference_pq(cases, CATEGORIES)
    assert all(sum(stat[c["id"]][k] for c in CATEGORIES) > 100 for k in ("tp", "fp", "fn"))


def test_matches_torchmetrics_where_conventions_agree():
    """torchmetrics' PanopticQuality differs from panopticapi in three conventions, so the cases avoid them:
    it has no crowd; it merges all segments of a stuff category; and it also removes predicted-VOID pixels from
    the union and ignores ground truth mostly covered by predicted VOID. Cases here have no crowd, one segment per
    stuff category and no VOID in predictions (VOID in the ground truth is fine). torchmetrics divides in float32."""
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(1)
    void_cat = 99
    compared = 0
    for _ in range(150):
        pan_pred, pred_segments, pan_gt, gt_segments = case = random_case(
            rng, crowd=False, pred_void=False, one_stuff_segment=True, absent_gt=False
        )
        if not pred_segments:
            continue

        def to_pairs(pan, segments):
            out = np.zeros(pan.shape + (2,), dtype=np.int64)
            out[..., 0] = void_cat
            for i, s in enumerate(segments):
                out[pan == s["id"]] = (s["category_id"], i + 1)
            return torch.from_numpy(out)[None]

        metric = PanopticQuality(things=set(THINGS), stuffs=set(STUFF), return_sq_and_rq=True)
        metric.update(to_pairs(pan_pred, pred_segments), to_pairs(pan_gt, gt_segments))
        pq, sq, rq = metric.compute().tolist()
        ours = PanopticEvaluator(categories=CATEGORIES)
        ours.update(*case)
        result = ours.compute()
        if result["All"]["n"] == 0:  # nothing counted: torchmetrics gives NaN, we give 0 (panopticapi raises)
            assert np.isnan(pq)
            continue
        assert (result["All"]["pq"], result["All"]["sq"], result["All"]["rq"]) == pytest.approx((pq, sq, rq), abs=1e-6)
        compared += 1
    assert compared > 100


def test_hand_computed_example():
    # 4x4. GT: person 1 (left 2 columns, 8 px), stuff 10 (right 2 columns, 8 px). Prediction: person 7 covers the
    # left 2 columns plus one pixel of the right (9 px), stuff 3 the other 7 px.
    gt = np.array([[1, 1, 2, 2]] * 4)
    pred = np.array([[7, 7, 7, 3]] + [[7, 7, 3, 3]] * 3)
    ev = PanopticEvaluator(categories=[{"id": 1, "isthing": 1}, {"id": 10, "isthing": 0}])
    ev.update(pred, [{"id": 7, "category_id": 1}, {"id": 3, "category_id": 10}],
              gt, [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 10, "iscrowd": 0}])  # fmt: skip
    r = ev.compute()
    # person: IoU = 8 / (9 + 8 - 8) = 8/9; stuff: IoU = 7 / (7 + 8 - 7) = 7/8; both TP, no FP/FN
    assert r["Things"] == pytest.approx({"pq": 8 / 9, "sq": 8 / 9, "rq": 1.0, "n": 1})
    assert r["Stuff"] == pytest.approx({"pq": 7 / 8, "sq": 7 / 8, "rq": 1.0, "n": 1})
    assert r["PQ"] == pytest.approx(100 * (8 / 9 + 7 / 8) / 2)
    assert r["PQ_th"] == pytest.approx(100 * 8 / 9) and r["PQ_st"] == pytest.approx(100 * 7 / 8)


def test_void_is_removed_from_union_and_void_predictions_are_not_fp():
    # GT: segment 1 (cat 1) = 4 px; VOID = 12 px. Pred 5 covers segment 1 and 4 VOID pixels -> IoU 4/(8+4-4-4) = 1.
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[0] = 1
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[:2] = 5
    pred[2:, :3] = 6  # 6 px, all on VOID: not FP
    pred[3, 3] = 8  # 1 px on VOID: not FP either
    ev = PanopticEvaluator(categories=[{"id": 1, "isthing": 1}])
    ev.update(pred, [{"id": i, "category_id": 1} for i in (5, 6, 8)], gt, [{"id": 1, "category_id": 1, "iscrowd": 0}])
    assert ev.compute()["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}


def test_empty_prediction_all_void_and_only_crowd_images():
    cats = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]
    gt = np.array([[1, 1], [2, 2]])
    gt_segments = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 0}]
    # empty prediction: both GT segments are FN -> both categories counted with PQ 0
    ev = PanopticEvaluator(categories=cats)
    ev.update(np.zeros((2, 2), dtype=np.int64), [], gt, gt_segments)
    r = ev.compute()
    assert r["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    assert r["per_class"][1]["fn"] == 1 and r["per_class"][2]["fn"] == 1
    # all-VOID ground truth: every prediction lies on VOID, nothing is counted
    ev = PanopticEvaluator(categories=cats)
    ev.update(gt, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}], np.zeros((2, 2), dtype=np.int64), [])
    assert ev.compute()["All"]["n"] == 0 and ev.compute()["PQ"] == 0.0
    # only crowd: a same-category prediction on the crowd is ignored, another category's is FP
    crowd = [{"id": 4, "category_id": 1, "iscrowd": 1}]
    ev = PanopticEvaluator(categories=cats)
    ev.update(np.full((2, 2), 9), [{"id": 9, "category_id": 1}], np.full((2, 2), 4), crowd)
    assert ev.compute()["All"]["n"] == 0
    ev.update(np.full((2, 2), 9), [{"id": 9, "category_id": 2}], np.full((2, 2), 4), crowd)
    assert ev.compute()["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}


def test_last_crowd_segment_of_a_category_wins_like_panopticapi():
    # two crowd segments of category 1: panopticapi's crowd dict keeps the last listed one (id 3)
    gt = np.array([[2, 2, 3, 3]])
    crowd = [{"id": 2, "category_id": 1, "iscrowd": 1}, {"id": 3, "category_id": 1, "iscrowd": 1}]
    cats = [{"id": 1, "isthing": 1}]
    for pred_on, fp in ((3, 0), (2, 1)):  # prediction on the last crowd: ignored; on the first: FP
        ev = PanopticEvaluator(categories=cats)
        ev.update(np.where(gt == pred_on, 5, 0), [{"id": 5, "category_id": 1}], gt, crowd)
        assert ev.compute()["per_class"][1]["fp"] == fp


def test_bad_input_raises():
    ev = PanopticEvaluator(categories=[{"id": 1, "isthing": 1}])
    gt, gts = np.ones((2, 2), dtype=np.int64), [{"id": 1, "category_id": 1, "iscrowd": 0}]
    with pytest.raises(ValueError, match="not listed"):
        ev.update(np.full((2, 2), 4), [], gt, gts)
    with pytest.raises(ValueError, match="absent"):
        ev.update(np.zeros((2, 2), dtype=np.int64), [{"id": 4, "category_id": 1}], gt, gts)
    with pytest.raises(ValueError, match="unknown category"):
        ev.update(np.full((2, 2), 4), [{"id": 4, "category_id": 3}], gt, gts)
    with pytest.raises(ValueError, match="shape"):
        ev.update(np.full((2, 3), 4), [{"id": 4, "category_id": 1}], gt, gts)
    with pytest.raises(ValueError, match="integer"):
        ev.update(np.full((2, 2), 4.0), [{"id": 4, "category_id": 1}], gt, gts)


def test_torch_inputs_equal_numpy_inputs():
    rng = np.random.default_rng(3)
    a, b = PanopticEvaluator(categories=CATEGORIES), PanopticEvaluator(categories=CATEGORIES)
    for _ in range(20):
        pp, ps, gp, gs = random_case(rng)
        a.update(pp, ps, gp, gs)
        b.update(torch.from_numpy(pp).int(), ps, torch.from_numpy(gp), gs)
    assert a.compute() == b.compute()


# ---------------------------------------------------------------------------------------------------------------
# PQ^St for semantic models
# ---------------------------------------------------------------------------------------------------------------
def test_semantic_pq_matches_the_original_tools_construction():
    """The original tool uses class ids as segment ids and the ignore label as VOID; ours shifts ids by one and
    uses 0 as VOID. Both must give the same numbers (all categories stuff)."""
    rng = np.random.default_rng(4)
    k, ignore = 6, 255
    cats = [{"id": c, "isthing": 0} for c in range(k)]
    ours = SemanticPQEvaluator(num_classes=k, ignore_label=ignore)
    cases = []
    for _ in range(300):
        h, w = rng.integers(8, 33, size=2)
        gt = np.kron(rng.integers(0, k, size=(4, 4)), np.ones((h // 4 + 1, w // 4 + 1), dtype=np.int64))[:h, :w]
        gt[rng.random((h, w)) < 0.1] = ignore
        pred = np.where(rng.random((h, w)) < 0.3, rng.integers(0, k, size=(h, w)), np.where(gt == ignore, 0, gt))
        ours.update(pred, gt)
        gt_segments = [{"id": c, "category_id": c, "iscrowd": 0} for c in np.unique(gt) if c != ignore]
        pred_segments = [{"id": c, "category_id": c} for c in np.unique(pred)]
        cases.append((pred, pred_segments, gt, gt_segments))
    ref, stat = reference_pq(cases, cats, void=ignore)
    result = ours.compute()
    assert_same(result, {"All": ref["All"], "Stuff": ref["Stuff"], "per_class": ref["per_class"]}, stat)
    assert result["All"] == result["Stuff"]
    assert 0 < result["PQ"] < 100


def test_semantic_to_panoptic():
    pan, segments = semantic_to_panoptic(np.array([[0, 3], [255, 3]]), num_classes=4, ignore_label=255)
    assert pan.tolist() == [[1, 4], [0, 4]]
    assert segments == [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 4, "category_id": 3, "iscrowd": 0}]
    with pytest.raises(ValueError, match="outside"):
        semantic_to_panoptic(np.array([[4]]), num_classes=4, ignore_label=255)


# ---------------------------------------------------------------------------------------------------------------
# torch.distributed: two gloo processes each see half the images
# ---------------------------------------------------------------------------------------------------------------
def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist

    from maskformer.evaluation import SemanticEvaluator

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    rng = np.random.default_rng(5)
    cases = [random_case(rng) for _ in range(40)]
    pan = PanopticEvaluator(categories=CATEGORIES)
    sem = SemanticEvaluator(num_classes=4, ignore_label=255)
    for i, case in enumerate(cases):
        if i % 2 == rank:
            pan.update(*case)
            sem.update(case[0] % 4, np.where(case[2] % 5 == 4, 255, case[2] % 5))
    pan.synchronize()
    sem.synchronize()
    pan.synchronize()  # a second call must not count twice
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"pan": pan.compute()["All"], "sem": sem.compute()["mIoU"]}, f)
    dist.destroy_process_group()


def test_synchronize_across_two_processes(tmp_path: Path):
    from maskformer.evaluation import SemanticEvaluator

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_distributed_worker, args=(r, str(tmp_path / "init"), str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    rng = np.random.default_rng(5)
    cases = [random_case(rng) for _ in range(40)]
    ref, _ = reference_pq(cases, CATEGORIES)
    sem = SemanticEvaluator(num_classes=4, ignore_label=255)
    for case in cases:
        sem.update(case[0] % 4, np.where(case[2] % 5 == 4, 255, case[2] % 5))
    import json

    for r in (0, 1):
        got = json.loads((tmp_path / f"{r}.json").read_text())
        assert got["pan"] == pytest.approx(ref["All"], abs=1e-12)
        assert got["sem"] == pytest.approx(sem.compute()["mIoU"], abs=1e-12)
