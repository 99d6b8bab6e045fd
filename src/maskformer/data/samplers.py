"""Samplers: an infinite, resumable, sharded training stream and contiguous shards for evaluation."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["InfiniteSampler", "InferenceSampler", "AspectRatioBatchSampler", "sample_seed"]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of epoch ``epoch``'s global permutation.

    A 63-bit hash of the three numbers (``SeedSequence``), so it is the same on every rank and for every
    number of workers, and neighbouring positions get unrelated streams.
    """
    return int(
        np.random.SeedSequence([seed, epoch, position]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1
    )


class InfiniteSampler(Sampler):
    """An endless stream of dataset indices: one permutation of ``range(size)`` per epoch (seeded by
    ``(seed, epoch)``), rank ``r`` taking elements ``r, r + world_size, ...`` of each permutation.

    ``tag_with_seed=True`` yields ``(index, sample_seed)`` pairs instead, which ``SegmentationDataset`` uses to
    seed the augmentation of that draw (reproducible for any number of workers and across resumes).
    ``state_dict()`` / ``load_state_dict()`` hold how many indices this rank has produced; a resumed sampler
    continues exactly where the saved one stopped. (A DataLoader pre-fetches, so save the state of the
    ``TrainLoader`` that wraps the sampler, which counts what was delivered.)
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tag_with_seed: bool = False,
    ) -> None:
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset, got size {size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.tag_with_seed = tag_with_seed
        self.consumed = 0
        # Elements of one epoch's permutation that belong to this rank.
        self.per_epoch = len(range(rank, size, world_size))
        if self.per_epoch == 0:
            raise ValueError(f"dataset of {size} samples is too small for {world_size} processes")

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[Any]:
        epoch, offset = divmod(self.consumed, self.per_epoch)
        while True:
            perm = self._permutation(epoch)
            positions = range(self.rank + offset * self.world_size, self.size, self.world_size)
            for pos in positions:
                self.consumed += 1
                index = int(perm[pos])
                yield (index, sample_seed(self.seed, epoch, pos)) if self.tag_with_seed else index
            epoch, offset = epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed, "seed": self.seed, "size": self.size, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after ``state["consumed"]`` indices (seed/size/world size must match the saved run)."""
        for key in ("seed", "size", "world_size"):
            if key in state and state[key] != getattr(self, key):
                what = {"world_size": "number of processes", "size": "dataset size", "seed": "seed"}[key]
                raise ValueError(f"the saved data stream has {what} {state[key]}, this run has {getattr(self, key)}")
        self.consumed = int(state["consumed"])


class AspectRatioBatchSampler(Sampler):
    """Batches from an ``InfiniteSampler`` stream, each of images of one orientation (detectron2's aspect-ratio
    grouping, the original's default: landscape ``w > h`` and the rest fill two buckets; a full bucket is a batch).

    ``group_of(index) -> 0 | 1``. Resumable: each emitted batch leaves a snapshot (stream position and the buckets'
    pending draws) in ``snapshots``; the ``TrainLoader`` pops one per delivered batch and saves it, so a resumed run
    continues with exactly the batches the uninterrupted run would have made.
    """

    def __init__(self, sampler: InfiniteSampler, group_of: Callable[[int], int], batch_size: int) -> None:
        self.sampler, self.group_of, self.batch_size = sampler, group_of, batch_size
        self.buckets: list[list] = [[], []]
        self.snapshots: deque[dict] = deque()

    def __iter__(self) -> Iterator[list]:
        buckets = [list(b) for b in self.buckets]
        self.snapshots.clear()
        for draw in self.sampler:
            index = draw[0] if isinstance(draw, tuple) else draw
            bucket = buckets[1 if self.group_of(int(index)) else 0]
            bucket.append(draw)
            if len(bucket) == self.batch_size:
                batch = list(bucket)
                bucket.clear()
                pending = [[list(d) if isinstance(d, tuple) else d for d in b] for b in buckets]
                self.snapshots.append({"consumed": self.sampler.consumed, "buckets": pending})
                yield batch

    def restore(self, snapshot: dict) -> None:
        self.sampler.consumed = int(snapshot["consumed"])
        self.buckets = [[tuple(d) if isinstance(d, list) else d for d in b] for b in snapshot["buckets"]]


class InferenceSampler(Sampler):
    """Indices ``0..size-1`` split into ``world_size`` contiguous shards (the first ``size % world_size`` shards one
    longer); rank ``r`` gets shard ``r``, in order. Every index is seen exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        base, extra = divmod(size, world_size)
        lengths = [base + (1 if r < extra else 0) for r in range(world_size)]
        start = sum(lengths[:rank])
        self.indices = range(start, start + lengths[rank])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
