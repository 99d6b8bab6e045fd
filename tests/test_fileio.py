"""Atomic writes (maskformer/fileio/): complete files only, the usual file mode, nothing left behind on errors."""

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


def test_links_devices_and_pipes_are_written_through_not_replaced(tmp_path: Path) -> None:
    """`eval-predictions --output` on a symbolic link, a FIFO or /dev/full renamed a regular file over it (as root,
    /dev/full became a JSON file, and the FIFO's reader got nothing)."""
    import errno
    import stat
    import threading

    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=30)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.lstat().st_mode)

    if Path("/dev/full").exists():
        with pytest.raises(OSError) as e:
            atomic_write_text("/dev/full", "x" * 100_000)
        assert e.value.errno == errno.ENOSPC and e.value.filename == "/dev/full"
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_an_oserror_with_a_read_only_filename_still_names_the_file(tmp_path: Path) -> None:
    """PyAV's OSError on a full disk has a read-only ``filename``: naming the file raised AttributeError (a traceback
    from `predict` on a video)."""
    import errno

    class ReadOnlyName(OSError):
        @property
        def filename(self):
            return None

    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "clip_overlay.mp4", suffix=".mp4"):
            raise ReadOnlyName(errno.ENOSPC, "No space left on device")
    assert e.value.filename == str(tmp_path / "clip_overlay.mp4") and e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_and_links_to_it_write_to_the_pipe(tmp_path: Path) -> None:
    """`eval-predictions ... --output /dev/stdout | head` said "/proc/PID/fd: No such file or directory": the link
    resolved to a pipe that has no name to write a temporary file beside."""
    import subprocess
    import sys

    if not Path("/dev/stdout").exists():
        pytest.skip("no /dev/stdout here")
    (tmp_path / "out").symlink_to("/proc/self/fd/1")
    code = ("import sys\nfrom maskformer.fileio import atomic_write_text\n"
            "for name in sys.argv[1:]:\n    atomic_write_text(name, name + '\\n')\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, "/dev/stdout", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout == f"/dev/stdout\n{tmp_path / 'out'}\n", done.stderr
    assert (tmp_path / "out").is_symlink()


@pytest.mark.parametrize("length", [240, 250, 255])
def test_a_name_the_file_system_takes_is_written_however_long(tmp_path: Path, length: int) -> None:
    """Names of 242-255 bytes could not be written: the temporary name beside them (".NAME.XXXXXXXX.tmp") passed
    the 255 bytes a file name may have ("File name too long", naming the folder)."""
    from maskformer.fileio import atomic_folder, atomic_write_text

    name = "é" * ((length - 4) // 2) + "x" * ((length - 4) % 2) + ".txt"  # (two bytes a character)
    assert len(os.fsencode(name)) == length
    atomic_write_text(tmp_path / name, "ok")
    assert (tmp_path / name).read_text() == "ok"
    with atomic_folder(tmp_path / name[:-4]) as folder:
        (folder / "a").write_text("in")
    assert (tmp_path / name[:-4] / "a").read_text() == "in"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, name[:-4]])  # no temporaries left


def test_a_write_error_inside_a_temporary_folder_names_the_folder_asked_for(tmp_path: Path) -> None:
    """`convert to-hf` onto a full disk said "No space left on device" and nothing more: the error of a file written
    into atomic_folder's temporary folder (transformers' config.json) named no file, or the temporary one."""
    import errno

    from maskformer.fileio import atomic_folder

    target = tmp_path / "hf"
    with pytest.raises(OSError) as info, atomic_folder(target):
        raise OSError(errno.ENOSPC, "No space left on device")  # (as Python's own write reports it)
    assert info.value.filename == str(target)
    with pytest.raises(OSError) as info, atomic_folder(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "sub" / "config.json"))
    assert info.value.filename == str(target / "sub" / "config.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_failed_write_removes_the_folders_it_made(tmp_path, kind):
    """A write that failed (a full disk) left the output's new parent folders behind, empty; now the ones it made go
    again, and folders that were there before, or that hold something, stay."""
    from maskformer.fileio import atomic_folder, atomic_path

    writer = atomic_path if kind == "file" else atomic_folder
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="disk full"):
        with writer(tmp_path / "kept" / "new" / "deeper" / "out") as tmp:
            (tmp / "x").write_text("") if kind == "folder" else tmp.write_text("partial")
            raise OSError(28, "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())
    with writer(tmp_path / "kept" / "new" / "out") as tmp:  # (a write that works keeps them, of course)
        (tmp / "x").write_text("") if kind == "folder" else tmp.write_text("whole")
    assert (tmp_path / "kept" / "new" / "out").exists()
    with pytest.raises(OSError):  # a made folder that another writer filled meanwhile stays
        with writer(tmp_path / "kept" / "other" / "out") as tmp:
            (tmp_path / "kept" / "other" / "theirs").write_text("")
            raise OSError(28, "disk full")
    assert sorted(p.name for p in (tmp_path / "kept" / "other").iterdir()) == ["theirs"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_cannot_be_made_in_proc_is_named_itself() -> None:
    """`convert to-hf M /proc/nope` said "/proc: No such file or directory" (procfs answers ENOENT to a new name)."""
    from maskformer.fileio import atomic_folder

    with pytest.raises(OSError) as e, atomic_folder("/proc/nope"):
        pass
    assert e.value.filename == "/proc/nope"


def test_a_file_size_limit_met_by_torch_save_is_the_oserror_naming_the_file(tmp_path: Path) -> None:
    """Under `ulimit -f` torch.save's zip writer failed to close after the write's EFBIG, and its RuntimeError
    ("unexpected pos") came out of `train` as a traceback; the free space (above 1 MB) did not say why."""
    import errno
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from maskformer.engine.checkpoint import atomic_torch_save\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    atomic_torch_save({{'a': torch.zeros(1_000_000)}}, {str(tmp_path / 'x.pt')!r})\n"
        "except OSError as e:\n"
        "    print(e.errno, e.filename)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == [str(errno.EFBIG), str(tmp_path / "x.pt")], r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
