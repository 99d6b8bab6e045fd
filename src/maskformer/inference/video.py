"""Prediction on videos: every frame through the Predictor, overlaid, written as a video with the same frame count and
frame rate, and the source's first audio track. Decoding and encoding use PyAV (its wheels carry FFmpeg; extra
``video``)."""

from __future__ import annotations

import errno
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from maskformer.errors import ConfigError, DataError, raise_if_terminated
from maskformer.fileio import SPECIAL_FILE, atomic_path, special_file
from maskformer.inference.render import render
from maskformer.inference.video_checks import check_complete, declared_size, gif_ends

__all__ = ["predict_video"]


def _av():
    try:
        import av
    except ImportError:
        raise DataError("videos need PyAV: pip install 'maskformer[video]'") from None
    return av


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}


class _Clock:
    """Output timestamps: each frame keeps its source time, in 1/(1000 x rate) s units. A time within one tick of the
    source's time base of the nominal grid is put on it (a 30000/1001 fps clip stored in milliseconds), so a
    constant-rate source gives pts 0, 1000, 2000, ... and its exact rate comes back out; a variable-rate one keeps
    its timing."""

    def __init__(self, rate: Fraction, tick: float) -> None:
        self.rate, self.time_base = rate, Fraction(rate.denominator, rate.numerator * 1000)
        self.tolerance = tick * float(rate) * 1000  # one source tick in output units
        self.first: float | None = None
        self.last, self.count = -1, 0

    def pts(self, seconds: float | None) -> int:
        if seconds is None:  # no timestamp: the frame's place at the nominal rate
            pts = self.count * 1000
        else:
            self.first = seconds if self.first is None else self.first
            pts = round((seconds - self.first) * self.rate * 1000)
            grid = round(pts / 1000) * 1000
            pts = grid if abs(pts - grid) <= self.tolerance else pts
        pts = max(pts, self.last + 1)  # strictly increasing, whatever the source's timestamps do
        self.last, self.count = pts, self.count + 1
        return pts

    def duration(self, seconds: float) -> int:
        """A frame's display duration in output units: one nominal frame (1000) when within a source tick of it."""
        units = round(seconds * self.rate * 1000)
        return 1000 if abs(units - 1000) <= self.tolerance else max(1, units)


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that make ``frame`` upright: its display-matrix rotation (PyAV's
    ``VideoFrame.rotation``, degrees counter-clockwise; 0 where the file has none or PyAV is older)."""
    return round(getattr(frame, "rotation", 0) or 0) // 90 % 4


def _add_stream(av, out, time_base: Fraction, rate: Fraction, width: int, height: int):
    """An H.264 stream (plays in browsers and players; PyAV's wheels carry libx264), MPEG-4 part 2 where an FFmpeg
    build lacks it; frames are stamped in ``time_base``, ``rate`` is the nominal frame rate. No B-frames: packets
    come out in display order, so the last one's duration is the last frame's hold time (MP4 ends the track there)."""
    if "libx264" in av.codecs_available:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast", "bf": "0"})
    else:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.bit_rate = 4_000_000
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = stream.codec_context.time_base = time_base
    return stream


# channel count -> layout, for tracks that state no channel order (the WAVE / Matroska orders of those counts)
_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class _Audio:
    """The source's first audio track into the output, interleaved with the video by time: AAC and MP3 packets as
    they are (MP4 holds them), other codecs re-encoded to AAC. Times are shifted so that the first video frame is 0;
    sound before it and after the video's end is dropped. A track that fails to decode stops with a note, keeping
    the sound up to there."""

    _COPIED = ("aac", "mp3")

    def __init__(self, av, source: Path, out, start: float) -> None:
        self.av, self.source, self.start, self.failed, self.relabel = av, source, start, False, False
        self.container = av.open(str(source))
        track = self.container.streams.audio[0]
        codec = track.codec_context.codec
        self.copy = getattr(codec, "canonical_name", codec.name) in self._COPIED  # (MP3's decoder is "mp3float")
        if self.copy:
            self.stream = out.add_stream_from_template(track)
        else:
            self.stream = out.add_stream("aac", rate=track.codec_context.sample_rate or 48000)
            layout = track.codec_context.layout
            # PCM in Matroska may state a channel count without an order ("6 channels"): the usual layout of that
            # count (FFmpeg's native AAC encoder holds up to 7.1; more channels are mixed down to stereo)
            unordered = "channels" in layout.name or layout.nb_channels == 1
            self.stream.layout = _USUAL_LAYOUTS.get(layout.nb_channels, "stereo") if unordered else layout.name
            # the decoded frames of such a track are relabelled with that layout: the encoder's resampler would read
            # them as FFmpeg's default of the count (3 channels: 2.1) and remix them (the third channel fell silent)
            self.relabel = unordered and layout.nb_channels in _USUAL_LAYOUTS
        self.time_base = track.time_base or Fraction(1, track.codec_context.sample_rate or 48000)
        self.items = self.container.demux(track) if self.copy else self.container.decode(track)
        self.pending = None
        self.out = out

    def until(self, seconds: float, *, last: bool = False) -> None:
        """Mux the track's packets that start before ``seconds`` of output time; ``last``: then flush the encoder."""
        try:
            while not self.failed:
                item = self.pending if self.pending is not None else next(self.items, None)
                self.pending = None
                if item is None:
                    break
                if item.pts is None:
                    continue
                at = float(item.pts * self.time_base) - self.start
                if at >= seconds:
                    self.pending = item
                    break
                if at < 0:
                    continue
                item.pts = round(at / self.time_base)
                if self.copy:
                    if item.size == 0:
                        continue
                    item.dts = item.pts
                    item.stream = self.stream
                    self.out.mux(item)
                else:
                    if self.relabel:
                        item = self._relabelled(item)
                    item.time_base = self.time_base
                    self.out.mux(self.stream.encode(item))
            if last and not self.copy and not self.failed:
                self.out.mux(self.stream.encode(None))
        except self.av.error.FFmpegError as e:
            if getattr(e, "errno", None) in _WRITE_ERRNOS:
                raise
            self.failed = True
            print(f"{self.source}: audio copied up to {seconds:.2f} s only ({e})", file=sys.stderr)

    def _relabelled(self, frame):
        """``frame``'s samples as a frame of the output's channel layout (same format, rate and time)."""
        out = self.av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name,
                                              layout=self.stream.layout.name)  # fmt: skip
        out.sample_rate, out.pts = frame.sample_rate, frame.pts
        return out


