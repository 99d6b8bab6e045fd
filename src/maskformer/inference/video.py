"""Prediction on videos: every frame through the Predictor, overlaid, written as a video with the same frame count and
frame rate. Decoding and encoding use PyAV (its wheels carry FFmpeg; extra ``video``)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maskformer.errors import DataError
from maskformer.inference.render import render

__all__ = ["predict_video"]


def _av():
    try:
        import av
    except ImportError:
        raise DataError("videos need PyAV: pip install 'maskformer[video]'") from None
    return av


def predict_video(predictor, source: str | Path, output: str | Path, *, task: str = "semantic", every: int = 1,
                  progress: bool = True) -> dict:  # fmt: skip
    """Write ``output`` (mp4, MPEG-4 video at the source's frame rate) with the prediction of every ``every``-th frame
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
    rate = stream.average_rate or stream.guessed_rate or 25
    total = stream.frames or None
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".mp4", dir=output.parent)
    os.close(fd)
    count, start, result = 0, time.perf_counter(), None
    try:
        with av.open(tmp, mode="w") as out:
            encoder = None
            frames = container.decode(stream)
            for frame in tqdm(frames, total=total, desc=f"video {source.name}", unit="frame", disable=not progress):
                image = frame.to_ndarray(format="rgb24")
                if count % every == 0 or result is None:
                    result = predictor(image, task=task)
                picture = np.asarray(render(image, result, task, names, colors, legend=False).overlay)
                if encoder is None:
                    encoder = out.add_stream("mpeg4", rate=rate)
                    encoder.width, encoder.height = picture.shape[1] + picture.shape[1] % 2, picture.shape[0] + \
                        picture.shape[0] % 2  # fmt: skip
                    encoder.pix_fmt = "yuv420p"
                    encoder.bit_rate = 4_000_000
                picture = np.pad(picture, ((0, picture.shape[0] % 2), (0, picture.shape[1] % 2), (0, 0)), mode="edge")
                for packet in encoder.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                    out.mux(packet)
                count += 1
            if encoder is None:
                raise DataError(f"{source}: the video has no frames")
            for packet in encoder.encode():
                out.mux(packet)
        os.replace(tmp, output)
    except av.error.FFmpegError as e:
        raise DataError(f"{source}: cannot decode video ({e})") from None
    finally:
        container.close()
        Path(tmp).unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    if progress:
        print(f"{source.name}: {count} frames in {seconds:.1f} s ({count / seconds:.2f} frames/s) -> {output}",
              file=sys.stderr)  # fmt: skip
    return {"frames": count, "fps": float(rate), "seconds": seconds}
