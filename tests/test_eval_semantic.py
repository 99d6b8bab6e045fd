"""SemanticEvaluator against a transcription of detectron2's SemSegEvaluator (2021 and current mIoU) and
torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskformer.evaluation import SemanticEvaluator


def reference_confusion(preds, gts, k, ignore):
    """(K+1) x (K+1), [pred, gt], ignored GT in the last column; built pixel-wise with np.add.at (not bincount)."""
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        gt = gt.astype(np.int64).copy()
        gt[gt == ignore] = k
        np.add.at(conf, (pred.ravel(), gt.ravel()), 1)
    return conf


def reference_d2(conf, formula):
    """detectron2 SemSegEvaluator.evaluate: v0.5/0.6 (2021) and >= 2022-07-06 (current), transcribed."""
    k = conf.shape[0] - 1
    acc = np.full(k, np.nan, dtype=np.float64)
    iou = np.full(k, np.nan, dtype=np.float64)
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = np.sum(conf[:-1, :-1], axis=0).astype(np.float64)
    class_weights = pos_gt / np.sum(pos_gt)
    pos_pred = np.sum(conf[:-1, :-1], axis=1).astype(np.float64)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    if formula == "d2_2021":
        iou_valid = (pos_gt + pos_pred) > 0
        iou[acc_valid] = tp[acc_valid] / union[acc_valid]
        miou = np.sum(iou[acc_valid]) / np.sum(iou_valid)
        fiou = np.sum(iou[acc_valid] * class_weights[acc_valid])
    else:
        iou_valid = np.logical_and(acc_valid, union > 0)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]
        miou = np.sum(iou[iou_valid]) / np.sum(iou_valid)
        fiou = np.sum(iou[iou_valid] * class_weights[iou_valid])
    macc = np.sum(acc[acc_valid]) / np.sum(acc_valid)
    pacc = np.sum(tp) / np.sum(pos_gt)
    return {"mIoU": 100 * miou, "fwIoU": 100 * fiou, "mACC": 100 * macc, "pACC": 100 * pacc}, 100 * iou, 100 * acc


def random_case(rng):
    """``(k, ignore, preds, gts)``: 1..3 maps of 16..64 px, blobs + noise, some classes only predicted."""
    k = int(rng.integers(1, 13))
    ignore = int(rng.choice([255, k, -1]))
    h, w = rng.integers(16, 65, size=2)
    preds, gts = [], []
    gt_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    for _ in range(rng.integers(1, 4)):
        coarse = rng.choice(gt_classes, size=(4, 4))
        gt = np.kron(coarse, np.ones((h // 4 + 1, w // 4 + 1), dtype=np.int64))[:h, :w]
        gt[rng.random((h, w)) < rng.choice([0.0, 0.1, 1.0], p=[0.3, 0.65, 0.05])] = ignore
        noise = rng.random((h, w)) < rng.uniform(0, 0.6)
        pred = np.where(noise, rng.integers(0, k, size=(h, w)), np.where(gt == ignore, 0, gt))
        preds.append(pred)
        gts.append(gt)
    return k, ignore, preds, gts


def test_matches_detectron2_transcription_on_1000_random_cases():
    rng = np.random.default_rng(0)
    predicted_only = 0
    for _ in range(1000):
        k, ignore, preds, gts = random_case(rng)
        conf = reference_confusion(preds, gts, k, ignore)
        if conf[:-1, :-1].sum() == 0:
            continue  # nothing labelled: covered by test_all_ignored
        pos_gt, pos_pred = conf[:-1, :-1].sum(0), conf[:-1, :-1].sum(1)
        predicted_only += int(((pos_gt == 0) & (pos_pred > 0)).any())
        for formula in ("d2_2021", "d2_current"):
            ev = SemanticEvaluator(num_classes=k, ignore_label=ignore, miou_formula=formula)
            if rng.random() < 0.5:
                ev.update(np.stack(preds), np.stack(gts))  # batch
            else:
                for p, g in zip(preds, gts):
                    ev.update(p, g)
            assert np.array_equal(ev.confusion_matrix, conf)
            got = ev.compute()
            ref, iou, acc = reference_d2(conf, formula)
            for key, value in ref.items():
                assert got[key] == pytest.approx(value, abs=1e-9), (formula, key)
            assert got["IoU"] == [None if np.isnan(v) else pytest.approx(v, abs=1e-9) for v in iou]
            assert got["ACC"] == [None if np.isnan(v) else pytest.approx(v, abs=1e-9) for v in acc]
    assert predicted_only > 100  # the case where the two formulas differ is well represented


def test_matches_torchmetrics_confusion_and_jaccard():
    """torchmetrics' confusion matrix must equal ours exactly; its macro Jaccard (which skips classes absent from
    both prediction and target) is the 2021 mIoU. torchmetrics computes IoU in float32, hence 1e-6."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_jaccard_index

    rng = np.random.default_rng(1)
    for _ in range(300):
        k, ignore, preds, gts = random_case(rng)
        if k < 2 or ignore == -1:
            continue
        p, g = torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))
        ev = SemanticEvaluator(num_classes=k, ignore_label=ignore)
        ev.update(p, g)
        if not (g != ignore).any():
            continue
        tm_conf = multiclass_confusion_matrix(p, g, num_classes=k, ignore_index=ignore, validate_args=False)
        assert np.array_equal(tm_conf.numpy(), ev.confusion_matrix[:k, :k].T)
        got = ev.compute()
        macro = multiclass_jaccard_index(
            p, g, num_classes=k, ignore_index=ignore, average="macro", validate_args=False
        ).item()
        assert got["mIoU"] == pytest.approx(100 * macro, abs=1e-4)
        per_class = multiclass_jaccard_index(
            p, g, num_classes=k, ignore_index=ignore, average=None, validate_args=False
        ).tolist()
        for ours, theirs in zip(got["IoU"], per_class):
            if ours is not None:
                assert ours == pytest.approx(100 * theirs, abs=1e-4)


