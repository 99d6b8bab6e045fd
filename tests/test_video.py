"""Prediction on a video: a 12-frame clip the test writes gives a 12-frame overlaid video at the same rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maskformer.cli import main
from serve_helpers import train_tiny

av = pytest.importorskip("av")


def _write_clip(path: Path, frames: int = 12, rate: int = 12) -> list[np.ndarray]:
    images = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            image = np.full((64, 96, 3), 30, np.uint8)
            image[:, : 8 * i] = 200
            image[20:40, 30:60] = (0, 120, 255)
            images.append(image)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return images


def _read(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


@pytest.mark.parametrize("every", [1, 5])
def test_a_12_frame_clip_gives_a_12_frame_overlay(tmp_path: Path, capsys, every: int) -> None:
    checkpoint = train_tiny(tmp_path / "run")
    source = _write_clip(tmp_path / "clip.mp4")
    code = main(["predict", str(checkpoint), str(tmp_path / "clip.mp4"), "--output-dir", str(tmp_path / "out"),
                 "--task", "semantic", "--every", str(every)])  # fmt: skip
    assert code == 0
    frames, rate = _read(tmp_path / "out" / "clip_overlay.mp4")
    assert len(frames) == 12 and rate == 12.0 and frames[0].shape == (64, 96, 3)
    # the overlay is drawn: frames differ from the source well beyond compression noise
    assert np.mean([np.abs(f.astype(int) - s).mean() for f, s in zip(frames, source)]) > 10
    assert "frames/s" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip_overlay.mp4"]  # no temporary file left


def test_a_corrupt_video_is_one_line(tmp_path: Path, capsys) -> None:
    checkpoint = train_tiny(tmp_path / "run")
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    capsys.readouterr()
    code = main(["predict", str(checkpoint), str(tmp_path / "bad.mp4"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
