"""What a prediction becomes for people and programs: the overlay picture, the label file, the segment list.

One function, ``render``, used by ``maskformer predict`` (files), ``maskformer serve`` (JSON) and video prediction
(frames), so the three show the same thing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from maskformer.inference.visualize import id2rgb, overlay, panoptic_picture, segment_colors, semantic_picture

__all__ = ["Rendered", "dataset_ids", "label_file_values", "render"]


@dataclass
class Rendered:
    """``overlay``: image + colours (+ legend unless ``legend=False``); ``label``: the label file's pixels (semantic:
    class value per pixel, uint8 or uint16, see ``label_file_values``; panoptic: COCO-panoptic id PNG, RGB);
    ``segment_ids``: int32 [H, W] segment id per pixel (0 = none) for ``segments`` = [{"id", "label",
    "category_id", "isthing", "area", "color"}]."""

    overlay: Image.Image
    label: np.ndarray
    segment_ids: np.ndarray
    segments: list[dict]


def render(
    image: np.ndarray,
    result: object,
    task: str,
    class_names: Sequence[str],
    colors: np.ndarray,
    *,
    title: str = "",
    legend: bool = True,
    label_values: Sequence[int] | None = None,
    thing_ids: Collection[int] = (),
) -> Rendered:
    """Turn a Predictor result (semantic label map [H, W], or (panoptic map, segments_info)) on ``image`` (uint8 HWC)
    into pictures and a segment list. ``label_values``: the value of each class in the semantic label file (default:
    its position; see ``label_file_values``); ``thing_ids``: the classes a semantic segment reports as things."""
    colors = np.asarray(colors, dtype=np.uint8)
    if task == "semantic":
        labels = np.asarray(result, dtype=np.int64)
        ids, areas = np.unique(labels, return_counts=True)
        segments = [
            {"id": int(c) + 1, "label": class_names[c], "category_id": int(c), "isthing": c in thing_ids,
             "area": int(a), "color": [int(v) for v in colors[c]]}
            for c, a in sorted(zip(ids.tolist(), areas.tolist()), key=lambda t: -t[1])
        ]  # fmt: skip
        picture = (
            semantic_picture(image, labels, class_names, colors, title=title)
            if legend
            else Image.fromarray(overlay(image, labels, colors))
        )
        values = np.asarray(label_values if label_values is not None else range(len(class_names)), dtype=np.int64)
        label = values[labels].astype(np.uint8 if values.max(initial=0) < 256 else np.uint16)
        return Rendered(picture, label, (labels + 1).astype(np.int32), segments)
    pan, info = result
    pan = np.asarray(pan, dtype=np.int32)
    areas = np.bincount(pan.ravel(), minlength=max([s["id"] for s in info], default=0) + 1)
    drawn = segment_colors(info, colors)
    segments = [
        {"id": int(s["id"]), "label": class_names[s["category_id"]], "category_id": int(s["category_id"]),
         "isthing": bool(s["isthing"]), "area": int(areas[s["id"]]), "color": drawn[int(s["id"])],
         **({"score": float(s["score"])} if "score" in s else {})}
        for s in info
    ]  # fmt: skip
    if legend:
        picture = panoptic_picture(image, pan, info, class_names, colors, title=title)
    else:
        table = np.zeros((int(pan.max()) + 1 if pan.size else 1, 3), dtype=np.uint8)
        for sid, c in drawn.items():
            table[sid] = c
        picture = Image.fromarray(overlay(image, np.where(pan > 0, pan, -1), table))
    return Rendered(picture, id2rgb(pan), pan, segments)


def label_file_values(predictor: object) -> list[int] | None:
    """The value each class takes in a semantic label file: for a model of a folder dataset whose ``classes.json``
    gives ids other than the positions, those ids (what the dataset's own label files hold, so a prediction can be
    scored against them); otherwise None (the position 0..K-1, as the shipped datasets' prepared label files)."""
    cfg, meta = getattr(predictor, "cfg", None), getattr(predictor, "meta", None)
    if cfg is None or meta is None or cfg.data.dataset != "folder":
        return None
    to_id = meta.contiguous_to_dataset_id
    values = [int(to_id.get(i, i)) for i in range(meta.num_classes)]
    return None if values == list(range(len(values))) else values


def dataset_ids(predictor: object) -> list[int]:
    """The dataset's own category id of each class position (COCO: 1..200 with gaps; a folder dataset: its
    ``classes.json`` ids; otherwise the position): what ``predictions.json`` and the serve API call category_id."""
    to_id = dict(getattr(getattr(predictor, "meta", None), "contiguous_to_dataset_id", None) or {})
    return [int(to_id.get(i, i)) for i in range(len(predictor.class_names))]
