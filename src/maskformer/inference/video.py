"""Prediction on videos: every frame through the Predictor, overlaid, written as a video with the same frame count and
frame rate. Decoding and encoding use PyAV (its wheels carry FFmpeg; extra ``video``)."""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from maskformer.errors import DataError
from maskformer.fileio import atomic_path
from maskformer.inference.render import render

__all__ = ["predict_video"]


def _av():
    try:
        import av
    except ImportError:
        raise DataError("videos need PyAV: pip install 'maskformer[video]'") from None
    return av


def _add_stream(av, out, rate: Fraction, width: int, height: int):
    """An H.264 stream (plays in browsers and players; PyAV's wheels carry libx264), MPEG-4 part 2 where an FFmpeg
    build lacks it."""
    if "libx264" in av.codecs_available:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
    else:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.bit_rate = 4_000_000
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = 1 / rate
    return stream


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


def _check_complete(source: Path, container, stream, last: float | None, rate: Fraction) -> None:
    """A ``DataError`` when decoding stopped well before the duration the file states for its video: a truncated
    file whose frames decode up to the cut (Matroska/WebM/AVI end without an error; a cut MP4 does not open at
    all). 10 % and two frames of slack cover rounding of the stated duration."""
    stated = _stated_seconds(container, stream)
    if stated is None:
        return
    begin = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    decoded = (last - begin if last is not None else 0.0) + 1 / float(rate)
    if decoded < 0.9 * stated and stated - decoded > 2 / float(rate):
        raise DataError(f"{source}: the video stops after {decoded:.2f} s of the {stated:.2f} s its file "
                        "states (a truncated or damaged file?)")  # fmt: skip


def predict_video(predictor, source: str | Path, output: str | Path, *, task: str = "semantic", every: int = 1,
                  progress: bool = True) -> dict:  # fmt: skip
    """Write ``output`` (mp4, H.264 at the source's frame rate) with the prediction of every ``every``-th frame
    drawn over each frame (frames in between reuse the last prediction). Returns {"frames", "fps", "seconds"}.

    A file PyAV cannot read is one ``DataError`` naming it; ``output`` appears only when complete.
    """
    av = _av()
    from tqdm import tqdm

    source, output = Path(source), Path(output)
    names, colors = predictor.class_names, np.asarray(predictor.colors, dtype=np.uint8)
    try:
        container = av.open(str(source))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise DataError(f"{source}: cannot read video ({e})") from None
    rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
    # a progress total: the container's count, else (Matroska/WebM keep none) duration x rate
    total = stream.frames or (round(container.duration * rate / 1_000_000) if container.duration else None)
    count, start, result, last = 0, time.perf_counter(), None, None
    try:
        with atomic_path(output, suffix=".mp4") as tmp, av.open(str(tmp), mode="w") as out:
            encoder = None
            frames = container.decode(stream)
            for frame in tqdm(frames, total=total, desc=f"video {source.name}", unit="frame", disable=not progress):
                image = frame.to_ndarray(format="rgb24")
                if count % every == 0 or result is None:
                    result = predictor(image, task=task)
                picture = np.asarray(render(image, result, task, names, colors, legend=False).overlay)
                if encoder is None:
                    encoder = _add_stream(av, out, rate, picture.shape[1] + picture.shape[1] % 2,
                                          picture.shape[0] + picture.shape[0] % 2)  # fmt: skip
                # yuv420p needs even sides: an odd last row/column is repeated
                picture = np.pad(picture, ((0, picture.shape[0] % 2), (0, picture.shape[1] % 2), (0, 0)), mode="edge")
                drawn = av.VideoFrame.from_ndarray(picture, format="rgb24")
                drawn.pts = count  # in 1/rate units (the stream's time base), as the source frames are counted
                for packet in encoder.encode(drawn):
                    out.mux(packet)
                count, last = count + 1, frame.time
            if encoder is None:
                raise DataError(f"{source}: the video has no frames")
            _check_complete(source, container, stream, last, rate)
            for packet in encoder.encode():
                out.mux(packet)
    except av.error.FFmpegError as e:
        raise DataError(f"{source}: cannot decode video ({e})") from None
    finally:
        container.close()
    seconds = time.perf_counter() - start
    if progress:
        print(f"{source.name}: {count} frames in {seconds:.1f} s ({count / seconds:.2f} frames/s) -> {output}",
              file=sys.stderr)  # fmt: skip
    return {"frames": count, "fps": float(rate), "seconds": seconds}
