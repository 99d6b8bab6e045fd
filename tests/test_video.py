"""Prediction on a video: a 12-frame clip the test writes gives a 12-frame overlaid video at the same rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from maskformer.cli import main
from serve_helpers import train_tiny

av = pytest.importorskip("av")


def _write_clip(path: Path, frames: int = 12, rate: int | Fraction = 12, codec: str = "mpeg4",
                size: tuple[int, int] = (64, 96), noise: bool = False) -> list[np.ndarray]:  # fmt: skip
    images, rng = [], np.random.default_rng(0)
    h, w = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), 30, np.uint8)
            image[:, : 8 * i] = 200
            image[20:40, 30:60] = (0, 120, 255)
            if noise:  # every frame costs bytes, so a file cut in half keeps about half of them
                image = np.clip(image + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
            images.append(image)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return images


def _read(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, Fraction(stream.average_rate)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("every", [1, 5])
def test_a_12_frame_clip_gives_a_12_frame_overlay(
    checkpoint: Path, tmp_path: Path, capsys, monkeypatch, every: int
) -> None:
    from maskformer.inference.predictor import Predictor

    calls = []
    predict = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, *a, **k: calls.append(1) or predict(self, *a, **k))
    source = _write_clip(tmp_path / "clip.mp4")
    code = main(["predict", str(checkpoint), str(tmp_path / "clip.mp4"), "--output-dir", str(tmp_path / "out"),
                 "--task", "semantic", "--every", str(every)])  # fmt: skip
    assert code == 0
    frames, rate = _read(tmp_path / "out" / "clip_overlay.mp4")
    assert len(frames) == 12 and rate == 12 and frames[0].shape == (64, 96, 3)
    assert len(calls) == -(-12 // every)  # the model ran on frames 0, N, 2N, ...
    # the overlay is drawn: frames differ from the source well beyond compression noise
    assert np.mean([np.abs(f.astype(int) - s).mean() for f, s in zip(frames, source)]) > 10
    assert "frames/s" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip_overlay.mp4"]  # no temporary file left


@pytest.mark.parametrize(
    "name, codec, rate, size",
    [("clip.webm", "libvpx-vp9", Fraction(30000, 1001), (64, 96)), ("clip.mkv", "mpeg4", 25, (63, 95))],
)
def test_other_containers_rates_and_odd_sizes(checkpoint: Path, tmp_path: Path, name, codec, rate, size) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    _write_clip(tmp_path / name, frames=7, rate=rate, codec=codec, size=size)
    assert main(["predict", str(checkpoint), str(tmp_path / name), "--output-dir", str(tmp_path / "out")]) == 0
    frames, got = _read(tmp_path / "out" / (Path(name).stem + "_overlay.mp4"))
    # yuv420p wants even sides: an odd one gains its repeated last row / column
    assert len(frames) == 7 and got == rate and frames[0].shape == (size[0] + size[0] % 2, size[1] + size[1] % 2, 3)


def test_a_corrupt_video_is_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    capsys.readouterr()
    code = main(["predict", str(checkpoint), str(tmp_path / "bad.mp4"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    (tmp_path / "empty.mp4").write_bytes(b"")  # (it said "Invalid data found when processing input")
    assert main(["predict", str(checkpoint), str(tmp_path / "empty.mp4"), "--output-dir", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'empty.mp4'}: cannot read video (empty file, 0 bytes)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, codec",
    [("cut.mkv", "libx264"), ("cut.webm", "libvpx-vp9"), ("cut.avi", "mpeg4"), ("live.mkv", "libx264"),
     ("cut.mp4", "libx264"), ("cut.mov", "mpeg4")],
)  # fmt: skip
def test_a_truncated_video_is_one_line_and_writes_nothing(
    checkpoint: Path, tmp_path: Path, capsys, name: str, codec: str
) -> None:
    """Matroska, WebM and AVI cut in half decode up to the cut without an error from FFmpeg, an MP4 cut in half
    said "Decoder not found": the size the file states in its header (MP4 / MOV: its boxes') names it, and where it
    states none (a Matroska live stream's Segment of unknown size), the
    frames missing against the stated duration do."""
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    (tmp_path / "whole").mkdir()
    _write_clip(tmp_path / "whole" / name, frames=24, codec=codec, noise=True)
    data = (tmp_path / "whole" / name).read_bytes()
    if name == "live.mkv":  # the Segment's 8-byte size -> "unknown" (all ones), as a muxer writing to a pipe leaves it
        at = data.index(b"\x18\x53\x80\x67") + 4
        assert data[at] == 0x01
        data = data[:at] + b"\x01" + b"\xff" * 7 + data[at + 8 :]
        (tmp_path / "whole" / name).write_bytes(data)
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    assert main(["predict", str(checkpoint), str(tmp_path / "whole" / name), "--output-dir", str(tmp_path / "ok")]) == 0
    assert len(_read(tmp_path / "ok" / (Path(name).stem + "_overlay.mp4"))[0]) == 24
    capsys.readouterr()
    code = main(["predict", str(checkpoint), str(tmp_path / name), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    said = "the video stops after" if name == "live.mkv" else "the file has"
    assert code == 2 and f"{name}: {said}" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_short_clip_cut_after_its_b_frames_is_named_too(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """An H.264 Matroska of 5 frames cut at 60 % decodes frames 0 and 4 only (the B-frames between are lost, the
    last P-frame survives): the last frame's time alone passed the check, and 2 of 5 frames came out with exit 0."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no libx264 encoder")
    (tmp_path / "whole").mkdir()
    _write_clip(tmp_path / "whole" / "clip.mkv", frames=5, rate=10, codec="libx264", noise=True)
    data = (tmp_path / "whole" / "clip.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: int(len(data) * 0.6)])
    with av.open(str(tmp_path / "cut.mkv")) as container:
        decoded = [float(f.time) for f in container.decode(video=0)]
    if len(decoded) >= 5 or max(decoded) < 0.35:  # (an encoder that orders frames otherwise: not this case)
        pytest.skip(f"the cut file decodes frames at {decoded}")
    capsys.readouterr()
    code = main(["predict", str(checkpoint), str(tmp_path / "cut.mkv"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cut.mkv: the file has" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_animated_gif_is_a_video_and_a_still_gif_an_image(checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    frames = [Image.fromarray(np.full((40, 60, 3), 20 * i, np.uint8)) for i in range(6)]
    frames[0].save(
        tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0
    )  # GIF delays are centiseconds
    frames[0].save(tmp_path / "still.gif")
    args = ["predict", str(checkpoint), str(tmp_path), "--output-dir", str(tmp_path / "out"), "--task", "semantic"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "anim_overlay.mp4", "still_labels.png", "still_overlay.png"
    ]  # fmt: skip
    got, rate = _read(tmp_path / "out" / "anim_overlay.mp4")
    assert len(got) == 6 and rate == 10 and got[0].shape == (40, 60, 3)


def test_a_bad_video_among_other_files_is_skipped_and_named(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """As an unreadable image: the other files get their results, the video is named, the exit code is 2."""
    from PIL import Image

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mkv").write_bytes(b"\x1aE\xdf\xa3 not really matroska")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    capsys.readouterr()
    args = [
        "predict",
        str(checkpoint),
        str(tmp_path / "in"),
        "--output-dir",
        str(tmp_path / "out"),
        "--task",
        "semantic",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.mkv" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_labels.png", "a_overlay.png"]


def _timed_mkv(path: Path, times_ms: list[int]) -> None:
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_variable_frame_times_and_a_rotation_tag_are_kept(checkpoint: Path, tmp_path: Path) -> None:
    """A variable-rate clip keeps each frame's time (it came out at a constant rate: 3 s of video in 0.24 s), and
    a phone clip tagged "rotate 90" comes out upright, as a player shows it and as EXIF-rotated photos are read."""
    if "libx264" not in av.codecs_available or not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this FFmpeg build has no libx264 encoder, or this PyAV cannot tag a rotation")
    times = [0, 40, 80, 1000, 1040, 3000]  # ms
    _timed_mkv(tmp_path / "vfr.mkv", times)
    with av.open(str(tmp_path / "phone.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(-90)  # a phone's "rotate 90": shown turned clockwise, 48 wide and 64 high
        image = np.full((48, 64, 3), 128, np.uint8)
        image[:12, :12] = 255  # a white corner at the stored top left: top right once upright
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    args = ["predict", str(checkpoint), str(tmp_path / "vfr.mkv"), str(tmp_path / "phone.mp4"), "--task", "semantic"]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 0
    with av.open(str(tmp_path / "out" / "vfr_overlay.mp4")) as container:
        got = [round(1000 * f.time) for f in container.decode(container.streams.video[0])]
    assert got == times
    upright, _ = _read(tmp_path / "out" / "phone_overlay.mp4")
    assert len(upright) == 3 and upright[0].shape == (64, 48, 3)
    corner = {"top right": upright[0][:8, -8:].mean(), "top left": upright[0][:8, :8].mean()}
    assert corner["top right"] > corner["top left"] + 40, corner


def test_a_late_start_and_irregular_times_are_kept_exactly(checkpoint: Path, tmp_path: Path) -> None:
    """A clip cut from a longer one (first frame at 0.5 s) is not taken for a truncated file, and frame times a few
    ms off a regular grid keep their own times (they were put on the average rate's grid: 100 ms came out 102)."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no libx264 encoder")
    _timed_mkv(tmp_path / "late.mkv", [500, 600, 700, 800, 900])
    _timed_mkv(tmp_path / "near.mkv", [0, 100, 205, 300, 400])
    args = ["predict", str(checkpoint), str(tmp_path / "late.mkv"), str(tmp_path / "near.mkv"), "--task", "semantic"]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 0
    for name, times in (("late", [0, 100, 200, 300, 400]), ("near", [0, 100, 205, 300, 400])):
        with av.open(str(tmp_path / "out" / f"{name}_overlay.mp4")) as container:
            assert [round(1000 * f.time) for f in container.decode(container.streams.video[0])] == times, name


def test_a_cut_animated_gif_is_named_and_leaves_no_folder(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)) for _ in range(10)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = (tmp_path / "anim.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) * 31 // 100])  # inside the fourth frame
    capsys.readouterr()
    out = tmp_path / "new" / "out"
    assert main(["predict", str(checkpoint), str(tmp_path / "cut.gif"), "--output-dir", str(out)]) == 2
    assert "cut.gif" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the folders it would have made are not left behind empty


def test_a_gif_cut_between_two_frames_is_named_too(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """A GIF cut right after a frame decodes without an error (it looked like a shorter GIF and got an overlay of
    its first frames); its blocks end before the trailer, and that is now checked. Bytes after the trailer are fine."""
    from PIL import Image

    from maskformer.inference.video_checks import gif_ends

    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)) for _ in range(6)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = (tmp_path / "anim.gif").read_bytes()
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\x21\xf9\x04"]  # each frame's control block
    assert len(starts) == 6
    (tmp_path / "cut.gif").write_bytes(data[: starts[4]])  # four whole frames
    with Image.open(tmp_path / "cut.gif") as gif:
        assert gif.n_frames == 4  # (what a reader sees: a shorter GIF)
    assert gif_ends(data) and gif_ends(data + b"\0" * 7)
    assert not any(gif_ends(data[:n]) for n in range(len(data)))
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(tmp_path / "cut.gif"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cut.gif" in err and "truncated" in err, err
    assert not (tmp_path / "o" / "cut_overlay.mp4").exists()


def test_a_file_without_a_video_stream_says_so(checkpoint: Path, tmp_path: Path, capsys) -> None:
    if "aac" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no aac encoder")
    with av.open(str(tmp_path / "voice.mp4"), "w") as out:
        audio = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(tmp_path / "voice.mp4"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "voice.mp4: no video stream in the file" in capsys.readouterr().err


def test_a_longer_audio_track_is_not_taken_for_a_cut(checkpoint: Path, tmp_path: Path) -> None:
    """The check uses the video track's own stated duration, not the container's (which an audio tail extends)."""
    if "libx264" not in av.codecs_available or "aac" not in av.codecs_available:
        pytest.skip("this FFmpeg build lacks libx264 or aac")
    with av.open(str(tmp_path / "talk.mkv"), "w") as out:
        video, audio = out.add_stream("libx264", rate=12), out.add_stream("aac", rate=16000)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        for i in range(24):  # 2.0 s of video
            for packet in video.encode(av.VideoFrame.from_ndarray(np.full((64, 96, 3), 9 * i, np.uint8), "rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for start in range(0, 16000 * 5 // 2, 1024):  # 2.5 s of silence
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    assert main(["predict", str(checkpoint), str(tmp_path / "talk.mkv"), "--output-dir", str(tmp_path / "out")]) == 0
    assert len(_read(tmp_path / "out" / "talk_overlay.mp4")[0]) == 24


def test_a_panoptic_video_writes_the_video_and_no_empty_predictions_json(checkpoint: Path, tmp_path: Path) -> None:
    _write_clip(tmp_path / "clip.mp4", frames=3)
    code = main(["predict", str(checkpoint), str(tmp_path / "clip.mp4"), "--output-dir", str(tmp_path / "out"),
                 "--task", "panoptic"])  # fmt: skip
    assert code == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip_overlay.mp4"]
    assert len(_read(tmp_path / "out" / "clip_overlay.mp4")[0]) == 3


def test_a_folder_of_images_and_videos_gives_both(checkpoint: Path, tmp_path: Path) -> None:
    """A folder holding a picture and a clip: both are predicted (the clip was silently left out before)."""
    from PIL import Image

    folder = tmp_path / "mix"
    folder.mkdir()
    _write_clip(folder / "clip.mp4", frames=3)
    Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(folder / "still.png")
    code = main(["predict", str(checkpoint), str(folder), "--output-dir", str(tmp_path / "out"), "--task", "semantic"])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["clip_overlay.mp4", "still_labels.png", "still_overlay.png"], names
    assert len(_read(tmp_path / "out" / "clip_overlay.mp4")[0]) == 3


def _talking_clip(path: Path, codec: str, sample_format: str) -> None:
    """2 s of video at 12 fps whose first frame is at 0.25 s, and 2.5 s of a 440 Hz tone from 0 s (16 kHz mono)."""
    with av.open(str(path), "w") as out:
        video, audio = out.add_stream("libx264", rate=12), out.add_stream(codec, rate=16000)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio.layout = "mono"
        tone = np.sin(2 * np.pi * 440 * np.arange(40000) / 16000).astype(np.float32) * 0.5
        chunks = [(s / 16000, "a", s) for s in range(0, 40000, 1024)] + [((i + 3) / 12, "v", i) for i in range(24)]
        for _, kind, i in sorted(chunks):
            if kind == "v":
                frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 9 * i, np.uint8), "rgb24")
                frame.pts = i + 3
                out.mux(video.encode(frame))
                continue
            part = tone[i : i + 1024][None]
            if sample_format == "s16":
                part = (part * 32767).astype(np.int16)
            sound = av.AudioFrame.from_ndarray(part, format=sample_format, layout="mono")
            sound.sample_rate, sound.pts = 16000, i
            out.mux(audio.encode(sound))
        out.mux(video.encode())
        out.mux(audio.encode())


def _sound(path: Path) -> tuple[str, list[bytes], float, float]:
    """(codec, packet bytes, first time, seconds of samples) of a file's first audio track."""
    with av.open(str(path)) as container:
        track = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(track) if p.size]
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.audio[0]))
        rate = frames[0].sample_rate
        return track.codec_context.name, packets, float(frames[0].time), sum(f.samples for f in frames) / rate


@pytest.mark.parametrize(
    ("name", "codec", "sample_format"), [("talk.mp4", "aac", "fltp"), ("talk.mkv", "pcm_s16le", "s16")]
)
def test_the_sound_is_kept_and_cut_to_the_video(checkpoint: Path, tmp_path: Path, name, codec, sample_format) -> None:
    """AAC is copied packet for packet; PCM (which MP4 does not hold) is re-encoded to AAC. The sound before the first
    frame and after the last one is left out, so sound and pictures stay together."""
    if "libx264" not in av.codecs_available or "aac" not in av.codecs_available:
        pytest.skip("this FFmpeg build lacks libx264 or aac")
    _talking_clip(tmp_path / name, codec, sample_format)
    assert main(["predict", str(checkpoint), str(tmp_path / name), "--output-dir", str(tmp_path / "out")]) == 0
    overlay = tmp_path / "out" / "talk_overlay.mp4"
    assert len(_read(overlay)[0]) == 24
    out_codec, packets, first, seconds = _sound(overlay)
    assert out_codec == "aac" and abs(first) < 0.03 and abs(seconds - 2.0) < 0.1
    source_packets = _sound(tmp_path / name)[1]
    if codec == "aac":  # copied: the packets of the source's 0.25-2.25 s
        assert set(packets) <= set(source_packets) and 28 <= len(packets) <= 33
    assert main(["predict", str(checkpoint), str(tmp_path / name), "--output-dir", str(tmp_path / "mute"),
                 "--no-audio"]) == 0  # fmt: skip
    with av.open(str(tmp_path / "mute" / "talk_overlay.mp4")) as container:
        assert not container.streams.audio and len(container.streams.video) == 1


def _duration(path: Path) -> float:
    """When the last frame of ``path``'s video stops showing: its time plus its duration."""
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.video[0]))
    return float(frames[-1].time + frames[-1].duration * frames[-1].time_base)


def test_a_last_frame_held_long_is_not_a_cut_and_keeps_its_time(checkpoint: Path, tmp_path: Path) -> None:
    """A GIF whose last frame stays 2 s and a clip whose last packet lasts 3 s are complete files: they were refused
    as truncated ("stops after 0.87 s of the 2.30 s"), the last frame counted as 1 / average rate."""
    from PIL import Image

    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "green", "blue", "white")]
    frames[0].save(tmp_path / "hold.gif", save_all=True, append_images=frames[1:], duration=[100, 100, 100, 2000])
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(tmp_path / "held.mkv"), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        packets = []
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 50 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = 100 * i, Fraction(1, 1000)
            packets += stream.encode(frame)
        packets += stream.encode()
        last = max(packets, key=lambda p: p.pts)
        last.duration = round(3 / last.time_base)  # (shown from 0.3 s to 3.3 s)
        for packet in packets:
            out.mux(packet)
    args = ["predict", str(checkpoint), str(tmp_path / "hold.gif"), str(tmp_path / "held.mkv"), "--task", "semantic"]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 0
    # the output's last frame is held as long as the source's (it lasted one average frame: 2.3 s came out 0.87 s)
    assert _duration(tmp_path / "out" / "hold_overlay.mp4") == pytest.approx(2.3, abs=0.02)
    assert _duration(tmp_path / "out" / "held_overlay.mp4") == pytest.approx(3.3, abs=0.02)


@pytest.mark.parametrize(("layout", "channels", "loud"), [("5.1", 6, 0), ("3.0", 3, 2)])
def test_surround_pcm_keeps_its_channels_and_level(
    checkpoint: Path, tmp_path: Path, layout: str, channels: int, loud: int
) -> None:
    """Matroska PCM states 6 (or 3) channels without an order: it was named stereo, so 5.1 was mixed down and got
    louder (RMS 0.21 -> 0.51); then 3 channels were read as 2.1 and the third fell silent. It is re-encoded with the
    usual layout of its count: the tone stays in its channel at its level."""
    if "libx264" not in av.codecs_available or "aac" not in av.codecs_available:
        pytest.skip("this FFmpeg build lacks libx264 or aac")
    tone = (np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 0.3 * 32767).astype(np.int16)
    with av.open(str(tmp_path / "six.mkv"), "w") as out:
        video, audio = out.add_stream("libx264", rate=12), out.add_stream("pcm_s16le", rate=16000)
        video.width, video.height, video.pix_fmt, audio.layout = 64, 48, "yuv420p", layout
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), "rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for start in range(0, 16000, 1000):
            samples = np.zeros((1000, channels), np.int16)
            samples[:, loud] = tone[start : start + 1000]
            sound = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
            sound.sample_rate, sound.pts = 16000, start
            out.mux(audio.encode(sound))
        out.mux(video.encode())
        out.mux(audio.encode())
    assert main(["predict", str(checkpoint), str(tmp_path / "six.mkv"), "--output-dir", str(tmp_path / "out")]) == 0
    with av.open(str(tmp_path / "out" / "six_overlay.mp4")) as container:
        track = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray() for f in container.decode(track)], axis=1)  # fltp: [channels, n]
    assert samples.shape[0] == channels
    rms = np.sqrt((samples.astype(np.float64) ** 2).mean(axis=1))
    assert rms[loud] == pytest.approx(0.3 / np.sqrt(2), rel=0.1) and np.delete(rms, loud).max() < 0.01, rms
