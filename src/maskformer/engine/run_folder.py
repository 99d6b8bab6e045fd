"""The run folder of ``maskformer train``: which files make a run, refusing to train anew into one, one training at a
time in it, and removing what a failed start wrote."""

from __future__ import annotations

import functools
import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointError, ConfigError

__all__ = ["HELD_BY_LAUNCHER", "RUN_FILES", "check_no_run", "check_not_held", "hold_run_folder", "remove_new"]

RUN_FILES = ("checkpoint_last.pt", "model_final.pt", "metrics.jsonl")
# set by `train --nproc N` for its processes: the launcher holds this run folder for them (its rank 0 must not try)
HELD_BY_LAUNCHER = "MASKFORMER_HELD_RUN_FOLDER"


def _held_for_us(out: Path) -> bool:
    return os.environ.get("RANK", "0") != "0" or os.environ.get(HELD_BY_LAUNCHER) == str(out.resolve())


def check_no_run(out: Path) -> None:
    """A ``ConfigError`` when ``out`` holds a run: training anew there would interleave two runs' metrics and replace
    the checkpoints of the first without a word."""
    anew = "another --output-dir (or deleting that folder) starts anew"
    if (out / "checkpoint_last.pt").exists():
        raise ConfigError(f"{out} holds a run already (checkpoint_last.pt): --resume continues it; {anew}")
    for name in RUN_FILES[1:]:
        if (out / name).exists():
            raise ConfigError(f"{out} holds an earlier run ({name}) without a checkpoint to resume from: {anew}")


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary files a killed run left half written beside its files (``kill -9`` during a checkpoint
    write leaves ``.checkpoint_last.pt.XXXXXXXX.tmp``, tens of MB each): called with the folder held, when no other
    run can be writing them."""
    for name in (*RUN_FILES, "config.yaml", "metrics.json"):
        for leftover in out.glob(f".{glob.escape(name)}.{'[a-z0-9_]' * 8}.tmp"):
            leftover.unlink(missing_ok=True)


@contextmanager
def hold_run_folder(out: Path, *, create: bool) -> Iterator[bool]:
    """Hold an exclusive lock on the run folder ``out`` for as long as training writes into it, so that a second
    ``maskformer train`` (or ``--resume``) into the same folder stops with one ``ConfigError`` line instead of mixing
    its files with the first run's. The lock is ``flock`` on the folder itself: no lock file, and the system releases
    it when the process ends, however it ends. ``create``: make the folder when it is missing (a new run), so that it
    is held before anything is written. Yields whether this call made it. Only the main process of a run (``RANK``
    unset or 0) locks, and not when the ``--nproc`` launcher holds the folder for it; where ``flock`` is missing
    (Windows) nothing is locked."""
    if _held_for_us(out):
        yield False
        return
    made = False
    parents: list[Path] = []  # folders above ``out`` made for it (removed again when a failed run removed ``out``)
    if create and not out.exists():
        parents = [p for p in out.absolute().parents if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
        made = True
    try:
        import fcntl

        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # (a named pipe: not waited on)
    except (ImportError, OSError):  # (not a folder: the run's own checks say so)
        try:
            yield made
        finally:
            _remove_empty(parents, out)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"{out}: another maskformer train is writing into this folder now; wait for it to end (then --resume "
                "continues its run), or give another --output-dir"
            ) from None
        _forked_children_let_go(fd)
        _remove_leftovers(out)
        yield made
    finally:
        _HELD_FDS.discard(fd)
        os.close(fd)  # (releases the lock)
        _remove_empty(parents, out)


def _remove_empty(parents: list[Path], out: Path) -> None:
    """Remove the folders made above ``out`` (deepest first) when ``out`` is gone and they are empty."""
    if out.exists():
        return
    for folder in parents:
        try:
            folder.rmdir()
        except OSError:  # (not empty: something else was put there meanwhile)
            return


_HELD_FDS: set[int] = set()


def _forked_children_let_go(fd: int) -> None:
    """A forked child (a DataLoader worker) shares the lock's open file; it closes its copy at once, so that the lock
    ends with the training process (after ``kill -9`` the workers outlive it for a moment, and a ``--resume`` right
    then was told the folder is in use)."""
    _close_held_in_forked_children()
    _HELD_FDS.add(fd)


@functools.cache  # (registered once per process)
def _close_held_in_forked_children() -> None:
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_close_held)


def _close_held() -> None:
    for fd in _HELD_FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


def check_not_held(out: Path) -> None:
    """The one-line ``ConfigError`` of ``hold_run_folder`` now, when another training holds ``out``: before
    ``--resume``'s checks (which would say that a run still before its first checkpoint has stopped) and notes."""
    if out.is_dir() and not _held_for_us(out):
        with hold_run_folder(out, create=False):
            pass


def check_resumable(out: Path) -> Path:
    """``out/checkpoint_last.pt`` when ``--resume`` can go on from it, else one ``CheckpointError`` line (before
    anything is written or the config's data is looked at: a mistyped run folder is named as such)."""
    last = out / "checkpoint_last.pt"
    if last.is_dir():
        raise CheckpointError(f"{last}: is a folder, not a checkpoint file")
    if not out.is_dir():
        raise CheckpointError(f"--output-dir {out}: no such folder, so nothing to resume from (check the path, or "
                              "run without --resume to start)")  # fmt: skip
    if not last.is_file():
        earlier = [name for name in ("metrics.jsonl", "config.yaml", "model_final.pt") if (out / name).exists()]
        start = ("the run stopped before its first checkpoint: start anew in another --output-dir (or delete the "
                 "folder)") if earlier else "run without --resume to start"  # fmt: skip
        raise CheckpointError(f"{last}: nothing to resume from ({start})")
    return last


def remove_new(out: Path, before: set[Path] | None) -> None:
    """Delete the entries of ``out`` that are not in ``before`` (and ``out`` itself when ``before`` is None)."""
    if not out.is_dir():
        return
    for entry in set(out.iterdir()) - (before or set()):
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if before is None and not any(out.iterdir()):
        out.rmdir()
