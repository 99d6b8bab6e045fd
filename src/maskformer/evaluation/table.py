"""Plain-text tables of evaluation results for terminals and logs."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any


def _width(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text
    )


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others; floats with 2 decimals, ``None`` as ``-``."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    cells = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(header))]

    def pad(c: str, w: int, left: bool) -> str:
        space = " " * (w - _width(c))
        return c + space if left else space + c

    def line(r: list[str]) -> str:
        return "  ".join(pad(c, w, i == 0) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def format_panoptic_table(result: Mapping[str, Any]) -> str:
    """PQ/SQ/RQ (percent) and n for All/Things/Stuff from a ``PanopticEvaluator.compute()`` dict."""
    rows = [
        [name, 100.0 * result[name]["pq"], 100.0 * result[name]["sq"], 100.0 * result[name]["rq"], result[name]["n"]]
        for name in ("All", "Things", "Stuff")
        if name in result
    ]
    return format_table(["", "PQ", "SQ", "RQ", "n"], rows)


def format_semantic_table(result: Mapping[str, Any], class_names: Sequence[str] | None = None) -> str:
    """Summary metrics (with the paper's PQ^St when ``result`` has ``PQ_St``), then per-class IoU/ACC (percent) of
    the classes with ground-truth pixels; a line counts the others (all 133 COCO rows for a 3-image set were mostly
    ``-``), which metrics.json lists as null."""
    rows = [[k, result[k]] for k in ("mIoU", "fwIoU", "mACC", "pACC")]
    if isinstance(result.get("PQ_St"), Mapping):
        rows += [[f"{k}^St", result["PQ_St"][k]] for k in ("PQ", "SQ", "RQ") if k in result["PQ_St"]]
    summary = format_table(["metric", "value"], rows)
    names = class_names if class_names is not None else [str(i) for i in range(len(result["IoU"]))]
    rows = [[n, i, a] for n, i, a in zip(names, result["IoU"], result["ACC"]) if i is not None or a is not None]
    per_class = format_table(["class", "IoU", "ACC"], rows)
    absent = len(result["IoU"]) - len(rows)
    if not rows:  # (mIoU and pACC are nan: nothing to average)
        per_class += "\n(no ground-truth pixel of any class: every label pixel is the ignore value)"
    elif absent:
        per_class += f"\n({absent} of {len(result['IoU'])} classes without ground-truth pixels are left out)"
    return f"{summary}\n\n{per_class}"
