"""Paths that lead nowhere: symbolic link loops, dangling links, named pipes and devices given where a file or folder
is expected end in one line naming the path and exit 2 (a traceback or "no such file" before), and a folder's looped
entry is skipped and named like any unreadable image."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.cli import main
from maskformer.engine.checkpoint import save_checkpoint


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
    from maskformer.fileio import broken_link

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


def test_a_demo_run_that_cannot_be_moved_aside_is_left_whole(tmp_path: Path, monkeypatch) -> None:
    """A file of the earlier demo run that could not be moved aside (a folder not writable) left that run split: its
    checkpoints in a hidden `.out.previous-*` folder beside it, its pictures in place."""
    import shutil

    from maskformer.cli import demo

    out = tmp_path / "dm"
    (out / "pictures").mkdir(parents=True)
    shutil.copy(DEMO_YAML, out / "config.yaml")
    for name in ("model_final.pt", "checkpoint_last.pt", "metrics.json"):
        (out / name).write_text(name)
    (out / "pictures" / "val_000.png").write_text("picture")
    before = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    real_rename = Path.rename

    def rename(self: Path, target):  # noqa: ANN001, ANN202
        if self.parent.name == "pictures":
            raise PermissionError(13, "Permission denied", str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(PermissionError), demo._replacing_previous_demo(out):
        pytest.fail("the new demo must not start")
    monkeypatch.undo()
    assert {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dm"]  # (no hidden folder left beside it)


def test_an_empty_output_folder_is_filled_in_place(tmp_path: Path) -> None:
    """`convert to-hf` into an empty folder that is a mount point failed ("Device or resource busy"): the folder was
    replaced by a renamed temporary one. An empty folder is now filled (the same folder, its files moved in)."""
    from maskformer.fileio import atomic_folder

    target = tmp_path / "vol"
    target.mkdir()
    inode = target.stat().st_ino
    with atomic_folder(target) as tmp:
        assert tmp.parent == target  # (on the folder's own file system)
        (tmp / "config.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"1")
    assert target.stat().st_ino == inode
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["config.json", "sub", "sub/w.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(RuntimeError), atomic_folder(other) as tmp:  # a failure leaves it empty, as it was
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("stop")
    assert list(other.iterdir()) == []


def test_convert_to_hf_into_an_empty_mounted_folder(tmp_path: Path, model: Path, capsys) -> None:
    import subprocess

    pytest.importorskip("transformers")
    volume = tmp_path / "vol"
    volume.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(volume)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        cfg = maskformer.load_config(DEMO_YAML, ["model.transformer_in_feature=res5"])
        net = maskformer.build_model(cfg)
        meta = net.class_meta.to_dict() if net.class_meta else None
        save_checkpoint(tmp_path / "res5.pt", cfg=cfg, model=net, meta=meta)
        assert main(["convert", "to-hf", str(tmp_path / "res5.pt"), str(volume)]) == 0, capsys.readouterr().err
        assert (volume / "config.json").is_file() and any(volume.glob("*.safetensors"))
        assert "Writing model shards" not in capsys.readouterr().err  # (transformers' bar after our summary line)
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_panoptic_pictures_without_their_table_entry_are_not_left(tmp_path: Path, capsys, monkeypatch) -> None:
    """When predictions.json could not be written, the new image's panoptic PNG and overlay stayed without an
    entry in it."""
    from maskformer import fileio

    image = _image(tmp_path / "a.png")
    out = tmp_path / "o"

    def refuse(path, text):  # noqa: ANN001, ANN202
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(fileio, "atomic_write_text", refuse)
    assert main(["predict", str(model_path := _panoptic(tmp_path)), str(image), "--output-dir", str(out)]) == 2
    assert "predictions.json: Operation not permitted" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
    assert model_path.is_file()


def _panoptic(tmp_path: Path) -> Path:
    sets = ["inference.panoptic_on=true", "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    net = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "pan.pt", cfg=cfg, model=net, meta=net.class_meta.to_dict() if net.class_meta else None)
    return tmp_path / "pan.pt"


@pytest.mark.parametrize("task", ["semantic", "panoptic"])
def test_a_folder_image_whose_output_name_is_too_long_is_skipped(tmp_path: Path, capsys, task: str) -> None:
    """Its outputs' names (NAME_overlay.png) passed the 255 bytes a file name may have: the run stopped at it with
    exit 1 and the later images were not predicted. It is skipped and named; the others are written."""
    folder = tmp_path / "in"
    folder.mkdir()
    long = _image(folder / ("L" * 244 + ".png"))  # (NAME_labels.png fits in 255 bytes, NAME_overlay.png does not)
    fits = _image(folder / ("F" * 243 + ".png"))  # (NAME_overlay.png fits; NAME_panoptic.png, one byte more, not)
    _image(folder / "z.png")
    model = _panoptic(tmp_path)
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", task]) == 2
    err = capsys.readouterr().err
    assert f"skipped {long}: its output name is too long for the file system" in err
    written = sorted(p.name for p in out.iterdir())
    if task == "semantic":  # (its check for a panoptic PNG of an earlier run, NAME_panoptic.png, raised "too long")
        assert f"1 of 3 file(s) have names too long for their outputs: {long}" in err
        assert written == [f"{fits.stem}_labels.png", f"{fits.stem}_overlay.png", "z_labels.png", "z_overlay.png"]
    else:
        assert f"2 of 3 file(s) have names too long for their outputs: {fits}, {long}" in err
        assert written == ["predictions.json", "z_overlay.png", "z_panoptic.png"]  # (not F..F_overlay.png alone)


def test_a_demo_into_a_folder_where_a_demo_trains_stops_before_moving_anything(tmp_path: Path) -> None:
    """A second demo moved the running demo's files aside before `train` found the folder held: when the running one
    wrote a checkpoint meanwhile, its config.yaml and metrics.jsonl were not put back but deleted."""
    import fcntl
    import shutil

    from maskformer.cli import demo
    from maskformer.errors import ConfigError

    out = tmp_path / "dm"
    out.mkdir()
    shutil.copy(DEMO_YAML, out / "config.yaml")
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "checkpoint_last.pt").write_text("x")
    aside = out.parent / f".{out.name}.previous-abcdefgh"  # (a running demo's own earlier run, kept aside)
    aside.mkdir()
    (aside / "model_final.pt").write_text("earlier")
    fd = os.open(out, os.O_RDONLY)  # the running training holds its folder (as engine/run_folder.py does)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another maskformer train is writing into this folder now"):
            with demo._replacing_previous_demo(out):
                pytest.fail("the second demo must not start")
    finally:
        os.close(fd)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_last.pt", "config.yaml", "metrics.jsonl"]
    assert (aside / "model_final.pt").read_text() == "earlier"  # (not taken for a killed demo's leftovers)
    assert "MASKFORMER_HELD_RUN_FOLDER" not in os.environ


def test_the_table_leaves_out_this_runs_pngs_that_another_run_deleted(tmp_path: Path) -> None:
    """A semantic predict into the same folder at the same time deleted x_panoptic.png (the folder keeps one task per
    image) before the panoptic run wrote its table at its end: the table listed PNGs that no longer existed."""
    from maskformer.cli.outputs import panoptic_table

    (tmp_path / "a_panoptic.png").write_bytes(b"png")
    runs = [{"image_id": n, "file_name": f"{n}_panoptic.png", "segments_info": []} for n in ("a", "b")]
    table, note = panoptic_table(tmp_path, runs, [{"id": 1, "name": "x", "isthing": 1}])
    assert [a["file_name"] for a in table["annotations"]] == ["a_panoptic.png"] and note == ""


def test_an_earlier_images_outputs_stay_when_the_table_cannot_be_written(tmp_path: Path, capsys, monkeypatch) -> None:
    """The removal of PNGs without a table entry also removed those of an image an earlier run had listed."""
    from maskformer import fileio

    image = _image(tmp_path / "first.png")
    out = tmp_path / "o"
    model = _panoptic(tmp_path)
    assert main(["predict", str(model), str(image), "--output-dir", str(out)]) == 0
    listed = (out / "predictions.json").read_text()

    def refuse(path, text):  # noqa: ANN001, ANN202
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(fileio, "atomic_write_text", refuse)
    second = _image(tmp_path / "second.png")
    assert main(["predict", str(model), str(image), str(second), "--output-dir", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["first_overlay.png", "first_panoptic.png", "predictions.json"]
    assert (out / "predictions.json").read_text() == listed


def test_a_checkpoint_written_into_a_named_pipe_can_be_interrupted_while_it_waits_for_a_reader(tmp_path: Path) -> None:
    """`convert hf FOLDER fifo.pt --overwrite` waited for a reader with Ctrl-C and SIGTERM held: only kill -9 ended
    it."""
    import signal
    import subprocess
    import sys
    import time

    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    code = ("import torch; from maskformer.engine.checkpoint import atomic_torch_save; print('ready', flush=True); "
            f"atomic_torch_save({{'a': torch.zeros(2)}}, {str(fifo)!r})")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # (now waiting in open() for a reader)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    finally:
        proc.kill()


def test_a_link_to_a_folder_is_written_through(tmp_path: Path) -> None:
    """`convert to-hf M lnk` (lnk -> a folder) replaced the link by a real folder and left the link behind as a hidden
    .lnk.XXXXXXXX.old."""
    from maskformer.fileio import atomic_folder

    for name, holds in (("empty", []), ("full", ["old.txt"])):
        target = tmp_path / name
        target.mkdir()
        for f in holds:
            (target / f).write_text("old")
        link = tmp_path / f"{name}-link"
        link.symlink_to(name)
        with atomic_folder(link) as tmp:
            (tmp / "config.json").write_text("{}")
        assert link.is_symlink() and os.readlink(link) == name
        assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "empty-link", "full", "full-link"]


@pytest.mark.parametrize("command", ["train", "demo"])
def test_a_named_pipe_as_the_run_folder_is_one_line(tmp_path: Path, capsys, command: str) -> None:
    """train / demo --output-dir FIFO waited forever (opening the folder to lock it opened the pipe)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = ["train", str(DEMO_YAML), "--set", "train.max_iters=1"] if command == "train" else ["demo"]
    assert main([*argv, "--output-dir", str(fifo)]) == 2
    assert capsys.readouterr().err.strip() == f"maskformer {command}: error: {fifo}: exists and is not a folder"


def test_eval_predictions_output_into_a_link_loop_is_refused_first(tmp_path: Path, capsys) -> None:
    """`eval-predictions ... --output lp1` (a link loop) scored everything, then replaced the link by its file."""
    loop = _loop(tmp_path)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        folder.mkdir()
        Image.fromarray(np.zeros((4, 5), dtype=np.uint8)).save(folder / "a.png")
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred), "--num-classes", "3"]
    assert main([*argv, "--output", str(loop)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{loop}: a symbolic link loop")
    assert loop.is_symlink()


def test_an_atomic_write_into_a_link_loop_leaves_the_link(tmp_path: Path) -> None:
    """Every writer (atomic_path) replaced a looped link by its file: realpath of a loop is the link itself."""
    from maskformer.fileio import atomic_write_text

    loop = _loop(tmp_path)
    with pytest.raises(OSError) as e:
        atomic_write_text(loop, "x")
    assert e.value.errno == errno.ELOOP and e.value.filename == str(loop)
    assert loop.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["lp1", "lp2"]
