"""The embedded synthetic dataset: scenes generated on the fly (no files), for the demo and for tests.

Each image has 2-4 "stuff" regions (a Voronoi partition) and 1-4 overlapping "thing" instances. Colours are
random and shared by all classes, so a per-pixel colour lookup cannot tell classes apart:
- a stuff class is a *texture* (horizontal / vertical / diagonal stripes, checker, dots, grid, ...), drawn with
  two random colours and a random period and phase;
- a thing class is a *shape* (disc, square, triangle, ring, cross, bar, ...), random size (radius 12 px to 2/9
  of the image), position and rotation, filled with a random colour.
Sample ``i`` of a split is always the same image (its own RNG stream, seeded by ``(seed, split, i)``; train and val
streams are disjoint). About 1 ms per 128x128 image.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import DataError
from .base import Mapper, SegmentationDataset
from .metadata import DatasetMeta

__all__ = ["SyntheticDataset", "synthetic_meta", "generate_scene", "TEXTURES", "SHAPES"]

TEXTURES = ("stripes_h", "stripes_v", "checker", "dots", "stripes_diag", "grid", "stripes_anti", "noise")
SHAPES = ("disc", "square", "triangle", "ring", "cross", "bar", "semicircle", "star")
_SPLITS = {"train": 0, "val": 1}


def _split_counts(num_classes: int, num_stuff: int | None) -> tuple[int, int]:
    stuff = num_classes // 2 if num_stuff is None else num_stuff
    things = num_classes - stuff
    if not (1 <= stuff <= len(TEXTURES) and 0 <= things <= len(SHAPES)):
        raise DataError(
            f"synthetic dataset: {num_classes} classes with {stuff} stuff is not supported "
            f"(1..{len(TEXTURES)} stuff textures, 0..{len(SHAPES)} thing shapes)"
        )
    return stuff, things


def synthetic_meta(num_classes: int = 8, num_stuff: int | None = None) -> DatasetMeta:
    """Class table: stuff textures first (ids ``0..S-1``), then thing shapes; visualization colours."""
    stuff, things = _split_counts(num_classes, num_stuff)
    names = list(TEXTURES[:stuff]) + list(SHAPES[:things])
    colors = []
    for i in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb(i / num_classes, 0.75, 0.95)
        colors.append([int(r * 255), int(g * 255), int(b * 255)])
    return DatasetMeta(name="synthetic", classes=names, colors=colors, isthing=[False] * stuff + [True] * things)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean pattern ``[S, S]``: True where the second colour is drawn.

    Patterns are separable or depend on ``x + y`` / ``x - y`` only, so they are computed on 1-D coordinate
    vectors and broadcast (the generator must stay at ~1 ms per image).
    """
    period = float(rng.uniform(7.0, 11.0))
    phase = float(rng.uniform(0.0, period))
    half = period / 2
    t = np.arange(size, dtype=np.float32) + phase
    if kind == "stripes_h":
        return np.broadcast_to(((t % period) < half)[:, None], (size, size))
    if kind == "stripes_v":
        return np.broadcast_to(((t % period) < half)[None, :], (size, size))
    if kind in ("stripes_diag", "stripes_anti"):
        d = np.arange(2 * size - 1, dtype=np.float32) + phase  # index = x + y, or x - y + size - 1
        band = (d % (period * 1.4)) < half * 1.4
        i = np.arange(size)
        return band[i[None, :] + i[:, None]] if kind == "stripes_diag" else band[i[None, :] - i[:, None] + size - 1]
    if kind == "checker":
        a = (t // half) % 2 == 0
        return a[:, None] ^ a[None, :]
    if kind == "dots":
        d = (t % period - half) ** 2
        return d[:, None] + d[None, :] < (period * 0.28) ** 2
    if kind == "grid":
        line = (t % period) < 2.0
        return line[:, None] | line[None, :]
    # "noise": random 3x3-pixel blocks of either colour
    cells = rng.random(((size + 2) // 3, (size + 2) // 3)) < 0.5
    return np.repeat(np.repeat(cells, 3, axis=0), 3, axis=1)[:size, :size]


def _shape(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Boolean mask of a shape centred at (cy, cx) with "radius" r, rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s  # rotated coordinates
    v = -(xx - cx) * s + (yy - cy) * c
    d2 = u * u + v * v
    if kind == "disc":
        return d2 < r * r
    if kind == "ring":
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    if kind == "square":
        return (np.abs(u) < 0.8 * r) & (np.abs(v) < 0.8 * r)
    if kind == "bar":
        return (np.abs(u) < 1.1 * r) & (np.abs(v) < 0.35 * r)
    if kind == "cross":
        arm = 0.3 * r
        return ((np.abs(u) < r) & (np.abs(v) < arm)) | ((np.abs(v) < r) & (np.abs(u) < arm))
    if kind == "semicircle":
        return (d2 < r * r) & (v > 0)
    if kind == "triangle":
        # inside the three half-planes of an equilateral triangle with circumradius r
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) < 0.5 * r
        return inside
    # "star": five points, radius modulated with the polar angle
    theta = np.arctan2(v, u)
    return np.sqrt(d2) < r * (0.6 + 0.4 * np.cos(5 * theta))


def _color_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours far enough apart for the texture to be visible."""
    a = rng.integers(0, 256, 3)
    for _ in range(20):
        b = rng.integers(0, 256, 3)
        if np.abs(a - b).sum() > 150:
            return a, b
    return a, 255 - a


def generate_scene(
    rng: np.random.Generator, *, size: int, num_stuff: int, num_things: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One scene. Returns ``image`` uint8 ``[S, S, 3]``, ``sem_seg`` uint8 ``[S, S]`` (class ids),
    ``pan_seg`` int64 ``[S, S]`` (segment ids from 1) and ``segments_info`` (id, category_id, isthing, area)."""
    yy, xx = _grid(size)
    # Stuff: Voronoi cells of 2-4 random seeds, each a texture class (distinct classes while there are enough).
    n_cells = int(rng.integers(2, 5))
    seeds = rng.uniform(0, size, (n_cells, 2)).astype(np.float32)
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    cell = np.argmin(dist, axis=0)
    classes = rng.permutation(num_stuff)[:n_cells] if n_cells <= num_stuff else rng.integers(0, num_stuff, n_cells)
    pairs = [_color_pair(rng) for _ in range(n_cells)]
    patterns = np.stack([_texture(TEXTURES[int(c)], size, rng) for c in classes])
    second = np.take_along_axis(patterns, cell[None], axis=0)[0]
    palette = np.array([[a for a, _ in pairs], [b for _, b in pairs]], dtype=np.int16)  # [2, n_cells, 3]
    image = palette[second.astype(np.intp), cell]  # [S, S, 3]
    sem = classes.astype(np.uint8)[cell]
    instance = np.zeros((size, size), dtype=np.int64)  # 0 = stuff, k = k-th thing
    thing_classes: list[int] = []
    for k in range(int(rng.integers(1, 5)) if num_things else 0):
        shape = int(rng.integers(num_things))
        r = float(rng.uniform(12.0, max(12.0, size / 4.5)))
        cy, cx = rng.uniform(r * 0.5, size - r * 0.5, 2)
        mask = _shape(SHAPES[shape], yy, xx, cy, cx, r, float(rng.uniform(0, 2 * np.pi)))
        image[mask] = rng.integers(0, 256, 3)
        sem[mask] = num_stuff + shape
        instance[mask] = k + 1
        thing_classes.append(num_stuff + shape)
    image += rng.integers(-10, 11, image.shape, dtype=np.int16)  # sensor-like noise
    image = np.clip(image, 0, 255).astype(np.uint8)
    # Panoptic ids: one segment per stuff class present, then one per visible thing instance.
    pan = np.zeros((size, size), dtype=np.int64)
    segments: list[dict[str, Any]] = []
    is_stuff = instance == 0
    regions = [(int(c), False, is_stuff & (sem == c)) for c in np.unique(sem[is_stuff])]
    regions += [(c, True, instance == k + 1) for k, c in enumerate(thing_classes)]
    for category, isthing, mask in regions:
        area = int(mask.sum())
        if area:  # a thing may be hidden entirely by later ones
            seg_id = len(segments) + 1
            pan[mask] = seg_id
            segments.append({"id": seg_id, "category_id": category, "iscrowd": 0, "isthing": isthing, "area": area})
    return image, sem, pan, segments


class SyntheticDataset(SegmentationDataset):
    """Deterministic generated scenes: ``length`` samples of ``image_size`` x ``image_size`` pixels.

    ``task="semantic"`` gives ``sem_seg`` (+ per-class targets); ``"panoptic"`` also ``pan_seg`` and
    ``segments_info`` (per-segment targets). ``num_stuff`` defaults to half the classes. Records as any dataset.
    """

    def __init__(
        self,
        *,
        split: str,
        length: int,
        num_classes: int = 8,
        image_size: int = 128,
        seed: int = 0,
        mapper: Mapper | None = None,
        task: str = "semantic",
        num_stuff: int | None = None,
        skip_bad_samples: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise DataError(f"synthetic dataset: unknown split '{split}' (expected train or val)")
        if task not in ("semantic", "panoptic"):
            raise DataError(f"synthetic dataset: unknown task '{task}' (expected semantic or panoptic)")
        if image_size < 32:
            raise DataError(f"synthetic dataset: image_size {image_size} is too small (at least 32)")
        self.num_stuff, self.num_things = _split_counts(num_classes, num_stuff)
        entries = [{"file_name": f"synthetic/{split}/{i:06d}", "index": i, "width": image_size, "height": image_size}
                   for i in range(length)]  # fmt: skip
        meta = synthetic_meta(num_classes, self.num_stuff)
        super().__init__(
            entries=entries, meta=meta, mapper=mapper, skip_bad_samples=skip_bad_samples, where="synthetic"
        )
        self.split, self.image_size, self.seed, self.task = split, image_size, seed, task

    def load(self, entry: dict[str, Any]) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], entry["index"]])
        image, sem, pan, segments = generate_scene(
            rng, size=self.image_size, num_stuff=self.num_stuff, num_things=self.num_things
        )
        panoptic = self.task == "panoptic"
        return {
            "image": image,
            "sem_seg": sem,
            "pan_seg": pan if panoptic else None,
            "segments_info": segments if panoptic else None,
            "file_name": entry["file_name"],
            "image_id": entry["index"],
            "height": self.image_size,
            "width": self.image_size,
        }
