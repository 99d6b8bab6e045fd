"""Dataset mappers: turn a raw sample (numpy arrays as read from disk) into a training or test record.

A mapper is called as ``mapper(raw, rng)`` with a ``numpy.random.Generator`` (all random choices come from it, so
a sample's augmentation is a function of its seed). ``raw`` holds ``image`` (uint8 ``[H, W, 3]`` RGB),
``sem_seg`` (``[H, W]`` ints or None), ``pan_seg`` (``[H, W]`` int64 segment ids or None), ``segments_info``
(list or None), ``file_name``, ``height``, ``width`` and any extra keys (passed through).

The returned record has ``image`` uint8 ``[3, h, w]``, ``labels`` int64 ``[N]``, ``masks`` bool ``[N, h, w]``,
``height``/``width`` (original size, for evaluation), ``file_name``, ``aug`` (what was drawn), and ``sem_seg`` /
``pan_seg`` int64 tensors and ``segments_info`` when the sample has them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .color import ColorAugSSD
from .targets import panoptic_targets, semantic_targets
from .transforms import (
    absolute_range_crop,
    category_area_crop,
    choose_short_side,
    pad_to,
    resize_ids,
    resize_image,
    resize_label,
    resize_shortest_edge_size,
)

__all__ = ["SemanticTrainMapper", "PanopticTrainMapper", "DETRPanopticTrainMapper", "TestMapper", "make_record"]

_RAW_KEYS = ("image", "sem_seg", "pan_seg", "segments_info")


def _tensor(a: np.ndarray, dtype: type | None = None) -> torch.Tensor:
    """A C-contiguous tensor of ``a``: an axis of length 1 of a flipped view keeps its negative stride through
    ``np.ascontiguousarray`` (already contiguous to numpy), which ``torch.from_numpy`` refuses (a 1-pixel crop)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return torch.from_numpy(a.copy() if any(st < 0 for st in a.strides) else a)