def test_class_absent_from_ground_truth_but_predicted():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])
    # class 0: tp 1, gt 2, pred 1 -> IoU 1/2; class 1: IoU 2/2; class 2: predicted once, absent from GT
    old = SemanticEvaluator(num_classes=3, ignore_label=255)
    new = SemanticEvaluator(num_classes=3, ignore_label=255, miou_formula="d2_current")
    for ev in (old, new):
        ev.update(pred, gt)
    assert old.compute()["mIoU"] == pytest.approx(100 * (0.5 + 1.0) / 3)  # class 2 counts as 0
    assert new.compute()["mIoU"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    r = old.compute()
    assert r["IoU"] == [50.0, 100.0, None] and r["ACC"] == [50.0, 100.0, None]
    assert r["fwIoU"] == pytest.approx(100 * (0.5 * 0.5 + 1.0 * 0.5))
    assert r["mACC"] == pytest.approx(75.0) and r["pACC"] == pytest.approx(75.0)


def test_ignored_pixels_count_nowhere():
    gt = np.array([[0, 255, 255], [1, 1, 255]])
    pred = np.array([[0, 1, 0], [1, 1, 1]])  # wrong predictions only on ignored pixels
    ev = SemanticEvaluator(num_classes=2, ignore_label=255)
    ev.update(pred, gt)
    r = ev.compute()
    assert (r["mIoU"], r["fwIoU"], r["mACC"], r["pACC"]) == (100.0, 100.0, 100.0, 100.0)


def test_all_ignored_and_empty():
    ev = SemanticEvaluator(num_classes=3, ignore_label=255)
    ev.update(np.zeros((4, 4), dtype=np.int64), np.full((4, 4), 255))
    ev.update(np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=np.int64))
    r = ev.compute()
    assert all(np.isnan(r[k]) for k in ("mIoU", "mACC", "pACC"))
    assert r["IoU"] == [None, None, None] and r["ACC"] == [None, None, None]
    # fwIoU as detectron2's: a sum over no class is 0 (it was NaN here)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = reference_d2(ev.confusion_matrix, "d2_2021")[0]
    assert r["fwIoU"] == expected["fwIoU"] == 0.0


def test_bad_values_raise():
    ev = SemanticEvaluator(num_classes=3, ignore_label=255)
    with pytest.raises(ValueError, match="predicted label 3"):
        ev.update(np.array([[3]]), np.array([[0]]))
    with pytest.raises(ValueError, match="predicted label -1"):
        ev.update(np.array([[-1]]), np.array([[0]]))
    with pytest.raises(ValueError, match="ground-truth label 7"):
        ev.update(np.array([[0]]), np.array([[7]]))
    with pytest.raises(ValueError, match="ground-truth label 3 is neither"):  # K itself (it passed as ignored)
        ev.update(np.array([[0, 0]]), np.array([[0, 3]]))
    assert SemanticEvaluator(num_classes=3, ignore_label=3).update(np.array([[0]]), np.array([[3]])) is None
    with pytest.raises(ValueError, match="shape"):
        ev.update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        ev.update(np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="miou_formula"):
        SemanticEvaluator(num_classes=3, ignore_label=255, miou_formula="mean")
    assert ev.confusion_matrix.sum() == 0  # failed updates leave no trace


def test_streaming_state_is_constant_and_reset_works():
    rng = np.random.default_rng(2)
    ev = SemanticEvaluator(num_classes=5, ignore_label=255)
    state_bytes = sum(a.nbytes for a in vars(ev).values() if isinstance(a, np.ndarray))
    for _ in range(50):
        ev.update(torch.from_numpy(rng.integers(0, 5, (8, 8))), rng.integers(0, 5, (8, 8)).astype(np.uint8))
    assert sum(a.nbytes for a in vars(ev).values() if isinstance(a, np.ndarray)) == state_bytes
    assert ev.confusion_matrix.sum() == 50 * 64
    ev.synchronize()  # not distributed: the totals stay the same
    assert ev.confusion_matrix.sum() == 50 * 64
    ev.reset()
    assert ev.confusion_matrix.sum() == 0
