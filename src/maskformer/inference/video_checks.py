"""Whether a video file is whole: what its container states about its own size and duration, against what was read
and decoded. A file cut between two frames often decodes without an error up to the cut; these checks tell it from a
shorter file (``video.predict_video`` refuses it in one line and writes no output)."""

from __future__ import annotations

from pathlib import Path

from maskformer.errors import DataError

__all__ = ["check_complete", "declared_size", "gif_ends"]


def _stated_seconds(container, stream) -> float | None:
    """The video stream's duration as the file states it: the stream's own (MP4, AVI), the DURATION tag that
    Matroska/WebM muxers write per track, or the container's when the video is its only stream."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        pass
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def gif_ends(data: bytes) -> bool:
    """Whether a GIF's blocks run to its trailer (0x3B): header, screen descriptor and colour table, then extension
    and image blocks (each a chain of length-prefixed sub-blocks ending in a 0 length) until the trailer. A file cut
    between two frames decodes without an error, so this is how it is told from a shorter GIF. Bytes after the
    trailer are allowed."""

    def sub_blocks(i: int) -> int:  # the index after a chain of sub-blocks (len(data) + 1 when cut)
        while i < len(data) and data[i]:
            i += data[i] + 1
        return i + 1

    if len(data) < 13 or data[:3] != b"GIF":
        return False
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while i < len(data):
        kind = data[i]
        if kind == 0x3B:
            return True
        if kind == 0x21:  # extension: label, sub-blocks
            i = sub_blocks(i + 2)
        elif kind == 0x2C and i + 10 <= len(data):  # image: descriptor, local colour table, LZW code size, data
            flags = data[i + 9]
            i = sub_blocks(i + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1)
        else:
            return False
    return False


def check_complete(source: Path, container, stream, end: float | None) -> None:
    """A ``DataError`` when decoding stopped well before the duration the file states for its video: a truncated
    file whose frames decode up to the cut (Matroska/WebM/AVI end without an error; a cut MP4 does not open at
    all). ``end``: when the last decoded frame stops showing (its time plus its duration). 10 % and two average
    frames of slack cover rounding of the stated duration."""
    stated = _stated_seconds(container, stream)
    if stated is None:
        return
    begin = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    # a clip cut from a longer one may start later: its stated duration can be its span or its end time
    decoded = max(end, end - begin) if end is not None else 0.0
    rate = stream.average_rate or stream.guessed_rate or 25
    if decoded < 0.9 * stated and stated - decoded > 2 / float(rate):
        raise DataError(f"{source}: the video stops after {decoded:.2f} s of the {stated:.2f} s its file "
                        "states (a truncated or damaged file?)")  # fmt: skip


def declared_size(path: Path) -> int | None:
    """The size a Matroska/WebM or AVI file states for itself in its first bytes (the EBML Segment's size after its
    header; the RIFF chunk's), or an MP4/MOV file as the sum of its top-level boxes' sizes, or None (another format,
    or a Segment of unknown size, as a live stream writes). A file
    shorter than this was cut, even where its frames up to the cut decode and its last one is near the end (a cut
    H.264 file with B-frames loses the frames before its last P-frame)."""

    def vint(data: bytes, i: int) -> tuple[int, int, bool]:  # EBML variable-size integer: (value, next index, all 1s)
        width = 9 - data[i].bit_length()
        value = data[i] & (0xFF >> width)
        for b in data[i + 1 : i + width]:
            value = value << 8 | b
        return value, i + width, value == (1 << (7 * width)) - 1

    with open(path, "rb") as f:
        head = f.read(4096)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):  # ISO base media (MP4, MOV, M4V)
            return _boxes_size(f)
    try:
        if head[:4] == b"RIFF":
            return int.from_bytes(head[4:8], "little") + 8
        if head[:4] == b"\x1a\x45\xdf\xa3":
            size, i, _ = vint(head, 4)
            i += size  # past the EBML header
            if head[i : i + 4] != b"\x18\x53\x80\x67":
                return None
            size, i, unknown = vint(head, i + 4)
            return None if unknown else i + size
    except (IndexError, ValueError):  # a header cut inside the first bytes: FFmpeg says so when it opens it
        return None
    return None


def _boxes_size(f) -> int | None:
    """The end of the last top-level box of an ISO base media file (``f`` open for reading), from the box headers
    alone (4-byte size and type; size 1: an 8-byte size follows; 0: to the end of the file, None)."""
    end = f.seek(0, 2)
    pos = 0
    for _ in range(100_000):  # (a real file has a handful of top-level boxes)
        if pos >= end:
            return pos
        f.seek(pos)
        header = f.read(16)
        if len(header) < 8:
            return pos + 8  # a box header cut short
        size = int.from_bytes(header[:4], "big")
        if size == 1:
            if len(header) < 16:
                return pos + 16
            size = int.from_bytes(header[8:16], "big")
        if size == 0:
            return None
        if size < 8:
            return None  # not boxes: FFmpeg judges the file
        pos += size
    return None
