"""Batching, samplers and loaders: normalization/padding, sharding, exact resume, worker reproducibility."""

import functools
import os
import signal

import pytest
import torch

from maskformer.data import (
    InferenceSampler,
    InfiniteSampler,
    SemanticTrainMapper,
    SyntheticDataset,
    build_test_loader,
    build_train_loader,
    collate,
    worker_init_fn,
)
from maskformer.errors import terminate_as_interrupt

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _record(h: int, w: int, n: int, fill: int) -> dict:
    return {
        "image": torch.full((3, h, w), fill, dtype=torch.uint8),
        "labels": torch.arange(n),
        "masks": torch.ones((n, h, w), dtype=torch.bool),
        "sem_seg": torch.zeros((h, w), dtype=torch.int64),
        "height": h,
        "width": w,
    }


def test_collate_normalizes_then_zero_pads_to_divisible_size() -> None:
    batch = [_record(30, 50, 2, 200), _record(40, 20, 0, 10)]
    images, targets, records = collate(batch, size_divisibility=32, pixel_mean=MEAN, pixel_std=STD)
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    for c in range(3):
        assert torch.allclose(images[0, c, :30, :50], torch.tensor((200 - MEAN[c]) / STD[c]))
        assert torch.allclose(images[1, c, :40, :20], torch.tensor((10 - MEAN[c]) / STD[c]))
    assert (images[0, :, 30:] == 0).all() and (images[0, :, :, 50:] == 0).all()  # zero AFTER normalization
    assert targets[0]["masks"].shape == (2, 64, 64) and targets[0]["masks"].sum() == 2 * 30 * 50
    assert targets[1]["masks"].shape == (0, 64, 64) and targets[1]["labels"].numel() == 0
    assert records[0]["image_size"] == (30, 50) and "sem_seg" in records[0] and "image" not in records[0]
    images, _, _ = collate(batch, size_divisibility=0, pixel_mean=MEAN, pixel_std=STD)
    assert images.shape == (2, 3, 40, 50)
    images, targets, _ = collate(batch, size_divisibility=32, pixel_mean=MEAN, pixel_std=STD, pad_to=(96, 70))
    assert images.shape == (2, 3, 96, 70) and targets[0]["masks"].shape == (2, 96, 70)
    with pytest.raises(ValueError):
        collate(batch, size_divisibility=0, pixel_mean=MEAN, pixel_std=STD, pad_to=(32, 32))


def _take(it, n: int) -> list:
    return [next(it) for _ in range(n)]


def test_infinite_sampler_shards_one_permutation_per_epoch() -> None:
    size, ws = 10, 3
    streams = [_take(iter(InfiniteSampler(size, seed=4, rank=r, world_size=ws)), 8) for r in range(ws)]
    per_epoch = [len(range(r, size, ws)) for r in range(ws)]  # 4, 3, 3
    assert per_epoch == [4, 3, 3]
    first_epoch = sorted(sum((s[: per_epoch[r]] for r, s in enumerate(streams)), []))
    assert first_epoch == list(range(size))  # every index once per epoch over all ranks
    # the permutation differs between epochs and seeds, and no shuffle means identity
    s = _take(iter(InfiniteSampler(size, seed=4)), 20)
    assert sorted(s[:10]) == sorted(s[10:]) == list(range(10)) and s[:10] != s[10:]
    assert _take(iter(InfiniteSampler(size, seed=5)), 10) != s[:10]
    assert _take(iter(InfiniteSampler(size, shuffle=False)), 12) == list(range(10)) + [0, 1]


def test_infinite_sampler_resume_is_exact() -> None:
    full = _take(iter(InfiniteSampler(7, seed=1, tag_with_seed=True)), 30)
    a = InfiniteSampler(7, seed=1, tag_with_seed=True)
    first = _take(iter(a), 12)
    state = a.state_dict()
    b = InfiniteSampler(7, seed=1, tag_with_seed=True)
    b.load_state_dict(state)
    assert first + _take(iter(b), 18) == full
    assert len({seed for _, seed in full}) == 30  # every draw has its own augmentation seed
    with pytest.raises(ValueError):
        InfiniteSampler(8, seed=1).load_state_dict(state)


@pytest.mark.parametrize("size, ws", [(10, 3), (2, 4), (9, 1)])
def test_inference_sampler_contiguous_shards(size: int, ws: int) -> None:
    shards = [list(InferenceSampler(size, r, ws)) for r in range(ws)]
    assert sum(shards, []) == list(range(size))
    lengths = [len(s) for s in shards]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def _loader(num_workers: int, consumed: int = 0):
    mapper = SemanticTrainMapper(min_sizes=[48, 64], max_size=256, crop_size=(48, 48), color_aug_ssd=True)
    ds = SyntheticDataset(split="train", length=16, image_size=64, seed=3, mapper=mapper)
    sampler = InfiniteSampler(len(ds), seed=7, tag_with_seed=True)
    loader = build_train_loader(
        ds,
        batch_size_per_process=2,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisibility=32, pixel_mean=MEAN, pixel_std=STD),
        seed=7,
    )
    if consumed:
        loader.load_state_dict({"consumed": consumed})
    return loader


