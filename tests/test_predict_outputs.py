"""``maskformer predict`` outputs on datasets whose category ids are not 0..K-1 (COCO panoptic: 1..200 with gaps)."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.cli import main
from maskformer.data import load_meta
from maskformer.engine.checkpoint import save_checkpoint


def test_panoptic_predictions_json_uses_the_dataset_category_ids(tmp_path: Path) -> None:
    sets = ["model.num_classes=133", "data.dataset=coco_panoptic", "inference.panoptic_on=true", "model.num_queries=12",
            "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    model = maskformer.build_model(cfg)
    coco = load_meta("coco_panoptic")
    assert model.class_meta is not None and model.class_meta.classes == coco.classes
    save_checkpoint(tmp_path / "coco.pt", cfg=cfg, model=model, meta=model.class_meta.to_dict())
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "coco.pt"), str(tmp_path / "street.png"), "--output-dir",
                 str(tmp_path / "out")]) == 0  # fmt: skip
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    coco_ids = [coco.contiguous_to_dataset_id[i] for i in range(133)]
    assert coco_ids[:3] == [1, 2, 3] and coco_ids[-1] == 200  # COCO's ids (not contiguous)
    assert [c["id"] for c in pred["categories"]] == coco_ids
    by_id = {c["id"]: c for c in pred["categories"]}
    assert by_id[1]["name"] == "person" and by_id[1]["isthing"] == 1
    segments = pred["annotations"][0]["segments_info"]
    assert segments, "no segments: the test needs at least one to check"
    for s in segments:  # a segment's id, name and thing flag agree with the COCO table
        assert by_id[s["category_id"]]["name"] == s["category_name"]
        assert coco.classes[coco.dataset_id_to_contiguous[s["category_id"]]] == s["category_name"]
        assert bool(by_id[s["category_id"]]["isthing"]) == s["isthing"]
    pan = np.asarray(Image.open(tmp_path / "out" / "street_panoptic.png")).astype(np.int64)
    ids = pan[..., 0] + 256 * pan[..., 1] + 65536 * pan[..., 2]
    assert pan.shape == (96, 128, 3)
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}


def _checkpoint(path: Path, *overrides: str) -> Path:
    cfg = maskformer.load_config(DEMO_YAML, overrides=list(overrides))
    model = maskformer.build_model(cfg)
    save_checkpoint(path, cfg=cfg, model=model, meta=model.class_meta.to_dict() if model.class_meta else None)
    return path


def _images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((40, 56, 3), 30 * i, dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_panoptic_on_a_per_pixel_baseline_is_one_line_before_any_output(tmp_path: Path, capfd) -> None:
    checkpoint = _checkpoint(tmp_path / "pp.pt", "model.meta_arch=per_pixel")
    images = _images(tmp_path / "in", 3)
    code = main(["predict", str(checkpoint), str(images), "--output-dir", str(tmp_path / "out"), "--task", "panoptic"])
    err = capfd.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and "per-pixel baseline" in err, err  # (no progress bar)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_skipped_image_is_named_on_its_own_line(tmp_path: Path, capfd) -> None:
    checkpoint = _checkpoint(tmp_path / "m.pt")
    images = _images(tmp_path / "in", 3)
    (images / "im1.png").write_bytes(b"not a png")
    code = main(["predict", str(checkpoint), str(images), "--output-dir", str(tmp_path / "out"), "--task", "semantic"])
    lines = capfd.readouterr().err.replace("\r", "\n").splitlines()
    assert code == 2
    skipped = [line for line in lines if "predict: skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("maskformer predict: skipped ") and "im1.png" in skipped[0]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.png")) == ["im0_labels.png", "im2_labels.png"]


def test_predict_panoptic_then_eval_predictions_against_coco_ground_truth(tmp_path: Path, capsys) -> None:
    """The user path: predict a COCO-layout folder, score predictions.json with the dataset's own JSON (COCO image ids
    are numbers, predict names images by file stem; category ids must be COCO's)."""
    from test_panoptic_semantic import _coco_tree

    root = _coco_tree(tmp_path / "coco")
    sets = ["model.num_classes=133", "data.dataset=coco_panoptic", "inference.panoptic_on=true", "model.num_queries=12",
            "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]  # fmt: skip
    checkpoint = _checkpoint(tmp_path / "coco.pt", *sets)
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), str(root / "val2017"), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    code = main(["eval-predictions", "panoptic", "--gt-json", str(root / "annotations" / "panoptic_val2017.json"),
                 "--gt-dir", str(root / "panoptic_val2017"), "--pred-json", str(out / "predictions.json"),
                 "--pred-dir", str(out), "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)
    assert metrics["All"]["n"] >= 4  # person, car, grass-merged, road: every ground-truth category is counted
    assert 0.0 <= metrics["PQ"] <= 100.0


def test_semantic_segments_say_which_classes_are_things() -> None:
    """A semantic result's segment list flags thing classes as the class table does (it said false for all)."""
    import numpy as np

    from maskformer.inference.render import render

    labels = np.zeros((8, 10), dtype=np.int64)
    labels[:, 5:] = 2
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    colors = np.array([[0, 0, 0], [10, 10, 10], [200, 0, 0]], dtype=np.uint8)
    shown = render(image, labels, "semantic", ["sky", "car", "person"], colors, legend=False, thing_ids={1, 2})
    assert {s["label"]: s["isthing"] for s in shown.segments} == {"sky": False, "person": True}
    values = render(image, labels, "semantic", ["sky", "car", "person"], colors, legend=False, label_values=[3, 7, 300])
    assert values.label.dtype == np.uint16 and set(np.unique(values.label).tolist()) == {3, 300}


def test_device_names_subfolders_and_output_folders_are_checked_first(tmp_path: Path, capsys) -> None:
    """Each a one-line error before the model is loaded, or (a folder named like an image) not an input at all."""
    import pytest

    from maskformer import Predictor
    from maskformer.errors import ConfigError

    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 2)
    (folder / "sub.png").mkdir()  # a folder is not an image, whatever its name
    (folder / "clip.mp4").mkdir()
    image = str(folder / "im0.png")
    cases = {
        ("--device", "foo"): "device 'foo': not a device name",
        ("--device", "meta"): "device 'meta': this package runs on cpu or cuda, not meta",
        ("--device", "cpu:1"): "device 'cpu:1': the CPU is one device",
        ("--output-dir", ""): "--output-dir is empty",
    }
    for (flag, value), words in cases.items():
        args = ["predict", str(model), image, "--output-dir", str(tmp_path / "o"), flag, value]
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    with pytest.raises(ConfigError, match="not a device name"):
        Predictor.from_checkpoint(model, device="foo")
    assert main(["predict", str(model), str(folder), "--output-dir", str(tmp_path / "o"), "--task", "semantic"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "im0_labels.png", "im0_overlay.png", "im1_labels.png", "im1_overlay.png"
    ]  # fmt: skip


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_no_file(tmp_path: Path, capsys, monkeypatch) -> None:
    import errno

    write_bytes = Path.write_bytes

    def full(self, data):
        if self.suffix != ".png":
            return write_bytes(self, data)
        write_bytes(self, data[:10])  # what a writer leaves when the disk fills mid-file
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    model = _checkpoint(tmp_path / "m.pt")
    _images(tmp_path / "in", 1)
    monkeypatch.setattr(Path, "write_bytes", full)
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "in" / "im0.png"), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"maskformer predict: error: {tmp_path / 'o' / 'im0_overlay.png'}: No space left on device"]
    assert not (tmp_path / "o").exists()  # nothing written: not even the folder stays


