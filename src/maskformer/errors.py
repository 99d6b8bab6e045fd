"""Errors a user can cause, and interrupts (Ctrl-C, SIGTERM). The CLI prints errors as one line and exits non-zero,
and an interrupt as "interrupted" (exit 130); internals may assert."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator


class UserError(Exception):
    """Base class: bad input from a user (file, key, value). The message names the file or key."""


class ConfigError(UserError, ValueError):
    """Unknown config key, wrong type, missing or malformed config file."""


class DataError(UserError, ValueError):
    """Missing, corrupt or inconsistent dataset file (image, label map, annotation JSON)."""


class CheckpointError(UserError, ValueError):
    """Unreadable checkpoint, unsafe pickle, or keys/shapes that do not match the model."""


def one_line(error: BaseException) -> str:
    """The user-facing line of ``error``. A DataLoader worker re-raises a worker's error with the worker's whole
    traceback as its message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the line
    that matters is the original message, the traceback's last line without its ``module.Class:`` prefix."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        head, sep, rest = last.partition(": ")
        return rest if sep and "." in head and " " not in head else last
    return text.splitlines()[0] if text else type(error).__name__


def out_of_memory(error: BaseException) -> str | None:
    """A short reason, e.g. "out of memory (an allocation of 43.1 GB failed)", when ``error`` is a failed allocation
    (torch's CPU or CUDA allocator, numpy, Python), else None."""
    text = str(error)
    if not (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )):  # fmt: skip
        return None
    size = re.search(r"allocate (\d+) bytes", text)  # torch CPU: "you tried to allocate 43092000000 bytes"
    if size:
        return f"out of memory (an allocation of {int(size[1]) / 1e9:.1f} GB failed)"
    size = re.search(r"allocate (\d+(?:\.\d+)?)\.? ([KMGT]i?B)", text)  # CUDA "Tried to allocate 2.00 GiB", numpy
    return f"out of memory (an allocation of {size[1]} {size[2]} failed)" if size else "out of memory"


def worker_lost(error: BaseException) -> str | None:
    """A short reason when ``error`` is a DataLoader worker process that ended without an exception of its own:
    killed by a signal other than Ctrl-C / SIGTERM (``is_interrupt`` takes those), most often SIGKILL from the
    system's out-of-memory killer, or gone without saying why. None for anything else."""
    text = str(error)
    if not (isinstance(error, RuntimeError) and text.startswith("DataLoader worker")):
        return None
    signal_name = re.search(r"killed by signal: ([A-Za-z ]+?)\.?\s*$", text)
    how = f"was killed (signal: {signal_name[1]})" if signal_name else "exited unexpectedly"
    return (
        f"a data-loading worker process {how}, most often because the machine ran out of memory: "
        "set data.num_workers lower (0: the data loads in this process)"
    )


