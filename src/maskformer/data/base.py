"""The dataset base class: lazy loading of indexed samples, the mapper call, per-sample RNG, bad-sample skipping.

Keys: ``dataset[i]`` or ``dataset[(i, sample_seed)]``. With a seed (what ``InfiniteSampler(tag_with_seed=True)``
yields) the augmentation of that draw is a pure function of the seed, whatever the number of DataLoader workers
and across resumes. Without one, a per-process generator is used (seeded from ``torch.initial_seed()``, which the
DataLoader sets per worker; see ``worker_init_fn``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .mappers import TestMapper
from .metadata import DatasetMeta

__all__ = ["SegmentationDataset", "Mapper"]

Mapper = Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]
_MAX_SKIP = 100  # consecutive bad samples tolerated before giving up (a broken dataset, not a few bad files)


class SegmentationDataset(Dataset):
    """A list of samples (``entries``: dicts of file paths and annotations) read lazily and mapped to records.

    Subclasses implement ``load(entry) -> raw`` (see ``maskformer.data.mappers`` for the raw layout) and
    raise ``DataError`` for any bad input. ``mapper=None`` gives records at the original size (no resize).

    With ``skip_bad_samples`` a sample that raises ``DataError`` is replaced by the next index (deterministic),
    the (file, reason) pair is added to ``bad_samples`` of this process and to the record's ``"skipped"`` list
    (so a trainer can collect them from DataLoader workers too).
    """

    def __init__(
        self,
        *,
        entries: list[dict[str, Any]],
        meta: DatasetMeta,
        mapper: Mapper | None = None,
        skip_bad_samples: bool = False,
        where: str = "",
    ) -> None:
        if not entries:
            raise DataError(f"{where or meta.name}: no samples found")
        self.entries = entries
        self.meta = meta
        self.mapper: Mapper = (
            mapper if mapper is not None else TestMapper(min_size=0, max_size=0, ignore_label=meta.ignore_label)
        )
        self.skip_bad_samples = skip_bad_samples
        self.bad_samples: list[tuple[str, str]] = []
        self.where = where or meta.name  # (the index file or folder the entries come from, for messages)
        self.unannotated: list[str] = []  # images an index lists without labels (left out, said by build_dataset)
        self._rng: tuple[int, np.random.Generator] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_bad_samples(self) -> int:
        return len(self.bad_samples)

    def aspect_group(self, index: int) -> int:
        """detectron2's aspect-ratio group of sample ``index``: 0 for a landscape image (w > h), else 1. From the
        entry's ``width``/``height`` or the image file's header (no decoding). An unreadable header is a ``DataError``
        naming the file (in group 1 it waited, unsaid, for a batch of portraits), or with ``skip_bad_samples`` group 1
        (skipped when loaded)."""
        entry = self.entries[index]
        if "width" in entry and "height" in entry:
            return 0 if entry["width"] > entry["height"] else 1
        if "file_name" not in entry:
            return 1
        try:
            from PIL import Image

            with Image.open(entry["file_name"]) as image:
                width, height = image.size
                if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # (read turned upright: a quarter turn)
                    width, height = height, width
        except (OSError, ValueError):
            if self.skip_bad_samples:
                return 1
            from .io import read_image

            read_image(entry["file_name"])  # (its one-line DataError, as when the sample is loaded)
            raise DataError(f"{entry['file_name']}: unreadable image header") from None
        return 0 if width > height else 1

    def load(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Read one sample from disk: ``{"image", "sem_seg", "pan_seg", "segments_info", "file_name", ...}``."""
        raise NotImplementedError

    def _process_rng(self) -> np.random.Generator:
        # Re-created after a fork (DataLoader worker) so workers do not share the parent's stream.
        pid = os.getpid()
        if self._rng is None or self._rng[0] != pid:
            self._rng = (pid, np.random.default_rng(torch.initial_seed() % 2**63))
        return self._rng[1]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), None)
        n = len(self.entries)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        index %= n
        skipped: list[tuple[str, str]] = []
        for attempt in range(min(n, _MAX_SKIP)):
            j = (index + attempt) % n
            rng = np.random.default_rng(seed) if seed is not None else self._process_rng()
            try:
                raw = self.load(self.entries[j])
            except DataError as e:
                if not self.skip_bad_samples:
                    raise
                item = (str(self.entries[j].get("file_name", j)), str(e))
                skipped.append(item)
                self.bad_samples.append(item)
                continue
            record = self.mapper(raw, rng)
            record["index"] = j
            record["skipped"] = skipped
            return record
        first = skipped[0][1] if skipped else "?"
        if len(skipped) == n:
            raise DataError(
                f"{self.meta.name}: no readable sample among all {n} (data.skip_bad_samples); first: {first}"
            )
        raise DataError(
            f"{self.meta.name}: {len(skipped)} consecutive unreadable samples from index {index}; first: {first}"
        )

    def check_all(
        self, *, raise_first: bool = False, progress: str = "", threads: int = 1, share: tuple[int, int] = (0, 1)
    ) -> list[tuple[str, str]]:
        """Read every sample once (no mapper) and return the (file, reason) of each bad one; ``raise_first``: raise
        the ``DataError`` of the first bad sample (in entry order) instead. ``threads`` read in parallel (image
        decoding releases the GIL); ``progress``: the label of a progress bar on a terminal (none if empty).
        ``share=(rank, world)``: only entries rank, rank + world, ... (the processes of a run split the reading).
        Sets ``unlabelled``: how many of the checked semantic samples hold only the ignore label."""
        entries = self.entries[share[0] :: share[1]]
        from concurrent.futures import ThreadPoolExecutor

        unlabelled = [0]  # semantic samples whose every pixel is the ignore label (nothing to learn from them)

        def check(entry: dict[str, Any]) -> tuple[str, str] | None:
            try:
                record = self.load(entry)
            except DataError as e:
                return str(entry.get("file_name", "?")), str(e)
            label = record.get("sem_seg") if "pan_seg" not in record else None
            if label is not None and not (np.asarray(label) != self.meta.ignore_label).any():
                unlabelled[0] += 1
            return None

        bad: list[tuple[str, str]] = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(check, entries)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(entries), desc=progress, leave=False, disable=not sys.stderr.isatty())
            for result in results:
                if result is not None and raise_first:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise DataError(result[1])
                if result is not None:
                    bad.append(result)
        self.unlabelled = unlabelled[0]
        return bad
