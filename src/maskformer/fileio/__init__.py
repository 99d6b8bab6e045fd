"""Atomic file writes: every output file of the package (checkpoints, predictions, pictures, videos, ONNX graphs,
metrics) is written to a temporary file in the same folder and renamed over the target only when complete, so a
crash or an error never leaves a partial file, and readers see either the old file or the new one.

The temporary file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask), not the
``0o600`` of ``tempfile.mkstemp``: a prediction written here is readable by the same users as any other file.
``checks.py``: what a file is before it is read (re-exported here).

May import: nothing of the package (everything may import it).
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checks import (
    CUT_ARCHIVE,
    JPEG_LABEL,
    SPECIAL_FILE,
    broken_link,
    cut_archive,
    damaged_archive,
    files_in,
    looks_like_text,
    not_a_file,
    special_file,
    unreadable_reason,
    upright,
    weight_file_problem,
)

_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}

__all__ = [
    "JPEG_LABEL",
    "CUT_ARCHIVE",
    "SPECIAL_FILE",
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "broken_link",
    "cut_archive",
    "damaged_archive",
    "files_in",
    "json_integer",
    "json_text",
    "looks_like_text",
    "new_file_mode",
    "not_a_file",
    "read_user_text",
    "special_file",
    "unreadable_reason",
    "upright",
    "weight_file_problem",
]


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (changing it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def new_file_mode() -> int:
    """``0o666`` without the process's umask bits: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (a hidden name ending in ``suffix``: give the real extension
    when the writer picks its format from it, e.g. ``.mp4``); when the block ends normally, give it the usual file
    mode, optionally fsync it, and rename it over ``path``. On any exception the temporary file is removed and
    ``path`` is left as it was. The parent folder is created.

    A symbolic link is followed (its target is replaced, the link stays); a device or a pipe (``/dev/stdout``,
    ``/dev/null``, a FIFO) cannot be replaced and is written through: yielded as it is."""
    path = Path(path)
    if _is_stream(path):
        with _as_write_errors(path), _naming(path, path):
            yield path
        return
    if path.is_symlink():
        if broken_link(path) == "a symbolic link loop":  # (realpath gives the link itself: it was replaced)
            raise OSError(errno.ELOOP, "a symbolic link loop", str(path))
        path = Path(os.path.realpath(path))
    with _new_parents(path.parent):
        try:
            fd, name = tempfile.mkstemp(prefix=_temporary_prefix(path.name, suffix), suffix=suffix, dir=path.parent)
        except OSError as e:  # e.g. a read-only folder: name it, not the temporary name tried in it
            e.filename = str(path.parent)
            raise
        os.close(fd)
        tmp = Path(name)
        try:
            with _naming(path, tmp), _as_write_errors(path):
                yield tmp
                os.chmod(tmp, new_file_mode())
                if fsync:
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def _new_parents(folder: Path) -> Iterator[None]:
    """Create ``folder`` with its missing parents; when the block fails, remove those it created that are still empty
    (a write that failed on a full disk left an empty output folder behind)."""
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for made in missing:  # (the deepest first; one still in use or not empty ends it)
            try:
                made.rmdir()
            except OSError:
                break
        raise


def _temporary_prefix(name: str, suffix: str) -> str:
    """``.NAME.`` for a temporary file beside NAME, shortened (its start kept) where the name with tempfile's 8
    random characters and ``suffix`` would pass the 255 bytes a file name may have: any name a user can write is
    written."""
    room = 255 - len(os.fsencode(suffix)) - 8 - 2
    head = os.fsencode(name)
    if len(head) > room:
        return f".{head[:room].decode('utf-8', 'ignore')}."  # (cut between characters)
    return f".{name}."


def _is_stream(path: Path) -> bool:
    """A device or a pipe (a FIFO, ``/dev/null``), or a name that leads through ``/dev`` or ``/proc``
    (``/dev/stdout`` and links to it, whose target is a pipe ``realpath`` cannot name): written through."""
    name = str(path)
    for _ in range(40):  # (a link chain; a loop ends here)
        if name.startswith(("/dev/", "/proc/")):
            return os.path.exists(name)
        if not os.path.islink(name):
            break
        name = os.path.join(os.path.dirname(name), os.readlink(name))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextmanager
def _naming(path: Path, tmp: Path) -> Iterator[None]:
    """A write error (a full disk) names the file asked for, not the temporary one it was written to."""
    try:
        yield
    except OSError as e:
        name = str(e.filename)
        inside = name.startswith(f"{tmp}{os.sep}")  # (a file in a temporary folder: named in the real one)
        if name == str(tmp) or inside or (e.filename is None and e.errno in _WRITE_ERRNOS):
            named = str(path / os.path.relpath(name, tmp)) if inside else str(path)
            try:
                e.filename = named
            except AttributeError:  # (PyAV's OSError has a read-only filename)
                raise OSError(e.errno, e.strerror, named) from e
        raise


def _free_bytes(folder: Path) -> int:
    """Bytes this process may still write in ``folder``'s file system (root may use the reserved blocks)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


