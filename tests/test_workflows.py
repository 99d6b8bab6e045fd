"""The paths a user walks, end to end through the CLI, on a checkpoint that ``maskformer train`` wrote.

A small folder dataset is made from real CamVid images (../shared/datasets/camvid): train -> eval -> predict (with a
corrupt file among good ones) -> convert to-hf -> transformers pipeline -> export ONNX -> Python API; a panoptic
model trained on the synthetic data -> panoptic predict; bad training data -> one line, exit 2. Each step checks
what a user would look at: class names, thing flags, output sizes, exit codes, one-line errors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskformer
from conftest import CONFIGS
from maskformer.cli import main

TINY = ["train.batch_size=2", "train.log_period=1", "train.checkpoint_period=100", "data.num_workers=0",
        "data.min_size_train=[96]", "data.crop_size=[96,96]", "test.min_size=96", "solver.warmup_iters=0"]  # fmt: skip


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def camvid_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own dataset: images/{train,val}/*.webp, labels/{train,val}/*.png, classes.json (11 CamVid classes)."""
    src = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"
    if not src.is_dir():
        pytest.skip(f"{src} is absent: the workflow tests read real CamVid images from ../shared")
    root = tmp_path_factory.mktemp("mydata")
    for split, annot, n in (("train", "trainannot", 4), ("val", "valannot", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in sorted((src / split).iterdir())[:n]:
            shutil.copy(image, root / "images" / split / image.name)
            shutil.copy(src / annot / f"{image.stem}.png", root / "labels" / split / f"{image.stem}.png")
    shutil.copy(src / "classes.json", root / "classes.json")
    return root


@pytest.fixture(scope="module")
def trained(camvid_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``maskformer train configs/folder/small.yaml --data-root mydata`` for 3 iterations (final eval on)."""
    run = tmp_path_factory.mktemp("run")
    sets = [*TINY, "train.max_iters=3", "train.eval_period=3"]
    code = main(["train", str(CONFIGS / "folder/small.yaml"), "--data-root", str(camvid_folder), "--output-dir",
                 str(run), "--quiet", *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0
    return run / "model_final.pt"


def _names(root: Path) -> list[str]:
    return [c["name"] for c in json.loads((root / "classes.json").read_text())["classes"]]


def test_trained_checkpoint_carries_the_class_table(trained: Path, camvid_folder: Path) -> None:
    obj = torch.load(trained, weights_only=True)
    classes = obj["meta"]["classes"]
    assert [c["name"] for c in classes] == _names(camvid_folder)
    assert all(isinstance(c["color"], list) and len(c["color"]) == 3 for c in classes)
    assert obj["meta"]["ignore_label"] == 11 and obj["config"]["model"]["num_classes"] == 11


def test_eval_names_the_classes(trained: Path, camvid_folder: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = _run(capsys, "eval", trained, "--data-root", camvid_folder, "--output-dir", tmp_path, "--json")
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(out) == metrics and metrics["images"] == 2
    assert metrics["classes"] == _names(camvid_folder) and set(metrics["IoU_by_class"]) == set(_names(camvid_folder))
    assert 0.0 <= metrics["mIoU"] <= 100.0


def test_predict_a_folder_with_one_corrupt_image(trained: Path, camvid_folder: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    shutil.copytree(camvid_folder / "images" / "val", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = _run(capsys, "predict", trained, images, "--output-dir", tmp_path / "out")
    assert code == 2
    assert "broken.png" in err and "Traceback" not in err
    good = sorted(p.stem for p in images.iterdir() if p.suffix == ".webp")
    for stem in good:
        labels = np.asarray(Image.open(tmp_path / "out" / f"{stem}_labels.png"))
        assert labels.shape == (360, 480) and labels.max() < 11
        assert (tmp_path / "out" / f"{stem}_overlay.png").is_file()
    assert not any("broken" in p.name for p in (tmp_path / "out").iterdir())
    code, _, err = _run(capsys, "predict", trained, images, "--output-dir", tmp_path / "strict", "--strict")
    assert code == 2 and "broken.png" in err
    code, _, _ = _run(capsys, "predict", trained, images, "--output-dir", tmp_path / "b2", "--batch-size", "2")
    assert code == 2  # the broken file again; same-size images batched give the labels of one at a time
    for stem in good:
        one, two = (np.asarray(Image.open(tmp_path / d / f"{stem}_labels.png")) for d in ("out", "b2"))
        assert np.array_equal(one, two)


def test_python_api_on_the_trained_checkpoint(trained: Path, camvid_folder: Path) -> None:
    predictor = maskformer.Predictor.from_checkpoint(trained)
    assert predictor.class_names == _names(camvid_folder) and len(predictor.colors) == 11
    assert predictor.thing_ids == frozenset() and predictor.task_default == "semantic"
    path = next((camvid_folder / "images" / "val").iterdir())
    array = np.asarray(Image.open(path).convert("RGB"))
    by_path = predictor(path)
    assert by_path.shape == (360, 480)
    assert torch.equal(predictor(array), by_path)
    assert torch.equal(predictor(Image.open(path)), by_path)
    exact = maskformer.Predictor(maskformer.load_model(trained), optimize=False)
    assert torch.equal(exact(array), by_path)  # the optimised default gives the exact path's labels


def test_convert_to_hf_and_transformers_pipeline(trained: Path, camvid_folder: Path, tmp_path: Path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    code, out, _ = _run(capsys, "convert", "to-hf", trained, tmp_path / "hf")
    assert code == 0, out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(11)] == _names(camvid_folder)
    segmenter = transformers.pipeline("image-segmentation", model=str(tmp_path / "hf"), device="cpu")
    path = next((camvid_folder / "images" / "val").iterdir())
    segments = segmenter(str(path), subtask="semantic")
    assert segments and all(s["label"] in _names(camvid_folder) for s in segments)
    assert all(s["mask"].size == (480, 360) for s in segments)


@pytest.mark.slow  # ~12 s; test_export.py runs the same command on a saved checkpoint in `make test`
def test_export_onnx_of_the_trained_checkpoint(trained: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnx")
    code, _, err = _run(capsys, "export", "onnx", trained, tmp_path / "m.onnx")
    assert code == 0, err
    assert (tmp_path / "m.onnx").stat().st_size > 100_000


def test_panoptic_workflow_keeps_thing_classes(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    sets = ["train.max_iters=2", "train.eval_period=0", "train.batch_size=2", "data.synthetic_train_size=8"]
    code = main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet",
                 *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0
    image = np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "scene.png")
    code, _, err = _run(capsys, "predict", run / "model_final.pt", tmp_path / "scene.png", "--output-dir",
                        tmp_path / "out", "--task", "panoptic")  # fmt: skip
    assert code == 0, err
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    categories = pred["categories"]
    meta = maskformer.load_model(run / "model_final.pt").class_meta
    assert [c["name"] for c in categories] == meta.classes and all(isinstance(c["name"], str) for c in categories)
    assert [c["isthing"] for c in categories] == [int(t) for t in meta.isthing] and any(meta.isthing)
    assert np.asarray(Image.open(tmp_path / "out" / "scene_panoptic.png")).shape == (128, 160, 3)
    for seg in pred["annotations"][0]["segments_info"]:
        assert seg["isthing"] == bool(meta.isthing[seg["category_id"]])
        assert seg["category_name"] == meta.classes[seg["category_id"]]


def test_paper_config_on_own_data_takes_the_class_count(camvid_folder: Path, tmp_path: Path, capsys) -> None:
    sets = [*TINY, "train.max_iters=1", "train.eval_period=1", "train.batch_size=1", "model.backbone.norm=BN",
            "model.dec_layers=1", "data.val_split=val"]  # fmt: skip
    argv = ["train", CONFIGS / "folder/maskformer_R50.yaml", "--data-root", camvid_folder, "--output-dir", tmp_path,
            "--quiet", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    code, _, err = _run(capsys, *argv, "--set", "model.num_classes=150")
    assert code == 2 and "150" in err and "11" in err and "classes.json" in err and "Traceback" not in err
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    assert "model.num_classes 150 -> 11" in err
    assert maskformer.load_model(tmp_path / "model_final.pt").class_meta.classes == _names(camvid_folder)


def test_panoptic_config_on_semantic_folder_data_is_one_line(camvid_folder: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "train", CONFIGS / "demo.yaml", "--output-dir", tmp_path, "--set",
                        "data.dataset=folder", "--data-root", camvid_folder)  # fmt: skip
    assert code == 2 and "semantic labels only" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_label_in_training_data_is_one_line(camvid_folder: Path, tmp_path: Path, capsys, workers: int) -> None:
    data = tmp_path / "data"
    shutil.copytree(camvid_folder, data)
    victim = sorted((data / "labels" / "train").iterdir())[0]
    label = np.asarray(Image.open(victim)).copy()
    label[:10, :10] = 50  # no such class (11 classes, ignore 11)
    Image.fromarray(label).save(victim)
    sets = [*TINY, "train.max_iters=2", "train.eval_period=0", f"data.num_workers={workers}", "train.batch_size=4"]
    code, _, err = _run(capsys, "train", CONFIGS / "folder/small.yaml", "--data-root", data, "--output-dir",
                        tmp_path / "run", "--quiet", *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 2
    assert victim.name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_checkpoint_errors_are_one_clear_line(tmp_path: Path, trained: Path, capsys) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("hello, not weights\n")
    readme = tmp_path / "README.md"  # (text with "model" and ":" was called a config)
    readme.write_text("# My model\n\nUsage: maskformer predict model_final.pt image.jpg\n")
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x08\x08\x12\x07pytorch")
    config = tmp_path / "config_without_suffix"
    config.write_text("# mine\n_base_: demo.yaml\nmodel:\n  num_queries: 10\n")
    cases = {
        cut: "truncated or corrupt",
        CONFIGS / "demo.yaml": "a config (YAML), not a checkpoint",
        config: "a config (YAML), not a checkpoint",
        text: "a text file, not a torch checkpoint",
        readme: "a text file, not a torch checkpoint",
        graph: "an ONNX graph",
        tmp_path / "missing.pt": "no such file",
    }
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for path, words in cases.items():
        code, _, err = _run(capsys, "predict", path, image, "--output-dir", tmp_path / "o")
        assert code == 2 and words in err and str(path) in err and len(err.strip().splitlines()) == 1, err
    if not torch.cuda.is_available():
        code, _, err = _run(capsys, "predict", trained, image, "--output-dir", tmp_path / "o", "--device", "cuda")
        assert code == 2 and "CUDA is not available" in err


def test_every_output_file_gets_the_usual_file_mode(trained: Path, camvid_folder: Path, tmp_path: Path,
                                                    capsys) -> None:  # fmt: skip
    """Outputs are written atomically through a temporary file; they must not keep mkstemp's 0600 (a shared
    predictions folder or a served checkpoint others cannot read)."""
    saved = os.umask(0o022)
    try:
        image = next((camvid_folder / "images" / "val").iterdir())
        assert _run(capsys, "predict", trained, image, "--output-dir", tmp_path / "pred")[0] == 0
        assert _run(capsys, "eval", trained, "--data-root", camvid_folder, "--output-dir", tmp_path / "eval")[0] == 0
        assert _run(capsys, "convert", "to-detectron2", trained, tmp_path / "d2" / "model.pkl")[0] == 0
        written = [p for d in ("pred", "eval", "d2") for p in (tmp_path / d).iterdir()]
        assert {p.suffix for p in written} >= {".png", ".json", ".pkl"}
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in written}
        assert set(modes.values()) == {"0o644"}, modes
        assert not any(p.name.startswith(".") for p in written)  # no temporary file left
    finally:
        os.umask(saved)
    assert trained.stat().st_mode & 0o777 == 0o666 & ~saved  # the checkpoint `maskformer train` wrote


def test_round_trips_through_the_original_and_transformers_keep_weights_and_classes(
    trained: Path, camvid_folder: Path, tmp_path: Path, capsys
) -> None:
    """README: ours -> original -> ours and ours -> transformers -> ours are identical. With the run's own
    config.yaml (dataset: folder) the class names, colours and thing flags come back too (they were 'class 0', ...)."""
    pytest.importorskip("transformers")
    config = trained.parent / "config.yaml"
    sets = ["--set", f"data.root={camvid_folder}"]
    assert _run(capsys, "convert", "to-detectron2", trained, tmp_path / "mine.pkl")[0] == 0
    assert _run(capsys, "convert", "detectron2", tmp_path / "mine.pkl", tmp_path / "d2.pt", "--config", config,
                *sets)[0] == 0  # fmt: skip
    saved = os.umask(0o022)
    try:
        assert _run(capsys, "convert", "to-hf", trained, tmp_path / "hf")[0] == 0
    finally:
        os.umask(saved)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "hf").iterdir()}
    assert set(modes.values()) == {"0o644"} and "model.safetensors" in modes, modes  # was 0600 from transformers
    assert _run(capsys, "convert", "hf", tmp_path / "hf", tmp_path / "hf.pt", "--config", config)[0] == 0
    ours = torch.load(trained, map_location="cpu", weights_only=False)
    for back in ("d2.pt", "hf.pt"):
        obj = torch.load(tmp_path / back, map_location="cpu", weights_only=False)
        assert obj["meta"] == ours["meta"], back
        assert obj["meta"]["classes"][0]["name"] == _names(camvid_folder)[0]
        assert obj["model"].keys() == ours["model"].keys(), back  # BatchNorm stays BatchNorm (it became FrozenBN)
        for key, value in obj["model"].items():
            if back == "hf.pt" and key.endswith("num_batches_tracked"):
                assert int(value) == 0, key  # transformers' files have no BN counters: they restart at 0
                continue
            assert torch.equal(value, ours["model"][key]), (back, key)


def test_checkpoint_outputs_need_their_suffix(trained: Path, camvid_folder: Path, tmp_path: Path, capsys) -> None:
    """A converted checkpoint written as out.pkl could not be used: every command reads a .pkl as an original file."""
    assert _run(capsys, "convert", "to-detectron2", trained, tmp_path / "mine.pkl")[0] == 0
    code, _, err = _run(capsys, "convert", "detectron2", tmp_path / "mine.pkl", tmp_path / "out.pkl", "--config",
                        trained.parent / "config.yaml")  # fmt: skip
    assert code == 2 and "out.pkl" in err and "must end in .pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.pkl").exists()
    (tmp_path / "notes").write_text("x")
    image = next((camvid_folder / "images" / "val").iterdir())
    for argv in (["predict", trained, image, "--output-dir", tmp_path / "notes"],
                 ["convert", "to-hf", trained, tmp_path / "notes"],
                 ["eval", trained, "--output-dir", tmp_path / "notes" / "sub"]):  # fmt: skip
        code, _, err = _run(capsys, *argv)  # (eval checks before evaluating: no progress bar, one line)
        assert code == 2 and err.startswith(f"maskformer {argv[0]}: error: ") and "notes" in err, err
        assert len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "eval", trained, "--max-images", "0")  # (it evaluated nothing and printed '-'s)
    assert code == 2 and "--max-images" in err and len(err.strip().splitlines()) == 1


def test_convert_and_export_never_replace_what_exists_unless_asked(trained: Path, tmp_path: Path, capsys) -> None:
    """A second convert to the same file, or a convert whose output is its own input, replaced it silently (the
    trained checkpoint was lost); now an existing output needs --overwrite and the input is never replaced."""
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "model_final.pt"
    shutil.copy(trained, ckpt)
    original = ckpt.read_bytes()
    pkl = tmp_path / "mine.pkl"
    assert _run(capsys, "convert", "to-detectron2", ckpt, pkl)[0] == 0
    first = pkl.stat().st_mtime_ns
    config = ["--config", trained.parent / "config.yaml"]
    for argv, words in (
        (["convert", "to-detectron2", ckpt, pkl], "exists"),
        (["convert", "detectron2", pkl, ckpt, *config], "exists"),
        (["convert", "detectron2", pkl, pkl.with_suffix(".pt"), *config], "fine"),
        (["convert", "to-detectron2", ckpt, ckpt, "--overwrite"], "would replace the input"),
        (["convert", "to-hf", ckpt, run, "--overwrite"], "would replace the input"),
        (["export", "onnx", ckpt, ckpt, "--overwrite"], "must end in .onnx"),
    ):
        code, out, err = _run(capsys, *argv)
        if words == "fine":
            assert code == 0, err
            continue
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert ckpt.read_bytes() == original and pkl.stat().st_mtime_ns == first
    (tmp_path / "graph.onnx").write_text("keep me")
    code, _, err = _run(capsys, "export", "onnx", ckpt, tmp_path / "graph.onnx", "--static", "--size", "64", "64")
    assert code == 2 and "--overwrite" in err and (tmp_path / "graph.onnx").read_text() == "keep me"
    assert _run(capsys, "convert", "to-detectron2", ckpt, pkl, "--overwrite")[0] == 0
    assert pkl.stat().st_mtime_ns != first
    assert _run(capsys, "convert", "detectron2", pkl, tmp_path / "back.pt", *config)[0] == 0
    code, _, err = _run(capsys, "convert", "detectron2", pkl, tmp_path / "back.pt", *config)
    assert code == 2 and "back.pt" in err and "--overwrite" in err
    assert _run(capsys, "convert", "detectron2", pkl, tmp_path / "back.pt", *config, "--overwrite")[0] == 0


def test_predict_output_is_scored_by_eval_predictions_as_eval_scores_it(
    trained: Path, camvid_folder: Path, tmp_path: Path, capsys
) -> None:
    """predict writes <name>_labels.png; eval-predictions semantic pairs them with the ground truth's <name>.png (it
    asked for the same names before) and gives the numbers `maskformer eval` gives."""
    assert _run(capsys, "predict", trained, camvid_folder / "images" / "val", "--output-dir", tmp_path / "p")[0] == 0
    argv = ["--gt-dir", camvid_folder / "labels" / "val", "--pred-dir", tmp_path / "p", "--num-classes", "11"]
    code, out, err = _run(capsys, "eval-predictions", "semantic", *argv, "--ignore-label", "11", "--json")
    assert code == 0, err
    offline = json.loads(out)
    assert _run(capsys, "eval", trained, "--data-root", camvid_folder, "--output-dir", tmp_path / "e")[0] == 0
    online = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert offline[key] == pytest.approx(online[key]), key


def test_custom_class_ids_predict_in_the_users_ids_and_score_offline(tmp_path: Path, capsys) -> None:
    """classes.json with ids 3, 7, 300 (16-bit label files): `predict` writes _labels.png in those ids (16-bit) and
    `eval-predictions semantic --classes ROOT` scores them to the same numbers as `maskformer eval`."""
    root = tmp_path / "data"
    classes = [{"id": 3, "name": "road"}, {"id": 7, "name": "car", "isthing": True}, {"id": 300, "name": "sky"}]
    (root).mkdir()
    (root / "classes.json").write_text(json.dumps({"ignore_label": 0, "classes": classes}))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            label = np.full((48, 64), 3, dtype=np.uint16)
            label[20:, :] = 300
            label[10:30, 8 + 8 * i : 40] = 7
            label[0, :5] = 0  # the ignore value of these files
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
    run = tmp_path / "run"
    sets = [*TINY, "train.max_iters=2", "train.eval_period=-1", "data.min_size_train=[48]", "data.crop_size=[48,48]",
            "test.min_size=64"]  # fmt: skip
    code = main(["train", str(CONFIGS / "folder/small.yaml"), "--data-root", str(root), "--output-dir", str(run),
                 "--quiet", *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    assert code == 0
    ckpt = run / "model_final.pt"
    code, _, err = _run(capsys, "predict", ckpt, root / "images" / "val", "--output-dir", tmp_path / "out")
    assert code == 0, err
    for i in range(2):
        written = Image.open(tmp_path / "out" / f"{i}_labels.png")
        assert written.mode.startswith("I") and set(np.unique(np.asarray(written)).tolist()) <= {3, 7, 300}
    code, out, err = _run(capsys, "eval", ckpt, "--data-root", root, "--json", "--set", "test.min_size=64")
    assert code == 0, err
    online = json.loads(out)
    code, out, err = _run(capsys, "eval-predictions", "semantic", "--gt-dir", root / "labels" / "val", "--pred-dir",
                          tmp_path / "out", "--classes", root / "classes.json", "--json")  # fmt: skip
    assert code == 0, err
    offline = json.loads(out)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert offline[key] == pytest.approx(online[key]), key
    code, out, _ = _run(capsys, "eval-predictions", "semantic", "--gt-dir", root / "labels" / "val", "--pred-dir",
                        tmp_path / "out", "--classes", root)  # fmt: skip
    assert code == 0 and all(name in out for name in ("road", "car", "sky"))  # the table names the classes
    code, _, err = _run(capsys, "eval-predictions", "semantic", "--gt-dir", root / "labels" / "val", "--pred-dir",
                        tmp_path / "out", "--num-classes", "3", "--ignore-label", "0")  # fmt: skip
    assert code == 2 and "--classes" in err and len(err.strip().splitlines()) == 1, err  # ids are not positions


def test_small_panoptic_config_trains_on_coco_format_data_as_the_readme_says(tmp_path: Path, capsys) -> None:
    """README: `maskformer train configs/folder/small_panoptic.yaml --data-root mypan` on COCO-panoptic files laid out
    as annotations/{split}.json, images/{split}/, panoptic/{split}/ (built from ../shared's COCO samples); the model
    answers panoptic by default, with the JSON's categories."""
    src = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco_panoptic_samples"
    if not src.is_dir():
        pytest.skip(f"{src} is absent: this walk reads the COCO-panoptic samples from ../shared")
    data = json.loads((src / "panoptic_examples.json").read_text())
    root = tmp_path / "mypan"
    for split in ("train", "val"):
        for sub in ("images", "panoptic"):
            (root / sub / split).mkdir(parents=True)
        for image in data["images"]:
            stem = Path(image["file_name"]).stem
            shutil.copy(src / "images" / f"{stem}.jpg", root / "images" / split)
            shutil.copy(src / "panoptic" / f"{stem}.png", root / "panoptic" / split)
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(data))
    sets = [*TINY, "train.max_iters=1", "train.eval_period=0", "train.batch_size=2"]
    code, _, err = _run(capsys, "train", CONFIGS / "folder/small_panoptic.yaml", "--data-root", root, "--output-dir",
                        tmp_path / "run", "--quiet", *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0, err
    model = maskformer.load_model(tmp_path / "run" / "model_final.pt")
    assert model.class_meta.classes == [c["name"] for c in data["categories"]]
    assert maskformer.Predictor(model).task_default == "panoptic"
    first = root / "images" / "val" / f"{Path(data['images'][0]['file_name']).stem}.jpg"
    code, _, err = _run(capsys, "predict", tmp_path / "run" / "model_final.pt", first, "--output-dir", tmp_path / "o")
    assert code == 0, err
    assert (tmp_path / "o" / f"{first.stem}_panoptic.png").is_file()


def test_folder_data_with_two_class_files_or_no_split_folders_says_what_to_do(camvid_folder: Path, tmp_path: Path,
                                                                               capsys) -> None:  # fmt: skip
    """classes.json beside classes.yaml: the JSON was read without a word (and its label values then refused); flat
    images/ + labels/ said "use split 'all'" without the keys that set it."""
    root = tmp_path / "two"
    shutil.copytree(camvid_folder, root)
    (root / "classes.yaml").write_text("classes: [a, b]\n")
    code, _, err = _run(capsys, "train", CONFIGS / "folder/small.yaml", "--data-root", root, "--output-dir",
                        tmp_path / "run", "--set", "train.max_iters=1")  # fmt: skip
    assert code == 2 and "both classes.json and classes.yaml describe the classes" in err, err
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    shutil.copytree(camvid_folder / "labels" / "train", flat / "labels")
    for image in (camvid_folder / "images" / "train").iterdir():
        shutil.copy(image, flat / "images")
    shutil.copy(camvid_folder / "classes.json", flat)
    code, _, err = _run(capsys, "train", CONFIGS / "folder/small.yaml", "--data-root", flat, "--output-dir",
                        tmp_path / "run", "--set", "train.max_iters=1")  # fmt: skip
    assert code == 2 and "--set data.train_split=all --set data.val_split=all" in err, err
    sets = [*TINY, "train.max_iters=1", "train.eval_period=0", "data.train_split=all", "data.val_split=all"]
    code, _, err = _run(capsys, "train", CONFIGS / "folder/small.yaml", "--data-root", flat, "--output-dir",
                        tmp_path / "run", "--quiet", *[a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0, err
