"""Atomic writes (maskformer/fileio.py): complete files only, the usual file mode, nothing left behind on errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maskformer.fileio import atomic_path, atomic_write_text, new_file_mode


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_mode_open_would_give(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    assert new_file_mode() == 0o666 & ~mask
    atomic_write_text(tmp_path / "a.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~mask


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_the_temporary_keeps_the_extension_writers_read(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "clip.mp4", suffix=".mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".clip.mp4.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "clip.mp4").read_bytes() == b"x"