def _open_audio(av, source: Path, out, start: float) -> _Audio | None:
    """``_Audio`` for the source, or None with a note when its track cannot be set up (the video goes on)."""
    try:
        return _Audio(av, source, out, start)
    except (av.error.FFmpegError, ValueError) as e:
        print(f"{source}: the overlay video has no sound (cannot copy the audio track: {e})", file=sys.stderr)
        return None


def _shown_for(frame, rate: Fraction) -> float:
    """How long ``frame`` stays on screen: its own duration where the file gives one (a GIF's frame delay, the last
    packet's duration), else one frame at the average rate."""
    duration, time_base = getattr(frame, "duration", None), frame.time_base
    if duration and time_base:
        return float(duration * time_base)
    return 1 / float(rate)


def predict_video(predictor, source: str | Path, output: str | Path, *, task: str = "semantic", every: int = 1,
                  progress: bool = True, with_audio: bool = True) -> dict:  # fmt: skip
    """Write ``output`` (mp4, H.264 at the source's frame rate) with the prediction of every ``every``-th frame
    drawn over each frame (frames in between reuse the last prediction) and, ``with_audio``, the source's sound.
    Returns {"frames", "fps", "seconds"}.

    A file PyAV cannot read is one ``DataError`` naming it; ``output`` appears only when complete.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"every must be a positive integer (1: every frame), got {every!r}")
    av = _av()
    from tqdm import tqdm

    source, output = Path(source), Path(output)
    names, colors = predictor.class_names, np.asarray(predictor.colors, dtype=np.uint8)
    if special_file(source):
        raise DataError(f"{source}: {SPECIAL_FILE}")
    if source.is_file() and source.stat().st_size == 0:  # (FFmpeg: "Invalid data found when processing input")
        raise DataError(f"{source}: cannot read video (empty file, 0 bytes)")
    if source.suffix.lower() == ".gif" and source.is_file() and not gif_ends(source.read_bytes()):
        raise DataError(f"{source}: the GIF ends before its last frame is complete (a truncated or damaged file?)")
    declared = declared_size(source) if source.is_file() else None
    if declared is not None and source.stat().st_size < declared:  # (before FFmpeg, which may say "Decoder not found")
        raise DataError(f"{source}: the file has {source.stat().st_size} of the {declared} bytes it states (a "
                        "truncated or damaged file?)")  # fmt: skip
    try:
        container = av.open(str(source))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{source}: cannot read video ({getattr(e, 'strerror', None) or e})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{source}: no video stream in the file")
    stream = container.streams.video[0]
    rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
    # a progress total: the container's count, else (Matroska/WebM keep none) duration x rate
    total = stream.frames or (round(container.duration * rate / 1_000_000) if container.duration else None)
    count, start, result, end, audio = 0, time.perf_counter(), None, None, None
    clock = _Clock(rate, float(stream.time_base or Fraction(1, 1000)))
    try:
        with atomic_path(output, suffix=".mp4") as tmp, av.open(str(tmp), mode="w") as out:
            encoder, durations = None, {}

            def mux(packets) -> None:  # each frame's duration onto its packet: a long-held last frame stays long
                for packet in packets:
                    packet.duration = durations.pop(packet.pts, 0)
                    out.mux(packet)

            frames = container.decode(stream)
            bar = {"total": total, "desc": f"video {source.name}", "unit": "frame"}
            for frame in tqdm(frames, **bar, disable=not (progress and sys.stderr.isatty())):
                raise_if_terminated()  # (a SIGTERM whose KeyboardInterrupt a library swallowed)
                # upright, as players show it (a phone's rotation tag) and as EXIF-rotated photos are read
                image = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=_quarter_turns(frame)))
                if count % every == 0 or result is None:
                    result = predictor(image, task=task)
                picture = np.asarray(render(image, result, task, names, colors, legend=False).overlay)
                if encoder is None:
                    encoder = _add_stream(av, out, clock.time_base, rate, picture.shape[1] + picture.shape[1] % 2,
                                          picture.shape[0] + picture.shape[0] % 2)  # fmt: skip
                    if container.streams.audio and with_audio:
                        audio = _open_audio(av, source, out, frame.time or 0.0)
                # yuv420p needs even sides: an odd last row/column is repeated
                picture = np.pad(picture, ((0, picture.shape[0] % 2), (0, picture.shape[1] % 2), (0, 0)), mode="edge")
                drawn = av.VideoFrame.from_ndarray(picture, format="rgb24")
                drawn.pts, drawn.time_base = clock.pts(frame.time), clock.time_base
                shown = _shown_for(frame, rate)
                durations[drawn.pts] = clock.duration(shown)  # (the encoder drops frames' durations)
                mux(encoder.encode(drawn))
                count += 1
                if frame.time is not None:
                    end = frame.time + shown if end is None else max(end, frame.time + shown)
                if audio is not None:
                    audio.until(drawn.pts * float(clock.time_base))
            if encoder is None:
                raise DataError(f"{source}: the video has no frames")
            check_complete(source, container, stream, end)
            if audio is not None:  # the sound up to the end of the last frame
                audio.until(clock.last * float(clock.time_base) + shown, last=True)
            mux(encoder.encode())
    except av.error.FFmpegError as e:
        if getattr(e, "errno", None) in _WRITE_ERRNOS:  # the output's side (a full disk), not the source's
            raise OSError(e.errno, os.strerror(e.errno), str(output)) from None
        raise DataError(f"{source}: cannot decode video ({e})") from None
    finally:
        container.close()
        if audio is not None:
            audio.container.close()
    seconds = time.perf_counter() - start
    if progress:
        frames = f"{count} frame" + ("" if count == 1 else "s")
        print(f"{source.name}: {frames} in {seconds:.1f} s ({count / seconds:.2f} frames/s) -> {output}",
              file=sys.stderr)  # fmt: skip
    return {"frames": count, "fps": float(rate), "seconds": seconds}