def make_record(
    raw: dict[str, Any],
    image: np.ndarray,
    sem_seg: np.ndarray | None,
    pan_seg: np.ndarray | None,
    *,
    ignore_label: int,
    aug: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the record: tensors, targets (panoptic segments when there is a panoptic map, else classes)."""
    rec: dict[str, Any] = {k: v for k, v in raw.items() if k not in _RAW_KEYS}
    rec["image"] = _tensor(image.transpose(2, 0, 1))
    if sem_seg is not None:
        rec["sem_seg"] = _tensor(sem_seg, np.int64)
    if pan_seg is not None:
        segments = raw.get("segments_info") or []
        rec["pan_seg"] = _tensor(pan_seg, np.int64)
        rec["segments_info"] = [dict(s) for s in segments]
        rec["labels"], rec["masks"] = panoptic_targets(pan_seg, segments)
    elif sem_seg is not None:
        rec["labels"], rec["masks"] = semantic_targets(sem_seg, ignore_label)
    else:
        rec["labels"] = torch.zeros(0, dtype=torch.int64)
        rec["masks"] = torch.zeros((0, *image.shape[:2]), dtype=torch.bool)
    rec["aug"] = aug
    return rec


class SemanticTrainMapper:
    """MaskFormerSemanticDatasetMapper (OFFICIAL_SPEC §5.1): resize by choice, category-area crop, SSD colour,
    horizontal flip, pad to exactly the crop size (image 128, labels ignore), one target per class."""

    def __init__(
        self,
        *,
        min_sizes: list[int],
        max_size: int,
        crop_size: tuple[int, int],
        single_category_max_area: float = 1.0,
        ignore_label: int = 255,
        color_aug_ssd: bool = True,
        pad_to_crop: bool = True,
        flip_prob: float = 0.5,
    ) -> None:
        if not min_sizes:
            raise ValueError("min_sizes must not be empty")
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = max_size
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.single_category_max_area = single_category_max_area
        self.ignore_label = ignore_label
        self.color = ColorAugSSD() if color_aug_ssd else None
        self.pad_to_crop = pad_to_crop
        self.flip_prob = flip_prob

    def _geometry(
        self, image: np.ndarray, sem: np.ndarray | None, pan: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        h, w = image.shape[:2]
        short = choose_short_side(self.min_sizes, rng)
        size = resize_shortest_edge_size(h, w, short, self.max_size)
        image = resize_image(image, size)
        sem = resize_label(sem, size) if sem is not None else None
        pan = resize_ids(pan, size) if pan is not None else None
        y0, x0, ch, cw = category_area_crop(
            sem, size, self.crop_size, self.single_category_max_area, self.ignore_label, rng
        )
        window = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        image = image[window]
        sem = sem[window] if sem is not None else None
        pan = pan[window] if pan is not None else None
        if self.color is not None:
            image = self.color(image, rng)
        flip = bool(rng.random() < self.flip_prob)
        if flip:
            image = image[:, ::-1]
            sem = sem[:, ::-1] if sem is not None else None
            pan = pan[:, ::-1] if pan is not None else None
        if self.pad_to_crop:
            image = pad_to(image, self.crop_size, 128)
            sem = pad_to(sem, self.crop_size, self.ignore_label) if sem is not None else None
            pan = pad_to(pan, self.crop_size, 0) if pan is not None else None  # 0 = VOID
        aug = {"short": short, "resize": size, "crop": (y0, x0, ch, cw), "flip": flip}
        return image, sem, pan, aug

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if raw.get("sem_seg") is None:
            raise ValueError(f"{raw.get('file_name')}: the semantic mapper needs a semantic label map")
        image, sem, _, aug = self._geometry(raw["image"], raw["sem_seg"], None, rng)
        return make_record(raw, image, sem, None, ignore_label=self.ignore_label, aug=aug)


class PanopticTrainMapper(SemanticTrainMapper):
    """MaskFormerPanopticDatasetMapper (ADE20K panoptic, OFFICIAL_SPEC §5.2): the semantic augmentations applied
    jointly to image, semantic map and panoptic id map (PIL nearest; padded with 0 = VOID); one target per
    non-crowd segment."""

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if raw.get("pan_seg") is None:
            raise ValueError(f"{raw.get('file_name')}: the panoptic mapper needs a panoptic map")
        image, sem, pan, aug = self._geometry(raw["image"], raw.get("sem_seg"), raw["pan_seg"], rng)
        return make_record(raw, image, sem, pan, ignore_label=self.ignore_label, aug=aug)


class DETRPanopticTrainMapper:
    """DETRPanopticDatasetMapper (COCO panoptic, OFFICIAL_SPEC §5.3). No colour augmentation, no padding.

    With probability 0.5: flip -> resize(choice of ``min_sizes``, ``max_size``); otherwise flip ->
    resize(choice of ``crop_min_sizes``, no cap) -> random crop with sides in ``crop_range`` -> resize as above.
    """

    def __init__(
        self,
        *,
        min_sizes: list[int],
        max_size: int = 1333,
        crop_min_sizes: tuple[int, ...] = (400, 500, 600),
        crop_range: tuple[int, int] = (384, 600),
        ignore_label: int = 255,
        flip_prob: float = 0.5,
    ) -> None:
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = max_size
        self.crop_min_sizes = [int(s) for s in crop_min_sizes]
        self.crop_range = crop_range
        self.ignore_label = ignore_label
        self.flip_prob = flip_prob

    @staticmethod
    def _resize(image: np.ndarray, sem: np.ndarray | None, pan: np.ndarray | None, size: tuple[int, int]) -> tuple:
        return (
            resize_image(image, size),
            resize_label(sem, size) if sem is not None else None,
            resize_ids(pan, size) if pan is not None else None,
        )

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, sem, pan = raw["image"], raw.get("sem_seg"), raw.get("pan_seg")
        use_crop = not bool(rng.random() > 0.5)  # the original: `if np.random.rand() > 0.5: no crop`
        flip = bool(rng.random() < self.flip_prob)
        if flip:
            image = image[:, ::-1]
            sem = sem[:, ::-1] if sem is not None else None
            pan = pan[:, ::-1] if pan is not None else None
        aug: dict[str, Any] = {"flip": flip, "crop": None}
        if use_crop:
            h, w = image.shape[:2]
            size = resize_shortest_edge_size(h, w, choose_short_side(self.crop_min_sizes, rng), 0)
            image, sem, pan = self._resize(image, sem, pan, size)
            y0, x0, ch, cw = absolute_range_crop(size, self.crop_range, rng)
            window = (slice(y0, y0 + ch), slice(x0, x0 + cw))
            image = image[window]
            sem = sem[window] if sem is not None else None
            pan = pan[window] if pan is not None else None
            aug["crop"] = (y0, x0, ch, cw)
        h, w = image.shape[:2]
        short = choose_short_side(self.min_sizes, rng)
        size = resize_shortest_edge_size(h, w, short, self.max_size)
        image, sem, pan = self._resize(np.ascontiguousarray(image), sem, pan, size)
        aug.update(short=short, resize=size)
        return make_record(raw, image, sem, pan, ignore_label=self.ignore_label, aug=aug)


class TestMapper:
    """Test-time preprocessing (OFFICIAL_SPEC §4.7): ResizeShortestEdge of the image only (PIL bilinear,
    ``int(x + 0.5)`` rounding, long side capped at ``max_size``); ground truth stays at the original resolution
    and ``height``/``width`` are the original size. ``min_size <= 0`` keeps the image as is."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, *, min_size: int, max_size: int, ignore_label: int = 255) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.ignore_label = ignore_label

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        image = raw["image"]
        size = image.shape[:2]
        if self.min_size > 0:
            size = resize_shortest_edge_size(size[0], size[1], self.min_size, self.max_size)
            image = resize_image(image, size)
        aug = {"resize": tuple(size), "flip": False, "crop": None}
        return make_record(raw, image, raw.get("sem_seg"), raw.get("pan_seg"), ignore_label=self.ignore_label, aug=aug)
