"""Semantic segmentation metrics from a streamed confusion matrix, as detectron2's ``SemSegEvaluator``.

The confusion matrix has detectron2's layout: ``(K+1) x (K+1)`` int64, rows = predicted class, columns = ground
truth class, the extra last column collecting ground-truth pixels with the ignore label. Only the ``K x K`` block
enters the metrics, so ignored pixels count nowhere. Memory is O(K^2) whatever the number of images.

Two mIoU formulas exist because detectron2 changed it on 2022-07-06 (commit f3c1bc19):

* ``"d2_2021"`` (default; what the MaskFormer paper used): per-class IoU is defined for classes present in the ground
  truth, and the mean divides their sum by the number of classes present in the ground truth *or* the predictions, so
  a class predicted but absent from the ground truth counts as 0.
* ``"d2_current"``: the mean over classes present in the ground truth only.

They agree whenever every predicted class also occurs in the ground truth (e.g. on ADE20K-150 val).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._util import as_int_array
from .reduce import all_reduce_sum

MIOU_FORMULAS: tuple[str, ...] = ("d2_2021", "d2_current")


class SemanticEvaluator:
    """Streamed mIoU / fwIoU / mACC / pACC.

    Usage: ``reset()``; ``update(pred, gt)`` per image or batch; ``synchronize()`` under torch.distributed;
    ``compute()``. ``update`` after ``synchronize`` is allowed: the gathered totals are dropped and recomputed
    by the next ``synchronize``, so nothing is ever counted twice.
    """

    def __init__(self, *, num_classes: int, ignore_label: int, miou_formula: str = "d2_2021") -> None:
        for name, value in (("num_classes", num_classes), ("ignore_label", ignore_label)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if miou_formula not in MIOU_FORMULAS:
            raise ValueError(f"miou_formula must be one of {MIOU_FORMULAS}, got {miou_formula!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.miou_formula = miou_formula
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        k1 = self.num_classes + 1
        self._conf = np.zeros((k1, k1), dtype=np.int64)
        self._synced: np.ndarray | None = None

    @property
    def confusion_matrix(self) -> np.ndarray:
        """int64 ``[K+1, K+1]``, ``[pred, gt]``; the last column holds ignored ground-truth pixels (a copy)."""
        return (self._conf if self._synced is None else self._synced).copy()

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image or a batch.

        Args:
            pred: int ``[H, W]`` or ``[B, H, W]`` (numpy or torch), values in ``[0, K)``.
            gt: int, same shape; values in ``[0, K)`` or ``ignore_label``.

        Raises:
            ValueError: shapes differ, a prediction is outside ``[0, K)``, or a ground-truth value is neither a class
                nor the ignore label (detectron2 would silently miscount such values).
        """
        p = as_int_array(pred, name="pred")
        g = as_int_array(gt, name="gt")
        if p.shape != g.shape:
            raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}")
        if p.size == 0:
            return
        k = self.num_classes
        p_min, p_max = int(p.min()), int(p.max())
        if p_min < 0 or p_max >= k:
            bad = p_min if p_min < 0 else p_max
            raise ValueError(f"predicted label {bad} outside [0, {k})")
        g = g.astype(np.int64, copy=False)
        ignored = g == self.ignore_label
        outside = ((g < 0) | (g >= k)) & ~ignored  # (K itself too: it would count as ignored below)
        if outside.any():
            bad = int(g[outside].flat[0])
            raise ValueError(
                f"ground-truth label {bad} is neither in [0, {k}) nor the ignore label {self.ignore_label}"
            )
        g = np.where(ignored, k, g)
        index = p.astype(np.int64, copy=False).ravel() * (k + 1) + g.ravel()
        self._conf += np.bincount(index, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
        self._synced = None

    def synchronize(self) -> None:
        """Sum the confusion matrices of all torch.distributed processes (no-op when not initialised)."""
        self._synced = all_reduce_sum(self._conf)

    def compute(self) -> dict[str, Any]:
        """Metrics over everything seen (after ``synchronize``: over all processes).

        Returns:
            ``mIoU``, ``fwIoU``, ``mACC``, ``pACC``: floats in percent (when no labelled pixel was seen, NaN but
            fwIoU 0, as detectron2's); ``IoU``, ``ACC``: lists of length K in percent, ``None`` for a class without
            ground-truth pixels (detectron2 reports NaN there; None keeps metrics.json valid JSON); ``miou_formula``:
            the name.
        """
        conf = self._conf if self._synced is None else self._synced
        return semantic_metrics(conf, miou_formula=self.miou_formula)


def semantic_metrics(conf: np.ndarray, *, miou_formula: str = "d2_2021") -> dict[str, Any]:
    """Metrics from a detectron2-layout confusion matrix ``[K+1, K+1]`` (see ``SemanticEvaluator.compute``)."""
    if miou_formula not in MIOU_FORMULAS:
        raise ValueError(f"miou_formula must be one of {MIOU_FORMULAS}, got {miou_formula!r}")
    block = conf[:-1, :-1].astype(np.float64)
    tp = np.diag(block)
    pos_gt = block.sum(axis=0)
    pos_pred = block.sum(axis=1)
    union = pos_gt + pos_pred - tp
    in_gt = pos_gt > 0
    total = pos_gt.sum()

    acc = np.full(tp.shape, np.nan)
    iou = np.full(tp.shape, np.nan)
    acc[in_gt] = tp[in_gt] / pos_gt[in_gt]
    # union > 0 wherever pos_gt > 0, so both formulas define per-class IoU on the same classes; they differ only
    # in the denominator of the mean.
    iou[in_gt] = tp[in_gt] / union[in_gt]
    n_iou = int(in_gt.sum()) if miou_formula == "d2_current" else int(((pos_gt + pos_pred) > 0).sum())

    with np.errstate(invalid="ignore", divide="ignore"):
        miou = iou[in_gt].sum() / n_iou if n_iou else np.nan
        macc = acc[in_gt].sum() / in_gt.sum() if in_gt.any() else np.nan
        fwiou = (iou[in_gt] * (pos_gt[in_gt] / total)).sum()  # (0 with no labelled pixel: detectron2 sums none)
        pacc = tp.sum() / total if total > 0 else np.nan

    def per_class(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else 100.0 * float(v) for v in values]

    return {
        "mIoU": 100.0 * float(miou),
        "fwIoU": 100.0 * float(fwiou),
        "mACC": 100.0 * float(macc),
        "pACC": 100.0 * float(pacc),
        "IoU": per_class(iou),
        "ACC": per_class(acc),
        "miou_formula": miou_formula,
    }
