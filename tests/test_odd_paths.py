"""Paths that lead nowhere: symbolic link loops, dangling links, named pipes and devices given where a file or folder
is expected end in one line naming the path and exit 2 (a traceback or "no such file" before), and a folder's looped
entry is skipped and named like any unreadable image."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.cli import main
from maskformer.engine.checkpoint import save_checkpoint
from maskformer.fileio import broken_link


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    cfg = maskformer.load_config(DEMO_YAML)
    net = maskformer.build_model(cfg)
    save_checkpoint(path, cfg=cfg, model=net, meta=net.class_meta.to_dict() if net.class_meta else None)
    return path


def _loop(folder: Path, name: str = "lp1", other: str = "lp2") -> Path:
    (folder / name).symlink_to(other)
    (folder / other).symlink_to(name)
    return folder / name


def _image(path: Path) -> Path:
    Image.fromarray(np.full((40, 56, 3), 90, dtype=np.uint8)).save(path)
    return path


def test_broken_link_tells_a_loop_from_a_missing_target(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    (tmp_path / "gone").symlink_to("nowhere")
    _image(tmp_path / "real.png")
    (tmp_path / "fine").symlink_to("real.png")
    assert broken_link(loop) == "a symbolic link loop"
    assert broken_link(loop / "x.onnx") == "a symbolic link loop"  # (a path through the loop)
    assert broken_link(tmp_path / "gone") == "a symbolic link to nowhere, which does not exist"
    assert broken_link(tmp_path / "fine") is None
    assert broken_link(tmp_path / "real.png") is None
    assert broken_link(tmp_path / "missing.png") is None  # (no link: the caller's own "not found")


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{model}", "{image}", "--output-dir", "{loop}"],
        ["eval", "{model}", "--output-dir", "{loop}"],
        ["export", "onnx", "{model}", "{loop}/m.onnx"],
        ["convert", "to-detectron2", "{model}", "{loop}/m.pkl"],
        ["train", "{loop}", "--output-dir", "{tmp}/run"],
        ["train", str(DEMO_YAML), "--set", "train.max_iters=1", "--output-dir", "{loop}"],
        ["demo", "--output-dir", "{loop}"],
    ],
    ids=["predict-out", "eval-out", "export", "convert", "train-config", "train-out", "demo-out"],
)
def test_a_symbolic_link_loop_is_one_line(tmp_path: Path, model: Path, capsys, command: list[str]) -> None:
    """Each ended in `RuntimeError: Symlink loop from ...` with a traceback, or named the loop a missing link."""
    loop = _loop(tmp_path)
    image = _image(tmp_path / "a.png")
    argv = [w.format(model=model, image=image, loop=loop, tmp=tmp_path) for w in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lp1" in err[0] and err[0].endswith(": a symbolic link loop"), err
    assert "Traceback" not in "".join(err)


def test_a_looped_entry_in_a_folder_is_skipped_and_the_rest_written(tmp_path: Path, model: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    _loop(folder, "loop1.png", "loop2.png")
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "semantic"]) == 2
    err = capsys.readouterr().err
    assert f"skipped {folder / 'loop1.png'}: a symbolic link loop" in err
    assert "2 of 3 file(s) unreadable" in err
    assert (out / "a_labels.png").is_file()


def test_a_dangling_link_among_several_inputs_is_skipped_like_a_pipe(tmp_path: Path, model: Path, capsys) -> None:
    """A dangling link named on the command line stopped the whole run ("no such file or folder"), while a named
    pipe beside it was skipped with the rest written."""
    image = _image(tmp_path / "a.png")
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    out = tmp_path / "o"
    assert main(["predict", str(model), str(image), str(tmp_path / "gone.png"), "--output-dir", str(out),
                 "--task", "semantic"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'gone.png'}: a symbolic link to nowhere.png, which does not exist" in err
    assert (out / "a_labels.png").is_file()


@pytest.mark.parametrize("kind", ["fifo", "dangling", "device"])
@pytest.mark.parametrize("command", ["predict", "info", "train"])
def test_a_model_or_config_that_is_no_file_is_named_for_what_it_is(tmp_path: Path, capsys, kind: str,
                                                                    command: str) -> None:  # fmt: skip
    """A named pipe, /dev/null or a dangling link as MODEL or config said "no such file, and not a model name" or
    "config file not found" (with a "did you mean" naming the same path)."""
    if kind == "fifo":
        path = tmp_path / "x.pt"
        os.mkfifo(path)
        why = "not a regular file (a named pipe, socket or device)"
    elif kind == "dangling":
        path = tmp_path / "x.pt"
        path.symlink_to("nowhere.pt")
        why = "a symbolic link to nowhere.pt, which does not exist"
    else:
        path = Path("/dev/null")
        why = "not a regular file (a named pipe, socket or device)"
    argv = {"predict": ["predict", str(path), str(_image(tmp_path / "a.png")), "--output-dir", str(tmp_path / "o")],
            "info": ["info", str(path)], "train": ["train", str(path)]}[command]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: {why}" in err[0], err
    assert "did you mean" not in err[0]


def test_a_name_too_long_for_the_file_system_is_the_users_side(tmp_path: Path, model: Path, capsys) -> None:
    """The output name derived from a 250-character input name ended in exit 1 (kept for a full disk or an I/O
    error); it is the user's to change (2)."""
    image = _image(tmp_path / ("L" * 246 + ".png"))
    assert main(["predict", str(model), str(image), "--output-dir", str(tmp_path / "o"), "--task", "semantic"]) == 2
    err = capsys.readouterr().err
    assert "File name too long" in err and "Traceback" not in err