def test_train_loader_same_batches_with_and_without_workers_and_after_resume() -> None:
    ref = list(zip(range(4), _loader(0)))
    with_workers = list(zip(range(4), _loader(2)))
    for (_, a), (_, b) in zip(ref, with_workers):
        assert torch.equal(a[0], b[0])
        assert [r["aug"] for r in a[2]] == [r["aug"] for r in b[2]]
        assert all(torch.equal(x["sem_seg"], y["sem_seg"]) for x, y in zip(a[2], b[2]))
        assert all(torch.equal(x["masks"], y["masks"]) for x, y in zip(a[1], b[1]))
    # stop after 2 batches, save, resume in a new loader: batches 3 and 4 are the same
    first = _loader(2)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()
    assert state["consumed"] == 4
    resumed = list(zip(range(2), _loader(0, consumed=state["consumed"])))
    for (_, a), (_, b) in zip(ref[2:], resumed):
        assert torch.equal(a[0], b[0]) and all(torch.equal(x["masks"], y["masks"]) for x, y in zip(a[1], b[1]))


def test_test_loader_batch_one_shards() -> None:
    ds = SyntheticDataset(split="val", length=5, image_size=32)
    seen = [b[0]["index"] for r in range(2) for b in build_test_loader(ds, num_workers=0, rank=r, world_size=2)]
    assert seen == [0, 1, 2, 3, 4]


def test_packed_batch_round_trip() -> None:
    from maskformer.data.loader import _Packed

    x = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    batch = (
        x.transpose(1, 2),  # non-contiguous
        [{"labels": torch.tensor([3, 1]), "masks": torch.zeros((0, 5, 5), dtype=torch.bool)}],
        [{"sem_seg": torch.full((2, 2), 7), "height": 2, "aug": {"flip": True}, "name": "a"}],
    )
    out = _Packed(batch).unpack()
    assert isinstance(out, tuple) and torch.equal(out[0], x.transpose(1, 2))
    assert torch.equal(out[1][0]["labels"], torch.tensor([3, 1])) and out[1][0]["masks"].shape == (0, 5, 5)
    assert torch.equal(out[2][0]["sem_seg"], torch.full((2, 2), 7)) and out[2][0]["aug"] == {"flip": True}
    assert out[2][0]["name"] == "a" and out[2][0]["height"] == 2


def test_more_workers_than_cpus_are_capped_without_torch_warning() -> None:
    import os
    import warnings

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    loader = _loader(cpus + 3)
    assert loader.num_workers == cpus
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "will create N worker processes" warning would raise here
        first = next(iter(loader))
    assert torch.equal(first[0], next(iter(_loader(0)))[0])
    test = build_test_loader(SyntheticDataset(split="val", length=2, image_size=32), num_workers=cpus + 3)
    assert test.num_workers == cpus


class _WorkerSignalHandlers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[bool, bool]:
        return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_loader_workers_leave_signals_to_the_main_process() -> None:
    """Workers forked under a command's SIGTERM handler ran it: a group SIGTERM (``timeout``, a scheduler) made each
    unwind a KeyboardInterrupt, and one printed "Traceback ... Bad file descriptor" from its queue's feeder thread
    after the command's "interrupted". SIGTERM ends a worker at once; Ctrl-C is the main process's to handle."""
    loader = torch.utils.data.DataLoader(_WorkerSignalHandlers(), num_workers=1, worker_init_fn=worker_init_fn)
    with terminate_as_interrupt():
        [(default_term, ignored_int)] = list(loader)
    assert default_term.item() and ignored_int.item()


def test_workers_stopped_on_an_error_leave_no_temp_folders(tmp_path):
    """A worker's error left the command's /tmp/pymp-* folder behind (one per failed `maskformer eval`, hundreds in
    /tmp): the workers lived on to the interpreter's exit, where torch's SIGCHLD handler raised inside
    multiprocessing's exit hook before it removed the folder. They are now stopped when the iteration fails."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import torch
        from maskformer.data.loader import build_test_loader

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 8

            def __getitem__(self, i):
                if i == 5:
                    raise ValueError("bad file")
                return torch.zeros(3, 64, 64) + i

        try:
            for _ in build_test_loader(Data(), num_workers=2):
                pass
        except ValueError:
            print("stopped")
    """)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stderr[-2000:]
    assert not list(temp.iterdir())
