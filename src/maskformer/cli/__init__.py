"""``maskformer`` command line: one module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

Errors a user can cause (``maskformer.errors.UserError``, missing files) end in one line on stderr and exit code 2.
Command modules import heavy dependencies inside ``run`` so that ``--help`` stays fast.

May import: anything in the package (the top floor); nothing imports ``cli`` except ``__main__``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import (
    UserError,
    interrupt_exit_code,
    interrupts_held,
    is_interrupt,
    one_line,
    out_of_memory,
    raise_if_terminated,
    terminate_as_interrupt,
    worker_lost,
)
from ..fileio import broken_link

# command name -> module under maskformer.cli
COMMANDS: dict[str, str] = {
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "info": "info",
    "convert": "convert",
    "benchmark": "benchmark",
    "demo": "demo",
    "export": "export",
    "eval-predictions": "eval_predictions",
    "models": "models",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskformer",
        description="MaskFormer: mask classification for semantic and panoptic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{module_name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def _interrupted(command: str, *, exiting: bool) -> int:
    """Ctrl-C or SIGTERM: said once (it reaches every process of a run: rank 0 says it); exit code 130 (Ctrl-C) or 143
    (SIGTERM). A process that exits now (the console command, not ``main([...])`` from Python) says nothing more: a
    DataLoader thread the interrupt caught as it started would print "Exception ignored in thread started by ...
    Traceback" on the way out,
    and a DataLoader index queue's feeder thread, still closing its pipe as the interpreter exits, "Exception in thread
    QueueFeederThread: Traceback ... in _close" (about once in 60 SIGTERMs to a training's process group)."""
    if _ranks()[0] == 0:
        print(f"maskformer {command}: interrupted", file=sys.stderr)
    if exiting:
        sys.unraisablehook = lambda info: None
        threading.excepthook = lambda args: None  # (read when a thread's error happens: daemon threads too)
    return interrupt_exit_code()


def _ranks() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun set them (1 process otherwise)."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)


def _said_by_rank_0(error: UserError) -> bool:
    """Under torchrun every process checks the same config and checkpoint: only rank 0 prints those errors (each
    process printed it). Data errors come from one process's share of the data and are printed where they occur."""
    from ..errors import CheckpointError, ConfigError

    rank, world = _ranks()
    return world > 1 and rank != 0 and isinstance(error, ConfigError | CheckpointError)


