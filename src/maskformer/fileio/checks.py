"""What a file is before it is read: text or binary, a checkpoint archive cut short or damaged, a named pipe, why
Pillow could not read it; and the files of a folder. Imports nothing of the package (``fileio`` re-exports it)."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

__all__ = [
    "CUT_ARCHIVE",
    "JPEG_LABEL",
    "upright",
    "SPECIAL_FILE",
    "broken_link",
    "cut_archive",
    "damaged_archive",
    "files_in",
    "looks_like_text",
    "not_a_file",
    "special_file",
    "unreadable_reason",
    "weight_file_problem",
]


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes are text: UTF-8 (a character cut at the end of ``head`` aside) made of printable
    characters and line breaks, with no NUL."""
    if b"\x00" in head:
        return False
    try:
        chars = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return False
        chars = head[: e.start].decode("utf-8")
    return sum(c.isprintable() or c in "\r\n\t" for c in chars) >= 0.95 * max(1, len(chars))


CUT_ARCHIVE = "the file is truncated or corrupt (incomplete archive)"


def cut_archive(path: str | os.PathLike, head: bytes) -> bool:
    """Whether a file that starts as a zip archive (``head``: its first bytes; torch's checkpoint format) lacks the
    directory at its end, i.e. was cut short (torch.load then says "[Errno 22]" or gives a paragraph of advice);
    ``CUT_ARCHIVE`` says it in words."""
    import zipfile

    return head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path)


def damaged_archive(path: str | os.PathLike) -> str | None:
    """Why a checkpoint's archive is damaged (a member whose bytes fail the CRC-32 the archive stores for it), or
    None. torch.load does not check them: a changed byte in the weights loaded as other weights, with exit 0. Reading
    the file once for it takes ~0.06 s per 165 MB (an R50 model); the answer is kept per file state, so the zoo's
    check of a cached copy and its load read it once."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    return _damage(str(path), info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=16)
def _damage(path: str, mtime_ns: int, size: int) -> str | None:
    del mtime_ns, size  # (the cache key: a rewritten file is read again)
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None  # (not an archive at all, or cut: torch.load's error names it below)
    return None if bad is None else f"the file is damaged ({bad} fails its checksum): copy or download it again"


def weight_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a torch weight file, judged before torch.load reads it, or None: empty, text, an archive
    cut short (``CUT_ARCHIVE``) or one whose checksums fail (``damaged_archive``: torch.load would read flipped bytes
    as other weights)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if looks_like_text(head):
        return "a text file"
    return CUT_ARCHIVE if cut_archive(path, head) else damaged_archive(path)


SPECIAL_FILE = "not a regular file (a named pipe, socket or device), which could be waited on forever"


def special_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists but is neither a regular file nor a folder: reading a named pipe blocks until a
    writer comes."""
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


def broken_link(path: str | os.PathLike) -> str | None:
    """Why ``path``, a symbolic link (or a path through one) that leads nowhere, cannot be used: "a symbolic link loop"
    or "a symbolic link to T, which does not exist"; None when it leads somewhere or is no link."""
    try:
        os.stat(path)
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
        return None


def not_a_file(path: str | os.PathLike) -> str:
    """Why ``path``, which is not a regular file, cannot be read as one: ``"a folder, not a file"``, ``SPECIAL_FILE``
    or ``"file not found"`` (for a ``"{path}: ..."`` error line)."""
    if Path(path).is_dir():
        return "a folder, not a file"
    return SPECIAL_FILE if special_file(path) else "file not found"


def unreadable_reason(exc: BaseException, size: int | None) -> str:
    """Why Pillow could not read an image of ``size`` bytes, in words: an empty file, a format it does not know, a
    file cut short (Pillow: "image file is truncated (3 bytes not processed)", "broken data stream"), else the error."""
    if size == 0:
        return "empty file, 0 bytes"
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow knows"
    text = str(exc).strip()
    if "truncated" in text.lower() or "broken data stream" in text:
        return "the file is cut short"  # (Pillow's own words add only "(N bytes not processed)")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def files_in(folder: str | os.PathLike, suffixes: set[str], *, recursive: bool = False,
             leave_out: Path | None = None) -> list[Path]:  # fmt: skip
    """``folder``'s files whose lower-case suffix is in ``suffixes``, in sorted order, hidden names left out; with
    ``recursive`` its subfolders' too, depth first in sorted order, each real folder once (a symbolic link to a folder
    already met, or a loop, is not read again: the first name met is kept) and ``leave_out`` (resolved) skipped.
    A broken link with such a suffix is listed (its reader then names it)."""
    found: list[Path] = []
    seen: set[Path] = set()

    def walk(current: Path) -> None:
        seen.add(current.resolve())
        for p in sorted(current.iterdir()):
            if p.name.startswith("."):
                continue
            if p.is_dir():
                real = p.resolve()
                if recursive and real not in seen and real != leave_out:
                    walk(p)
            elif p.suffix.lower() in suffixes:
                found.append(p)

    walk(Path(folder))
    return found


# why a label map read from a JPEG (Pillow format JPEG/MPO, under any name) is refused, by training and evaluation
JPEG_LABEL = "a JPEG label map: its compression changes the class ids at every edge; save label maps as PNG"


def upright(img):  # noqa: ANN001, ANN201 - a PIL image (PIL is imported where images are read)
    """A decoded PIL image turned by its EXIF orientation, as detectron2's ``read_image`` turns every file it reads
    (images, label maps, panoptic PNGs): a label map saved with a phone photo's tag lies over the photo. Broken EXIF
    blocks are common: the image is then returned as stored. The result keeps the file's ``format``."""
    import warnings

    from PIL import ImageOps

    try:
        with warnings.catch_warnings():  # (Pillow's "Corrupt EXIF data" warnings, at every read)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            if img.getexif().get(0x0112, 1) in (1, 0, None):
                return img
            turned = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF: as stored, as images are read
        return img
    turned.format = img.format
    return turned