@contextmanager
def _as_write_errors(target: Path) -> Iterator[None]:
    """Re-raise a writer library's own error for a failed write as the ``OSError`` it stands for, naming ``target``:
    torch.save on a full disk raises ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``,
    safetensors a ``SafetensorError: ... (os error 28)``; an ``OSError`` it was raised in handling (a file size or
    quota limit) is the one said. An error raised while a Ctrl-C (or SIGTERM) unwound the
    writer is that interrupt again (torch.save's zip writer then fails to close). Other errors pass unchanged."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        if isinstance(e.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        cause = e.__context__  # (torch.save's "unexpected pos" follows the OSError its writer met: a file size limit)
        if isinstance(cause, OSError) and cause.errno in _WRITE_ERRNOS:
            raise OSError(cause.errno, os.strerror(cause.errno), str(target)) from e
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code:
            number = int(code.group(1))
            raise OSError(number, os.strerror(number), str(target)) from e
        if 0 <= _free_bytes(target.parent) < (1 << 20):  # (the library did not say why; a full file system is why)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from e
        raise


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``folder``; when the block ends normally, give its files the usual mode and
    put it in place of ``folder`` (an earlier ``folder`` is moved aside first and removed after, so no file of it is
    left among the new ones). On any exception nothing of the new folder is left and ``folder`` is as it was."""
    folder = Path(folder)
    if folder.is_symlink() and folder.is_dir():  # a link to a folder: the folder is written, the link stays (it was
        folder = folder.resolve()  # replaced by a real folder, and left behind as a hidden .NAME.XXXXXXXX.old link)
    # an empty folder is filled, not replaced: it may be a mount point, which cannot be renamed (the temporary folder
    # is then made inside it, on its file system, and its files are moved up)
    empty = folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    with _new_parents(folder.parent):
        place = folder if empty else folder.parent
        try:
            tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(folder.name, ".old"), dir=place))
        except OSError as e:  # e.g. a read-only folder: name it, not the temporary name tried in it
            e.filename = str(folder if e.errno == errno.ENOENT else place)  # (/proc/x: "/proc: no such file")
            raise
        old = None
        moved: list[Path] = []
        try:
            with _naming(folder, tmp), _as_write_errors(folder):
                yield tmp
                mask = _umask()
                os.chmod(tmp, 0o777 & ~mask)  # (mkdtemp gives 0700) the mode mkdir gives a folder
                for f in tmp.rglob("*"):
                    if f.is_file():  # (writers that go through mkstemp leave 0600 files)
                        os.chmod(f, 0o666 & ~mask)
                if empty:
                    for f in sorted(tmp.iterdir()):
                        os.replace(f, folder / f.name)
                        moved.append(folder / f.name)
                    moved = []  # (all in place)
                else:
                    if folder.exists():
                        old = folder.parent / f"{tmp.name}.old"
                        os.replace(folder, old)
                    os.replace(tmp, folder)
        finally:
            for f in moved:  # (an error while moving the files up: the folder is left empty, as it was)
                shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (``flock`` on the folder itself: no lock file) for a
    read-modify-write of a file in it that another process may do at the same time (two ``predict`` runs merging
    into one predictions.json). Where ``flock`` is missing (Windows) or the folder cannot be opened: no lock."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # (a named pipe: not waited on)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: metrics.json, predictions.json, ..."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_user_text(path: str | Path, *, error: type[Exception]) -> str:
    """The text of a file a user wrote (config YAML, classes.json, split lists, annotation JSON): UTF-8, with or
    without the byte-order mark Windows editors add. Other encodings raise ``error`` (the caller's one-line
    ``UserError`` class) naming the file and the first undecodable byte, instead of a ``UnicodeDecodeError``."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(value: object, *, indent: int | None = None) -> str:
    """Standard JSON of ``value``: an undefined metric (NaN, inf: e.g. the mIoU of a split with no labelled pixel)
    is ``null``, as strict parsers (JavaScript's ``JSON.parse``, ``jq``) reject Python's bare ``NaN``."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def json_integer(value: object) -> int:
    """An integer field read from JSON (a segment's ``id``, a ``category_id``): an int, or a float with an integral
    value (``1.0``, which Python's ``==`` and the reference evaluators take as 1). A string, a fraction, a bool or
    null raises ``ValueError`` naming the value, instead of ``int()`` turning "1" or 1.7 into 1. numpy's integers
    and floats count as ints and floats (segments made in Python, e.g. from ``np.unique``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(float(value)) or not float(value).is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(value)