def _peer_failed(error: RuntimeError) -> bool:
    """A process of a torchrun run whose peer stopped (a collective fails with a closed connection): the peer's own
    error is the one to read."""
    if _ranks()[1] <= 1:
        return False
    import torch.distributed as torch_dist

    backend_error = getattr(torch_dist, "DistBackendError", None)
    text = str(error)
    return (backend_error is not None and isinstance(error, backend_error)) or any(
        words in text for words in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` were parsed for (``convert to-hf``: that of ``to-hf``)."""
    while True:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subparsers[0].dest, None) if subparsers else None
        if chosen not in (subparsers[0].choices if subparsers else {}):
            return parser
        parser = subparsers[0].choices[chosen]


def main(argv: list[str] | None = None) -> int:
    """The ``maskformer`` command (``argv``: its words, from Python; None: the console command, which exits after)."""
    # SIGTERM as Ctrl-C from the start, also in a torchrun worker (torchrun passes a SIGTERM on to its workers), but
    # not in one that `train --nproc` started: that launcher stops them and says what was kept itself
    if _ranks()[1] > 1 and os.environ.get("MASKFORMER_NPROC"):
        return _main(argv)
    ended: list[int] = []

    def exit_now(signum: int, frame: object) -> None:  # (a signal after the command ended: its outputs are whole)
        os._exit(ended[0] if ended else 128 + signum)

    if argv is None:  # (registered before torch's exit handlers, so it runs after them)
        atexit.register(_ignore_signals_in_teardown)
        with contextlib.suppress(AttributeError, ValueError):  # a path the terminal's encoding cannot show (an ASCII
            sys.stdout.reconfigure(errors="backslashreplace")  # console): escaped as on stderr, not a traceback

    with terminate_as_interrupt(then=exit_now if argv is None else None):
        code = _main(argv)
        if argv is None:  # (os._exit writes no buffered output)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        ended.append(code)
        return code


def _ignore_signals_in_teardown() -> None:
    """The console command's last exit handler: Python puts the default handlers back for its final teardown (about
    0.3 s with torch loaded), where a Ctrl-C or SIGTERM killed the finished command; ignored ones stay ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _main(argv: list[str] | None) -> int:
    try:  # (``import maskformer`` loads no torch: a Ctrl-C this early is said in one line too)
        parser = build_parser()
        words = list(sys.argv[1:] if argv is None else argv)
        known = {o for action in parser._actions for o in action.option_strings}
        if words and words[0].startswith("-") and words[0].split("=")[0] not in known:  # (before the command: else
            parser.error(f"unrecognized arguments: {words[0]}")  # dropped, and the command asked for its arguments)
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the command's own parser: its usage, not the list of commands
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    except KeyboardInterrupt:
        words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
        return _interrupted(words[0] if words else "", exiting=argv is None)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (train --nproc starts workers with the same line)
    code = _run(args, argv)
    if argv is None and code and hasattr(signal, "SIGCHLD"):
        # the console command leaves on an error: DataLoader workers its traceback still holds are ended at exit, and
        # the DataLoader's SIGCHLD handler would print "Exception ignored in atexit ... killed by signal: Terminated"
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return code


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        if args.command != "models":  # (the one command without torch)
            # a Ctrl-C or SIGTERM inside torch's import can abort the process ("terminate called after throwing an
            # instance of 'pybind11::error_already_set' what(): KeyboardInterrupt", a core dump): it waits for the
            # import, a second or two, and then interrupts as anywhere else
            with interrupts_held():
                import torch  # noqa: F401
        from ..engine.runtime import keep_freed_memory

        keep_freed_memory()  # reuse freed activation memory instead of page-faulting it in again (engine/runtime.py)
        code = int(args.func(args) or 0)
        # a Ctrl-C / SIGTERM whose KeyboardInterrupt a library swallowed (e.g. while torch was being imported):
        # the command ran on to the end and exited 0 (tests/test_layout.py, about once in a full test run)
        raise_if_terminated()
        return code
    except UserError as e:
        if not _said_by_rank_0(e):
            print(f"maskformer {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError, FileExistsError, NotADirectoryError) as e:
        # FileExistsError / NotADirectoryError: an output folder asked for where a file is (--output-dir README.md)
        name = getattr(e, "filename", None) or ""
        why = "exists and is not a folder" if isinstance(e, FileExistsError) else (e.strerror or str(e))
        if name and (link := broken_link(name)):
            why = link
        print(f"maskformer {args.command}: error: {name}: {why}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `maskformer models | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # a full disk, a quota, an I/O error: the system's side (exit 1); read-only, a symbolic link
        name = getattr(e, "filename", None)  # loop or a name too long: the user's (2)
        why = "a symbolic link loop" if e.errno == errno.ELOOP else (e.strerror or str(e) or type(e).__name__)
        print(f"maskformer {args.command}: error: {f'{name}: ' if name else ''}{why}", file=sys.stderr)
        return 2 if e.errno in (errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG) else 1
    except MemoryError as e:  # the machine's side, as a full disk (exit 1)
        print(f"maskformer {args.command}: error: {out_of_memory(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if is_interrupt(e):  # (DataLoader workers stopped by the same Ctrl-C / SIGTERM)
            return _interrupted(args.command, exiting=argv is None)
        if str(e).startswith("Symlink loop from "):  # pathlib's resolve() (Python < 3.13)
            where = str(e).removeprefix("Symlink loop from ").strip("'")
            print(f"maskformer {args.command}: error: {where}: a symbolic link loop", file=sys.stderr)
            return 2
        if why := out_of_memory(e) or worker_lost(e):
            print(f"maskformer {args.command}: error: {why}", file=sys.stderr)
            return 1
        if not _peer_failed(e):
            raise
        print(f"maskformer {args.command}: error: stopped: another process of this run failed (its error is above)",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        return _interrupted(args.command, exiting=argv is None)
    except Exception as e:  # e.g. numpy's "Importing the numpy C-extensions failed" when Ctrl-C cut that import
        if is_interrupt(e):
            return _interrupted(args.command, exiting=argv is None)
        raise
