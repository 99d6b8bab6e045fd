"""DataLoader helpers: a resumable training loader over an ``InfiniteSampler`` and a batch-1 test loader."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..errors import leave_signals_to_parent
from .samplers import AspectRatioBatchSampler, InferenceSampler, InfiniteSampler

__all__ = [
    "worker_init_fn",
    "seed_everything",
    "TrainLoader",
    "build_train_loader",
    "build_test_loader",
    "trivial_collate",
    "usable_workers",
]


def usable_workers(requested: int) -> int:
    """``requested`` DataLoader workers, at most one per CPU this process may run on (torch warns above that and
    the extra workers only compete for the same cores). Batches are the same whatever the count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(requested, cpus))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's global RNG and torch (the main process of a run)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: torch already gives each worker ``base_seed + worker_id``; derive Python's and
    numpy's global seeds from it so code using those in a worker is reproducible too. Signals are the main
    process's to handle (``errors.leave_signals_to_parent``: a group SIGTERM or a terminal's Ctrl-C reaches the
    workers too)."""
    leave_signals_to_parent()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def trivial_collate(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of records (test loaders, batch size 1)."""
    return batch


def _shared_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised 1-D tensor in shared memory (as ``default_collate`` allocates in workers), so pickling
    it to the main process does not copy it again."""
    try:
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
        return torch.empty(0, dtype=dtype).set_(storage)
    except (AttributeError, RuntimeError):  # private API: fall back to a plain tensor (one extra copy)
        return torch.empty(numel, dtype=dtype)


class _Slot:
    """Placeholder for the i-th tensor of a packed batch."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _Packed:
    """A batch whose tensors were copied into one flat buffer per dtype, plus the structure around them.

    Each tensor crossing from a DataLoader worker costs the main process a file-descriptor hand-over (socket
    connect + receive, ~1 ms); a training batch holds ~25 tensors (images, per-image masks, labels and label
    maps), so one buffer per dtype cuts that main-process cost several-fold.
    """

    def __init__(self, batch: Any) -> None:
        tensors: list[torch.Tensor] = []

        def strip(obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):
                tensors.append(obj)
                return _Slot(len(tensors) - 1)
            if isinstance(obj, dict):
                return {k: strip(v) for k, v in obj.items()}
            if type(obj) in (list, tuple):
                return type(obj)(strip(v) for v in obj)
            return obj

        self.skeleton = strip(batch)
        self.layout: list[tuple[torch.dtype, int, tuple[int, ...]]] = []
        sizes: dict[torch.dtype, int] = {}
        for t in tensors:
            self.layout.append((t.dtype, sizes.get(t.dtype, 0), tuple(t.shape)))
            sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
        self.buffers = {dtype: _shared_empty(n, dtype) for dtype, n in sizes.items()}
        for t, (dtype, offset, _) in zip(tensors, self.layout):
            self.buffers[dtype][offset : offset + t.numel()] = t.reshape(-1)

    def unpack(self) -> Any:
        def fill(obj: Any) -> Any:
            if isinstance(obj, _Slot):
                dtype, offset, shape = self.layout[obj.index]
                n = math.prod(shape)
                return self.buffers[dtype][offset : offset + n].view(shape)
            if isinstance(obj, dict):
                return {k: fill(v) for k, v in obj.items()}
            if type(obj) in (list, tuple):
                return type(obj)(fill(v) for v in obj)
            return obj

        return fill(self.skeleton)