def test_eval_tta_on_a_panoptic_only_model_is_refused_as_predict_does(tmp_path: Path, capsys) -> None:
    """It ran and printed PQ computed without TTA (the original has no panoptic TTA) as if the flag had applied."""
    sets = ["model.num_classes=133", "data.dataset=coco_panoptic", "inference.panoptic_on=true",
            "inference.semantic_on=false"]  # fmt: skip
    model = _checkpoint(tmp_path / "coco.pt", *sets)
    capsys.readouterr()
    assert main(["eval", str(model), "--tta", "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test-time augmentation is for semantic labels only" in err[0], err
    assert "--set inference.panoptic_on=false" in err[0] and "--task" not in err[0]  # eval has no --task


def test_legend_letters_beyond_ascii_are_drawn_not_boxed() -> None:
    """A Cyrillic class name and an accented file name: drawn with an outline font that has the letters (Pillow's
    default font draws boxes for them); ASCII legends too, at the same width."""
    import pytest

    from maskformer.inference import visualize

    font = visualize._font(["дорога", "straße.jpg"])
    if not hasattr(font, "path") or not isinstance(font.path, str):
        pytest.skip(f"none of {visualize._WIDE_FONTS} is installed (Debian: fonts-dejavu-core)")
    assert all(visualize._has_glyph(font, ch) for ch in "доргаß")
    assert not visualize._has_glyph(font, "\u0378")  # an unassigned Greek code point: the box, so the test can fail
    image = np.zeros((40, 60, 3), np.uint8)
    wide = visualize.with_legend(image, [("дорога", (9, 9, 9))], title="straße.jpg")
    boxed = visualize.with_legend(image, [("\u0378" * 6, (9, 9, 9))], title="stra\u0378e.jpg")
    assert np.asarray(wide).tobytes() != np.asarray(boxed).tobytes()
    assert visualize.with_legend(image, [("road", (9, 9, 9))], title="street.jpg").size == (60 + 12 + 70 + 24, 48)
    # ASCII too: Pillow's default font has ~1 px spaces at this size ("no segments found" read "nosegmentsfound")
    note = np.asarray(visualize.with_legend(image, [], empty="no segments found").convert("L"))[:, 60:]
    ink = (note < 160).any(axis=0)
    columns = np.flatnonzero(ink)
    gaps = np.diff(columns) - 1  # blank columns between inked ones
    assert sorted(gaps)[-2:][0] >= 3, gaps  # the two spaces


def test_an_empty_panoptic_result_says_so_in_its_legend() -> None:
    """No segment over the thresholds: the picture was the bare image with an empty legend column, which reads as a
    failure to draw; now the legend says that nothing was found."""
    from maskformer.inference import visualize

    image = np.full((40, 60, 3), 90, np.uint8)
    pan = np.zeros((40, 60), np.int32)
    picture = np.asarray(visualize.panoptic_picture(image, pan, [], ["road"], np.array([[9, 9, 9]]), title="a.jpg"))
    untitled = np.asarray(visualize.panoptic_picture(image, pan, [], ["road"], np.array([[9, 9, 9]])))
    assert (picture[:, :60] == 90).all()  # the image itself is left as it is
    note_rows = untitled[4:20, 60:]  # the first legend row (no title): the note
    assert (note_rows < 255).any() and (untitled[20:, 60:] == 255).all()
    assert (picture[20:36, 60:] < 255).any()  # under the title


def test_a_file_named_twice_is_predicted_once_and_two_files_of_one_name_are_refused(tmp_path: Path, capfd) -> None:
    checkpoint = _checkpoint(tmp_path / "m.pt", "inference.panoptic_on=true")
    images = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    twice = [str(images / "im1.png"), str(images / ".." / "in" / "im1.png")]
    assert main(["predict", str(checkpoint), str(images), *twice, "--output-dir", str(out), "--task", "panoptic"]) == 0
    pred = json.loads((out / "predictions.json").read_text())
    assert sorted(a["image_id"] for a in pred["annotations"]) == ["im0", "im1", "im2"]
    assert "3 file(s)" in capfd.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((40, 56, 3), dtype=np.uint8)).save(other / "im1.png")
    code = main(["predict", str(checkpoint), str(images), str(other / "im1.png"), "--output-dir", str(tmp_path / "o2")])
    err = capfd.readouterr().err
    assert code == 2 and "same name 'im1'" in err and not (tmp_path / "o2").exists()
    Image.fromarray(np.zeros((40, 56, 3), dtype=np.uint8)).save(other / "im2.png")  # (all clashes said at once)
    code = main(["predict", str(checkpoint), str(images), str(other), "--output-dir", str(tmp_path / "o2")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].endswith("would overwrite (and 1 more such pair(s))"), err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_a_library_swallowed_still_stops_predict_over_a_folder(tmp_path: Path, capfd, monkeypatch) -> None:
    """The KeyboardInterrupt of a SIGTERM that lands where Python ignores exceptions (a __del__, a fork hook) used to
    leave ``predict`` running over the rest of a folder: the CLI's handler also sets a flag each image checks."""
    from conftest import swallow_a_sigterm_after
    from maskformer.inference.predictor import Predictor

    calls = swallow_a_sigterm_after(monkeypatch, Predictor, "__call__")
    checkpoint, images, out = _checkpoint(tmp_path / "m.pt"), _images(tmp_path / "images", 4), tmp_path / "out"
    code = main(["predict", str(checkpoint), str(images), "--output-dir", str(out), "--task", "semantic"])
    err = capfd.readouterr().err
    assert code == 143 and "maskformer predict: interrupted" in err, err  # 128 + SIGTERM
    assert len(calls) == 1  # stopped before the second image


def test_recursive_folders_keep_their_layout_and_a_flat_search_says_where_images_are(tmp_path: Path, capsys) -> None:
    """A Cityscapes-like tree (DIR/city/x.png) gave "no images found" with no hint; --recursive reads it, the outputs
    keep the subfolders (two cities' x.png do not overwrite each other), hidden files, the output folder inside the
    input and a symbolic link back up are left out."""
    import json
    import shutil

    model = _checkpoint(tmp_path / "m.pt")
    root = tmp_path / "in"
    root.mkdir()
    for city in ("bonn", "ulm"):
        _images(root / city, 2)
    (root / "bonn" / "._im0.png").write_bytes(b"macOS metadata")
    (root / "ulm" / "up").symlink_to(root)
    out = root / "pred"
    assert main(["predict", str(model), str(root), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("its subfolders hold 4: add --recursive to read them"), err
    _images(root / "top", 1)  # images at the top too: those are read, and the rest is said to be left out
    shutil.move(root / "top" / "im0.png", root / "top.png")
    assert main(["predict", str(model), str(root), "--output-dir", str(tmp_path / "flat"), "--task", "semantic"]) == 0
    assert (
        f"note: {root}: its subfolders hold 4 more file(s) to read, left out: add --recursive"
        in capsys.readouterr().err
    )
    (root / "top.png").unlink()
    (root / "top").rmdir()
    for task, ending in (("panoptic", "_panoptic.png"), ("semantic", "_labels.png")):
        assert main(["predict", str(model), str(root), "--output-dir", str(out), "--recursive", "--task", task]) == 0
        assert "wrote results for 4 file(s)" in capsys.readouterr().out
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob(f"*{ending}"))
        assert written == [f"{city}/im{i}{ending}" for city in ("bonn", "ulm") for i in (0, 1)], written
        if task == "panoptic":  # (the semantic run replaces these outputs: one task's per image)
            annotations = json.loads((out / "predictions.json").read_text())["annotations"]
            names = [f"{c}/im{i}_panoptic.png" for c in ("bonn", "ulm") for i in (0, 1)]
            assert [a["file_name"] for a in annotations] == names

    # and scored against a ground truth of the same layout (here the predictions themselves: 100 % pixel accuracy)
    gt = tmp_path / "gt"
    for label in out.rglob("*_labels.png"):
        (gt / label.parent.relative_to(out)).mkdir(parents=True, exist_ok=True)
        shutil.copy(label, gt / label.relative_to(out).parent / label.name.replace("_labels", ""))
    (gt / "zlink").symlink_to(gt / "ulm")  # (the same folder again: read once, as predict reads its inputs)
    k = str(maskformer.load_config(DEMO_YAML).model.num_classes)
    scored = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(out), "--num-classes", k,
              "--ignore-label", "255", "--json"]  # fmt: skip
    assert main(scored) == 2
    assert capsys.readouterr().err.strip().endswith("no .png label files (its subfolders hold 4: add --recursive)")
    assert main([*scored, "--recursive"]) == 0
    assert json.loads(capsys.readouterr().out)["pACC"] == 100.0
    # an --output-dir inside the tree is left out of the inputs: refused when it holds images of the user's own
    (root / "ulm" / "mine").mkdir()
    shutil.copy(root / "ulm" / "im0.png", root / "ulm" / "mine" / "own.png")
    assert main(["predict", str(model), str(root), "--output-dir", str(root / "ulm" / "mine"), "--recursive"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds images that are not results" in err[0] and "own.png" in err[0], err


def test_results_never_overwrite_or_join_the_inputs(tmp_path: Path, capsys) -> None:
    """--output-dir the input folder overwrote the user's photo_labels.png with photo.jpg's labels, and each new run
    read the last one's outputs as images (2 -> 6 -> 14 files)."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 1)
    (folder / "im0_labels.png").write_bytes((folder / "im0.png").read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for inputs, words in (
        ([str(folder)], f"--output-dir {folder} is an input folder too"),
        ([str(folder / "im0.png"), str(folder / "im0_labels.png")],
         f"{folder / 'im0_labels.png'}: the results of {folder / 'im0.png'} would overwrite it"),
    ):  # fmt: skip
        assert main(["predict", str(model), *inputs, "--output-dir", str(folder), "--task", "semantic"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert (
        main(["predict", str(model), str(folder / "im0.png"), "--output-dir", str(folder), "--task", "semantic"]) == 0
    )
    assert sorted(p.name for p in folder.iterdir()) == ["im0.png", "im0_labels.png", "im0_overlay.png"]  # (its own)


def test_a_panoptic_run_stopped_early_still_lists_its_written_segments(tmp_path: Path, capsys) -> None:
    """--strict stopping at a bad image (or an interrupt) left *_panoptic.png files without predictions.json, whose
    segment table they need."""
    import json

    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 3)
    (folder / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "panoptic", "--strict"]) == 2
    assert "im1.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*_panoptic.png")) == ["im0_panoptic.png"]
    listed = json.loads((out / "predictions.json").read_text())["annotations"]
    assert [a["file_name"] for a in listed] == ["im0_panoptic.png"]


def test_a_broken_link_in_a_folder_is_named_not_left_out(tmp_path: Path, capsys) -> None:
    """A dangling photo.jpg link in a folder was left out without a word (exit 0)."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 1)
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert main(["predict", str(model), str(folder), "--output-dir", str(tmp_path / "o"), "--task", "semantic"]) == 2
    err = capsys.readouterr().err
    assert f"1 of 2 file(s) unreadable: {folder / 'gone.jpg'}" in err
    assert f"{folder / 'gone.jpg'}: a symbolic link to {tmp_path / 'nowhere.jpg'}, which does not exist" in err
    assert (tmp_path / "o" / "im0_labels.png").is_file()


def test_a_png_output_that_is_a_pipe_is_written_through(tmp_path: Path) -> None:
    """A FIFO named x_labels.png ended `predict` with "File or stream is not seekable" (Pillow's PNG writer seeks)."""
    import os
    import threading

    from maskformer.inference.visualize import save_png

    fifo = tmp_path / "x_labels.png"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    save_png(np.full((4, 6), 7, np.uint8), fifo)
    reader.join(timeout=30)
    assert got and np.asarray(Image.open(io.BytesIO(got[0]))).tolist() == [[7] * 6] * 4


def test_a_second_panoptic_run_into_the_folder_keeps_the_first_runs_entries(tmp_path: Path, capsys) -> None:
    """Predicting a.png, then b.png, into one folder left a_panoptic.png without its segments in predictions.json
    (also when the rest of an interrupted run is predicted). Entries of PNGs that still exist and that the later run
    does not rewrite are kept; another model's table (other categories) is replaced, with a note."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 3)
    out = tmp_path / "o"

    def run(*names: str) -> list[str]:
        args = ["predict", str(model), *(str(folder / n) for n in names), "--output-dir", str(out), "--task"]
        assert main([*args, "panoptic"]) == 0
        return [a["file_name"] for a in json.loads((out / "predictions.json").read_text())["annotations"]]

    assert run("im0.png") == ["im0_panoptic.png"]
    assert run("im1.png", "im0.png") == ["im1_panoptic.png", "im0_panoptic.png"]  # (im0 rewritten: listed once)
    (out / "im1_panoptic.png").unlink()
    assert run("im2.png") == ["im0_panoptic.png", "im2_panoptic.png"]  # (im1's PNG is gone: so is its entry)
    table = json.loads((out / "predictions.json").read_text())
    table["categories"][0]["name"] = "another model's class"
    (out / "predictions.json").write_text(json.dumps(table))
    capsys.readouterr()
    assert run("im1.png") == ["im1_panoptic.png"]
    assert "2 panoptic PNG(s) of an earlier run with other categories" in capsys.readouterr().err


def test_predicting_an_image_again_with_the_other_task_removes_its_earlier_outputs(tmp_path: Path) -> None:
    """A semantic run after a panoptic one into one folder left the panoptic PNG and its predictions.json entry
    next to the new semantic overlay (and eval-predictions scored the old result); the reverse left _labels.png."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 2)
    out = tmp_path / "o"

    def run(task: str, *names: str) -> set[str]:
        args = ["predict", str(model), *(str(folder / n) for n in names), "--output-dir", str(out), "--task", task]
        assert main(args) == 0
        return {p.name for p in out.iterdir()}

    assert run("panoptic", "im0.png", "im1.png") >= {"im0_panoptic.png", "im1_panoptic.png", "predictions.json"}
    files = run("semantic", "im0.png")
    assert "im0_labels.png" in files and "im0_panoptic.png" not in files and "im1_panoptic.png" in files
    table = json.loads((out / "predictions.json").read_text())
    assert [a["file_name"] for a in table["annotations"]] == ["im1_panoptic.png"]
    files = run("semantic", "im1.png")
    assert "predictions.json" not in files and not any(name.endswith("_panoptic.png") for name in files)
    files = run("panoptic", "im0.png")
    assert "im0_labels.png" not in files and "im1_labels.png" in files and "im0_panoptic.png" in files


def test_a_semantic_run_after_a_recursive_panoptic_one_drops_the_entries_of_subfolder_images(tmp_path: Path) -> None:
    """With --recursive, the panoptic PNGs of images in subfolders were removed but their predictions.json entries
    (file_name "sub/x_panoptic.png") stayed, pointing at files that no longer existed."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 1)
    _images(folder / "sub", 1)
    out = tmp_path / "o"

    def run(task: str) -> list[str]:
        args = ["predict", str(model), str(folder), "--recursive", "--output-dir", str(out), "--task", task]
        assert main(args) == 0
        table = out / "predictions.json"
        return sorted(a["file_name"] for a in json.loads(table.read_text())["annotations"]) if table.is_file() else []

    assert run("panoptic") == ["im0_panoptic.png", "sub/im0_panoptic.png"]
    assert run("semantic") == [] and (out / "sub" / "im0_labels.png").is_file()
    assert not list(out.rglob("*_panoptic.png"))


def test_videos_without_pyav_are_one_line_naming_them_before_any_output(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without the video extra, a folder of images and a clip said "skipped videos need PyAV" (no file named), wrote
    the images and called the clip "unreadable"."""
    import sys

    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 2)
    (folder / "clip.mp4").write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # (how an absent package looks to import and find_spec)
    assert main(["predict", str(model), str(folder), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"maskformer predict: error: {folder / 'clip.mp4'}: videos need PyAV: pip install " \
                  "'maskformer[video]'", err  # fmt: skip
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_entries_of_panoptic_pngs_a_killed_run_deleted_are_dropped_by_the_next_run(tmp_path: Path) -> None:
    """A semantic run over a panoptic folder killed (kill -9) after deleting some panoptic PNGs and before dropping
    their entries left predictions.json naming missing files, and the next complete run did not repair it."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 3)
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "panoptic"]) == 0
    (out / "im0_panoptic.png").unlink()  # what the killed semantic run did to im0 and im1 before it died
    (out / "im1_panoptic.png").unlink()
    assert main(["predict", str(model), str(folder / "im0.png"), "--output-dir", str(out), "--task", "semantic"]) == 0
    table = json.loads((out / "predictions.json").read_text())
    assert [a["file_name"] for a in table["annotations"]] == ["im2_panoptic.png"]


def test_two_panoptic_predicts_into_one_folder_at_once_keep_every_entry(tmp_path: Path) -> None:
    """Two `predict --task panoptic` runs into one folder at the same time each read predictions.json, merged their
    own entries and wrote it back: the later write lost the other's entries (4 of 4 tries with a large table)."""
    import subprocess
    import sys

    model = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "o"
    assert main(["predict", str(model), str(_images(tmp_path / "first", 1)), "--output-dir", str(out),
                 "--task", "panoptic"]) == 0  # fmt: skip
    table = json.loads((out / "predictions.json").read_text())
    for i in range(20000):  # a large earlier table: its read and write take long enough for the runs to overlap
        (out / f"f{i}_panoptic.png").touch()
        table["annotations"].append({"image_id": f"f{i}", "file_name": f"f{i}_panoptic.png", "segments_info": []})
    (out / "predictions.json").write_text(json.dumps(table))
    runs = []
    for name in ("a", "b"):
        image = _images(tmp_path / name, 1) / "im0.png"
        image.rename(tmp_path / name / f"{name}.png")
        argv = ["predict", str(model), str(tmp_path / name / f"{name}.png"), "--output-dir", str(out), "--task",
                "panoptic"]  # fmt: skip
        runs.append(subprocess.Popen([sys.executable, "-m", "maskformer.cli", *argv], stdout=subprocess.DEVNULL))
    assert [r.wait(timeout=300) for r in runs] == [0, 0]
    names = {a["file_name"] for a in json.loads((out / "predictions.json").read_text())["annotations"]}
    assert {"a_panoptic.png", "b_panoptic.png", "im0_panoptic.png"} <= names and len(names) == 20003


def test_a_folder_scan_takes_the_netpbm_pictures_a_file_name_takes(tmp_path: Path) -> None:
    """`predict photos/` left .ppm files out without a word, while `predict photos/a.ppm` read it (and serve too)."""
    from maskformer.cli.predict import _collect

    for name in ("a.ppm", "b.pgm", "c.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    files, videos = _collect([str(tmp_path)])
    assert sorted(p.name for p in files) == ["a.ppm", "b.pgm", "c.png"] and not videos


def test_a_named_pipe_among_the_inputs_is_named_not_waited_on(tmp_path: Path, capsys) -> None:
    """A FIFO named f.png in a folder hung `predict` forever (Pillow opened it and waited for a writer); given by
    itself it was "no such file or folder". A FIFO named like a video or an animated GIF likewise."""
    import os

    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 1)
    for name in ("f.png", "v.mp4", "g.gif"):
        os.mkfifo(folder / name)
    assert main(["predict", str(model), str(folder), "--output-dir", str(tmp_path / "o"), "--task", "semantic"]) == 2
    err = capsys.readouterr().err
    assert "3 of 4 file(s) unreadable" in err and (tmp_path / "o" / "im0_labels.png").is_file()
    for name in ("f.png", "v.mp4", "g.gif"):
        assert f"{folder / name}: not a regular file (a named pipe" in err, err
    assert main(["predict", str(model), str(folder / "f.png"), "--output-dir", str(tmp_path / "o2")]) == 2
    assert f"{folder / 'f.png'}: not a regular file" in capsys.readouterr().err


def test_a_predictions_json_not_of_ours_is_refused_before_any_output(tmp_path: Path, capsys) -> None:
    """A predictions.json cut short (or not a table of ours) in the output folder was replaced without a word, then
    with a note; it may be someone else's file: it is now named and left alone, before any PNG is written."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 2)
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder / "im1.png"), "--output-dir", str(out), "--task", "panoptic"]) == 0
    for text, why in [('{"annotations": [', "not valid JSON"), ("[1, 2]", "not a table of annotations and categories")]:
        (out / "predictions.json").write_text(text)
        capsys.readouterr()
        args = ["predict", str(model), str(folder / "im0.png"), "--output-dir", str(out), "--task", "panoptic"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and f"{out / 'predictions.json'}: {why}, so not the segments' table" in err
        assert (out / "predictions.json").read_text() == text
        assert not (out / "im0_panoptic.png").exists()
    (out / "predictions.json").unlink()
    assert main(args) == 0
    assert [a["file_name"] for a in json.loads((out / "predictions.json").read_text())["annotations"]] == [
        "im0_panoptic.png"
    ]
    assert main(["predict", str(model), str(folder / "im0.png"), "--output-dir", str(out), "--task", "semantic"]) == 0


def test_a_named_pipe_does_not_clash_with_an_image_of_its_name(tmp_path: Path) -> None:
    """A FIFO a.png beside a.jpg refused the run as "same name 'a'", though the pipe writes nothing (it is named and
    skipped when read)."""
    import os

    from maskformer.cli.predict import _collect
    from maskformer.errors import DataError

    (tmp_path / "a.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "a.png")
    files, _ = _collect([str(tmp_path)])
    assert sorted(p.name for p in files) == ["a.jpg", "a.png"]
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="same name 'b'"):
        _collect([str(tmp_path)])


def test_a_folder_named_predictions_json_is_refused_before_any_output(tmp_path: Path, capsys) -> None:
    """A folder named predictions.json in --output-dir failed a panoptic run only after its PNGs were written."""
    model = _checkpoint(tmp_path / "m.pt")
    folder = _images(tmp_path / "in", 1)
    out = tmp_path / "o"
    (out / "predictions.json").mkdir(parents=True)
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "panoptic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"maskformer predict: error: {out / 'predictions.json'}: a folder, not a file: the panoptic results"
                   " write their segments' table there: move it or choose another --output-dir")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"]
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "semantic"]) == 0


def test_an_interrupt_between_an_images_files_waits_until_all_are_written(tmp_path: Path, capfd, monkeypatch) -> None:
    """A Ctrl-C after an image's overlay was written and before its panoptic PNG left an overlay with no PNG and no
    predictions.json entry (a QA walk). Now its files are written together, then the run stops."""
    import os
    import signal

    import maskformer.inference.visualize as visualize

    checkpoint, images, out = _checkpoint(tmp_path / "m.pt"), _images(tmp_path / "images", 3), tmp_path / "out"
    real = visualize.save_png

    def interrupted_save(image, path) -> None:
        real(image, path)
        if str(path).endswith("_overlay.png"):
            os.kill(os.getpid(), signal.SIGINT)  # (as Ctrl-C: Python's handler raises where the main thread is)

    monkeypatch.setattr(visualize, "save_png", interrupted_save)
    code = main(["predict", str(checkpoint), str(images), "--output-dir", str(out), "--task", "panoptic"])
    assert code == 130 and "maskformer predict: interrupted" in capfd.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["im0_overlay.png", "im0_panoptic.png", "predictions.json"], written
    assert [a["image_id"] for a in json.loads((out / "predictions.json").read_text())["annotations"]] == ["im0"]


def test_a_link_beside_its_file_gives_the_results_the_files_own_name(tmp_path: Path, capfd) -> None:
    """A folder holding photo.png and alias.png -> photo.png wrote only alias_* (the name met first), without a word;
    pairing outputs with ground truth by name then failed for photo."""
    checkpoint, images, out = _checkpoint(tmp_path / "m.pt"), _images(tmp_path / "images", 1), tmp_path / "out"
    (images / "alias.png").symlink_to("im0.png")  # (sorted before im0.png)
    assert main(["predict", str(checkpoint), str(images), "--output-dir", str(out), "--task", "semantic"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0_labels.png", "im0_overlay.png"]
    assert "note: alias and " in capfd.readouterr().err


def test_a_tiff_of_several_pages_says_only_the_first_is_predicted(tmp_path: Path, capfd) -> None:
    """A 2-page TIFF gave one result without a word (a QA walk)."""
    checkpoint, out = _checkpoint(tmp_path / "m.pt"), tmp_path / "out"
    pages = [Image.fromarray(np.full((40, 56, 3), v, dtype=np.uint8)) for v in (20, 200)]
    pages[0].save(tmp_path / "scan.tiff", save_all=True, append_images=pages[1:])
    assert main(["predict", str(checkpoint), str(tmp_path / "scan.tiff"), "--output-dir", str(out)]) == 0
    assert f"note: {tmp_path / 'scan.tiff'} holds 2 pictures: the first is predicted" in capfd.readouterr().err
