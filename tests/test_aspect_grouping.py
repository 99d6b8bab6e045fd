"""Aspect-ratio grouping of training batches (detectron2's default, the original's): every batch one orientation,
deterministic, and a resumed loader continues with exactly the batches of the uninterrupted one."""

from __future__ import annotations

import itertools

import pytest
from torch.utils.data import Dataset

from maskformer.data.loader import TrainLoader
from maskformer.data.samplers import InfiniteSampler


class _Keys(Dataset):
    """Returns the sampler's key; orientation: every third image is portrait."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, key):
        return key

    @staticmethod
    def group(index: int) -> int:
        return 1 if index % 3 == 0 else 0


def _pairs(batch: list) -> list:
    return [tuple(int(v) for v in key) for key in batch]


def _loader(workers: int = 0) -> TrainLoader:
    sampler = InfiniteSampler(23, seed=5, tag_with_seed=True)
    return TrainLoader(_Keys(), batch_size_per_process=4, sampler=sampler, num_workers=workers,
                       collate_fn=_pairs, seed=5, group_of=_Keys.group)  # fmt: skip


def _take(loader: TrainLoader, n: int) -> list:
    return list(itertools.islice(iter(loader), n))


def test_batches_have_one_orientation_and_cover_the_stream() -> None:
    batches = _take(_loader(), 20)
    assert all(len({_Keys.group(i) for i, _ in b}) == 1 for b in batches)
    assert {_Keys.group(b[0][0]) for b in batches} == {0, 1}
    drawn = [k for b in batches for k in b]
    assert len(set(drawn)) == len(drawn)  # (index, seed) draws are never repeated
    assert batches == _take(_loader(), 20)  # deterministic


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_with_the_same_batches(workers: int) -> None:
    whole = _take(_loader(workers), 12)
    first = _loader(workers)
    head = _take(first, 4)
    state = first.state_dict()
    assert state["grouped"]["buckets"] != [[], []]  # draws were pending when it stopped
    resumed = _loader(workers)
    resumed.load_state_dict(state)
    assert head + _take(resumed, 8) == whole