class _PackingCollate:
    """Runs the user's collate function; inside a worker, packs the result for a cheap transfer."""

    def __init__(self, collate_fn: Callable[[list[dict[str, Any]]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, batch: list[dict[str, Any]]) -> Any:
        out = self.collate_fn(batch)
        return _Packed(out) if get_worker_info() is not None else out


class TrainLoader:
    """Iterates batches forever; counts the samples it delivered so ``state_dict()`` resumes exactly.

    Workers pre-fetch ahead of the training loop, so the sampler's own count overshoots; this wrapper's count
    does not. Bad samples skipped in any worker (records' ``"skipped"`` lists) are gathered in ``bad_samples``.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size_per_process: int,
        sampler: InfiniteSampler,
        num_workers: int,
        collate_fn: Callable[[list[dict[str, Any]]], Any],
        seed: int,
        prefetch_factor: int = 2,
        group_of: Callable[[int], int] | None = None,
    ) -> None:
        self.dataset = dataset
        self.grouped = AspectRatioBatchSampler(sampler, group_of, batch_size_per_process) if group_of else None
        self.batch_size = batch_size_per_process
        self.sampler = sampler
        self.num_workers = usable_workers(num_workers)
        self.collate_fn = collate_fn
        self.seed = seed
        self.prefetch_factor = prefetch_factor
        self.consumed = sampler.consumed
        # grouped batches: the stream position after the last delivered batch and the draws pending in the buckets
        self._grouped_state: dict = {"consumed": sampler.consumed, "buckets": [[], []]}
        self.bad_samples: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[Any]:
        if self.grouped is not None:
            self.grouped.restore(self._grouped_state)  # right after the last delivered batch, pending draws included
            batching: dict[str, Any] = {"batch_sampler": self.grouped}
        else:
            self.sampler.consumed = self.consumed  # restart the stream right after the last delivered sample
            batching = {"batch_size": self.batch_size, "sampler": self.sampler, "drop_last": True}
        loader = DataLoader(
            self.dataset,
            **batching,
            num_workers=self.num_workers,
            collate_fn=_PackingCollate(self.collate_fn),
            worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(self.seed),
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
        )
        for batch in _stopping_workers(iter(loader)):
            if isinstance(batch, _Packed):
                batch = batch.unpack()
            self.consumed += self.batch_size
            if self.grouped is not None:
                self._grouped_state = self.grouped.snapshots.popleft()
            records = batch[2] if isinstance(batch, tuple) and len(batch) == 3 else batch
            if isinstance(records, list):
                for r in records:
                    if isinstance(r, dict):
                        self.bad_samples.extend(r.get("skipped", []))
            yield batch

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(self.sampler.state_dict(), consumed=self.consumed)
        if self.grouped is not None:  # the stream position after the last delivered batch and the pending draws
            state["grouped"] = self._grouped_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.consumed = int(state["consumed"])
        if self.grouped is not None:
            self._grouped_state = state["grouped"]


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size_per_process: int,
    sampler: InfiniteSampler,
    num_workers: int,
    collate_fn: Callable[[list[dict[str, Any]]], Any],
    seed: int,
    group_of: Callable[[int], int] | None = None,
) -> TrainLoader:
    """The training loader: ``sampler`` should be an ``InfiniteSampler(tag_with_seed=True)`` for augmentations that
    are reproducible whatever ``num_workers``; ``collate_fn`` e.g. ``functools.partial(collate, ...)``."""
    return TrainLoader(
        dataset,
        batch_size_per_process=batch_size_per_process,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        seed=seed,
        group_of=group_of,
    )


def _stopping_workers(batches: Iterator[Any]) -> Iterator[Any]:
    """A DataLoader iterator's batches; its workers are stopped as soon as the iteration ends or fails. (Left to the
    interpreter's exit, they were killed there, torch's SIGCHLD handler raised inside multiprocessing's exit hook and
    the command's temp folder stayed behind.)"""
    try:
        yield from batches
    finally:
        stop = getattr(batches, "_shutdown_workers", None)
        if stop is not None:
            stop()


class _TestLoader(DataLoader):
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return _stopping_workers(super().__iter__())


def build_test_loader(
    dataset: Dataset,
    *,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable[[list[Any]], Any] = trivial_collate,
) -> DataLoader:
    """Batch size 1 over this rank's contiguous shard (``InferenceSampler``); yields lists of one record."""
    return _TestLoader(
        dataset,
        batch_size=1,
        sampler=InferenceSampler(len(dataset), rank, world_size),
        num_workers=usable_workers(num_workers),
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
    )