@contextlib.contextmanager
def terminate_as_interrupt(then: Callable[[int, object], None] | None = None) -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a job scheduler) raises KeyboardInterrupt meanwhile, so the cleanup that runs
    for Ctrl-C runs for it too (no partial download, no half-made run folder). Both signals also set the flag that
    ``raise_if_terminated`` reads, and an interrupt Python had to swallow prints no "Exception ignored ...
    Traceback" (the flag raises it again at the next check). Main thread only (where handlers can be set); the
    previous handlers come back afterwards, or ``then`` takes both signals (a command that has ended and only exits:
    Python's default would raise in its exit handlers, "Exception ignored in atexit callback ... KeyboardInterrupt")."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        _terminated.set()
        _last_signal[0] = signum
        if hasattr(signal, "SIGCHLD") and not quieted:
            # the same signal to the process group stops the DataLoader's workers: their end, reported by its SIGCHLD
            # handler while this interrupt unwinds, would replace it with "DataLoader worker ... killed" (and lose
            # what the interrupt carries, e.g. which checkpoint a run kept)
            quieted.append(signal.signal(signal.SIGCHLD, signal.SIG_DFL))
        raise KeyboardInterrupt

    def unraisable(info: sys.UnraisableHookArgs) -> None:  # (also a loader's __del__ meeting its stopped workers)
        if not (_terminated.is_set() and info.exc_value is not None and is_interrupt(info.exc_value)):
            previous_hook(info)

    _last_signal[0] = 0
    quieted: list = []  # (SIGCHLD's handler before the first interrupt)
    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # (a handler someone else set stays)
        signal.signal(signal.SIGINT, interrupt)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, then or previous)
        if previous_int is signal.default_int_handler:  # (an ignored Ctrl-C stays ignored)
            signal.signal(signal.SIGINT, then or previous_int)
        sys.unraisablehook = previous_hook
        if quieted and quieted[0] is not None and then is None:  # (an exiting command keeps the workers' end quiet)
            signal.signal(signal.SIGCHLD, quieted[0])
        _terminated.clear()


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGCHLD (a DataLoader worker's end) that arrive within the block, then give them to
    the handlers that were there when it ends (a KeyboardInterrupt then comes from the block's end). For a write a
    signal must not cut: torch.save's zip writer cut mid-record is left broken and aborts the whole process when it
    is freed ("terminate called ... unexpected pos", SIGABRT). Main thread only (elsewhere the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: object) -> None:
        arrived.append(signum)

    # (a handler set from C reads as None and cannot be put back: such a signal is not held)
    held = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in sorted(dict.fromkeys(arrived), key=lambda s: s == getattr(signal, "SIGCHLD", None)):
            signal.raise_signal(s)  # (the interrupt before a worker's end it caused)


def leave_signals_to_parent() -> None:
    """For a worker process forked from a command (DataLoader workers, evaluation pools): drop the SIGTERM handler
    it inherits (``terminate_as_interrupt``) and ignore Ctrl-C, so the parent ends its workers. A worker that ran the
    inherited handler unwound a KeyboardInterrupt of its own (``Pool.terminate`` sends SIGTERM) and printed
    "Process ForkPoolWorker ... Traceback" or, racing its queue's feeder thread, "OSError: Bad file descriptor"."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# set by SIGTERM / SIGINT under terminate_as_interrupt: a KeyboardInterrupt raised where Python ignores exceptions
# (a fork hook of the logging module while DataLoader workers start, a __del__) is lost, so long loops check this
_terminated = threading.Event()


# the signal terminate_as_interrupt last turned into a KeyboardInterrupt (0: none yet), for the exit code
_last_signal = [0]


def note_signal(signum: int) -> None:
    """Record the signal that stopped a command when it arrived elsewhere (a launcher's own handler)."""
    _last_signal[0] = signum


def interrupt_exit_code() -> int:
    """The exit code of an interrupted command: 128 + the signal, as a shell reports a process that signal ended
    (143 for SIGTERM, so a scheduler can tell it from Ctrl-C's 130)."""
    return 128 + (_last_signal[0] or signal.SIGINT)


def raise_if_terminated() -> None:
    """KeyboardInterrupt when a SIGTERM or Ctrl-C arrived whose KeyboardInterrupt was swallowed (``_terminated``)."""
    if _terminated.is_set():
        raise KeyboardInterrupt


def is_interrupt(error: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also as the error it caused while unwinding: a signal sent to the whole process group
    (``timeout``, a terminal's Ctrl-C, a scheduler) stops the DataLoader's workers too, and their end can surface as
    "DataLoader worker (pid N) is killed by signal: Terminated" (or Interrupt) raised within the interrupt, or as
    "DataLoader worker (pid(s) N) exited unexpectedly" when this process's own KeyboardInterrupt was swallowed (seen
    once in a CI run: a traceback and exit 1 after a SIGTERM to the group)."""
    seen: set[int] = set()
    e: BaseException | None = error
    signalled = _terminated.is_set() or _last_signal[0] != 0  # (a KeyboardInterrupt Python swallowed: see below)
    while e is not None and id(e) not in seen:
        text = str(e)
        if isinstance(e, KeyboardInterrupt) or (
            isinstance(e, RuntimeError) and "DataLoader worker" in text and
            ("signal: Terminated" in text or "signal: Interrupt" in text or (signalled and "unexpectedly" in text))
        ):  # fmt: skip
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
