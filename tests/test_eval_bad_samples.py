"""``data.skip_bad_samples`` at evaluation: a bad file is left out and counted, not replaced by a duplicate."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.engine.evaluate import evaluate_model


def _folder(root: Path, bad: bool | int) -> Path:
    """4 classes, 3 good validation pairs (+ ``bad`` ones whose label has a value that is no class id)."""
    root.mkdir(parents=True)
    (root / "classes.json").write_text('{"classes": ["bg", "a", "b", "c"]}')
    names = ["a0", "a1", "a2"] + [f"a3{'x' * k}" for k in range(int(bad))]
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, name in enumerate(names):
            label = np.zeros((40, 56), dtype=np.uint8)
            label[5:30, 8 + 10 * i : 40] = 1 + i % 3
            if name.startswith("a3"):
                label[0, 0] = 9  # no such class
            pixels = np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)  # the same in both folders
            Image.fromarray(pixels).save(root / "images" / split / f"{name}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{name}.png")
    return root


def test_eval_leaves_a_skipped_image_out_instead_of_scoring_its_neighbour_twice(tmp_path: Path, capsys) -> None:
    sets = ["data.dataset=folder", "data.skip_bad_samples=true", "data.num_workers=0", "model.num_classes=4",
            "test.min_size=64", "test.max_size=128"]  # fmt: skip
    clean = _folder(tmp_path / "clean", bad=False)
    dirty = _folder(tmp_path / "dirty", bad=True)
    cfg = maskformer.load_config(DEMO_YAML, overrides=[*sets, f"data.root={clean}"])
    model = maskformer.build_model(cfg).eval()
    expected = evaluate_model(cfg, model, optimize=False)
    cfg_dirty = maskformer.load_config(DEMO_YAML, overrides=[*sets, f"data.root={dirty}"])
    got = evaluate_model(cfg_dirty, model, optimize=False)
    assert expected["images"] == 3 and "skipped_images" not in expected
    assert got["images"] == 3 and got["skipped_images"] == 1  # (a3 was replaced by a0, scored twice)
    # the file is named on stderr also without a progress display (`eval --json` said only "skipped_images": 1)
    assert "a3.png" in capsys.readouterr().err
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert got[key] == expected[key], key
    # two bad files side by side: 2 skipped (the first one's record listed both, and the second was counted again)
    cfg_two = maskformer.load_config(DEMO_YAML, overrides=[*sets, f"data.root={_folder(tmp_path / 'two', bad=2)}"])
    got = evaluate_model(cfg_two, model, optimize=False)
    assert got["images"] == 3 and got["skipped_images"] == 2


def test_a_missing_validation_split_stops_training_before_the_first_iteration(tmp_path: Path, capsys) -> None:
    from conftest import CONFIGS
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=False)
    for sub in ("images", "labels"):
        for f in (root / sub / "val").iterdir():
            f.unlink()
        (root / sub / "val").rmdir()
    out = tmp_path / "run"
    argv = ["train", str(CONFIGS / "folder" / "small.yaml"), "--data-root", str(root), "--output-dir", str(out),
            "--quiet", "--set", "train.max_iters=1", "--set", "train.batch_size=2", "--set", "data.num_workers=0",
            "--set", "data.crop_size=[64,64]", "--set", "data.min_size_train=[64]"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no images/val/" in err and "train.eval_period=-1" in err and len(err.strip().splitlines()) <= 2, err
    assert not (out / "checkpoint_last.pt").exists()  # (it trained to the end and failed at the final eval before)
    assert main([*argv, "--set", "train.eval_period=-1"]) == 0
    assert (out / "model_final.pt").is_file()


def test_bad_training_data_leaves_no_run_behind(tmp_path: Path, capsys) -> None:
    """A bad label (value 9, no class) stops training with one line naming it; the run folder this call made is
    gone (no config.yaml / metrics.jsonl of a run that never trained), and a folder that existed keeps its files."""
    from conftest import CONFIGS
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=True)
    for f in (root / "images" / "train").iterdir():
        if f.stem != "a3":  # only the bad pair is left to train on: the first batch reads it
            f.unlink()
            (root / "labels" / "train" / f.name).unlink()
    args = ["--data-root", str(root), "--quiet", "--set", "train.max_iters=2", "--set", "train.batch_size=2",
            "--set", "data.num_workers=0", "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]",
            "--set", "train.eval_period=-1"]  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(out), *args]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]  # (a note on the class count too)
    assert len(err) == 1 and "a3.png" in err[0] and "label value 9" in err[0], err
    assert not out.exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    (kept / "config.yaml").write_text("keep: me\n")  # (it held the failed run's config afterwards)
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(kept), *args]) == 2
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "notes.txt"]
    assert (kept / "config.yaml").read_text() == "keep: me\n"


def test_resume_and_eval_refuse_data_whose_classes_json_lists_the_classes_in_another_order(tmp_path, capsys) -> None:
    """A reordered classes.json went unsaid: a resumed run trained class 0 as another class from then on, and eval
    printed one class's IoU under another's name."""
    from conftest import CONFIGS
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=False)
    out = tmp_path / "run"
    args = ["--data-root", str(root), "--quiet", "--set", "train.batch_size=2", "--set", "data.num_workers=0",
            "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]", "--set", "train.eval_period=-1",
            "--set", "train.checkpoint_period=1"]  # fmt: skip
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(out), *args,
                 "--set", "train.max_iters=1"]) == 0  # fmt: skip
    capsys.readouterr()
    (root / "classes.json").write_text('{"classes": ["a", "bg", "b", "c"]}')
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(out), "--resume",
                 "--set", "train.max_iters=2"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "class table changed since the run started ('bg' is class 1 here, the model's class 0" in err, err
    assert len([line for line in err.splitlines() if not line.startswith("note:")]) == 1, err
    assert main(["eval", str(out / "model_final.pt"), "--data-root", str(root), "--set", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lists the model's classes in another order ('bg' is class 1 here" in err, err
    (root / "classes.json").write_text('{"classes": ["a", "bg", "b", "c", "d"]}')  # another table, not an order
    assert main(["eval", str(out / "model_final.pt"), "--data-root", str(root), "--set", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "classes.json: the data has 5 classes, the model 4" in err and "another order" not in err, err
    (root / "classes.json").write_text('{"classes": ["bg", "A", "B", "C"]}')  # renamed only: a note, as before
    assert main(["eval", str(out / "model_final.pt"), "--data-root", str(root), "--set", "data.num_workers=0",
                 "--set", "test.min_size=40"]) == 0  # fmt: skip
    assert "names 3 of the model's classes otherwise" in capsys.readouterr().err


def test_a_bad_label_found_after_some_steps_leaves_a_run_only_if_it_can_be_resumed(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The bad pair (a3) is drawn in step 2 of the default seed's order (2 images per step). Without a checkpoint by
    then the run folder goes (one step of metrics is no run); with one (checkpoint_period=1) it stays, resumable.
    (A training split this small is read whole before the first step: CHECK_FIRST = 0 plays a large one.)"""
    import itertools

    monkeypatch.setattr("maskformer.engine.train.CHECK_FIRST", 0)

    from conftest import CONFIGS
    from maskformer.cli import main
    from maskformer.data import InfiniteSampler

    order = [i for i, _ in itertools.islice(iter(InfiniteSampler(4, seed=0, tag_with_seed=True)), 4)]
    assert order.index(3) in (2, 3)  # a3 (the 4th file) comes in step 2: one step completes before it
    root = _folder(tmp_path / "data", bad=True)
    args = ["--data-root", str(root), "--quiet", "--set", "train.max_iters=4", "--set", "train.batch_size=2",
            "--set", "data.num_workers=0", "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]",
            "--set", "train.eval_period=-1"]  # fmt: skip
    small = str(CONFIGS / "folder" / "small.yaml")
    assert main(["train", small, "--output-dir", str(tmp_path / "run"), *args]) == 2
    assert "a3.png" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert (
        main(["train", small, "--output-dir", str(tmp_path / "kept"), *args, "--set", "train.checkpoint_period=1"]) == 2
    )
    assert (tmp_path / "kept" / "checkpoint_last.pt").is_file() and (tmp_path / "kept" / "config.yaml").is_file()
    assert not (tmp_path / "kept" / "model_final.pt").exists()
    said = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert len(said) == 1 and "a3.png" in said[0] and "checkpoint_last.pt holds iteration 1" in said[0], said
    assert said[0].endswith(f"--output-dir {tmp_path / 'kept'} --resume` goes on from it"), said


def test_eval_on_data_with_other_classes_is_refused_and_renamed_classes_noted(tmp_path: Path, capsys) -> None:
    """eval scored an 11-class model on 12-class data (mIoU over 12, a table of 11) with exit 0; renamed classes
    came from the data without a word."""
    import json

    from conftest import CONFIGS
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=False)
    sets = ["train.max_iters=1", "train.batch_size=2", "data.num_workers=0", "data.crop_size=[32,32]",
            "data.min_size_train=[40]", "train.eval_period=-1"]  # fmt: skip
    args = ["--quiet", *[x for s in sets for x in ("--set", s)]]
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--data-root", str(root), "--output-dir", str(run),
                 *args]) == 0  # fmt: skip
    capsys.readouterr()
    (root / "classes.json").write_text('{"classes": ["bg", "a", "b", "c", "d"]}')
    assert (
        main(["eval", str(run / "model_final.pt"), "--data-root", str(root), "--output-dir", str(tmp_path / "e")]) == 2
    )
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "the data has 5 classes, the model 4" in lines[0] and "classes.json" in lines[0], lines
    (root / "classes.json").write_text('{"classes": ["bg", "a", "b", "Himmel"]}')
    assert main(["eval", str(run / "model_final.pt"), "--data-root", str(root), "--output-dir", str(tmp_path / "e"),
                 "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "the model's 'c' is 'Himmel'" in captured.err
    assert list(json.loads(captured.out)["IoU_by_class"]) == ["bg", "a", "b", "Himmel"]


def _one_step(root: Path, out: Path) -> list[str]:
    """`maskformer train` arguments: configs/folder/small.yaml on ``root`` for one step of 2 small crops."""
    from conftest import CONFIGS

    return ["train", str(CONFIGS / "folder" / "small.yaml"), "--data-root", str(root), "--output-dir", str(out),
            "--quiet", "--set", "train.max_iters=1", "--set", "train.batch_size=2", "--set", "data.num_workers=0",
            "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]"]  # fmt: skip


def test_a_bad_validation_label_stops_training_before_the_first_step(tmp_path: Path, capsys) -> None:
    """A label with a value that is no class in the evaluation split was found at the first evaluation: after the
    whole training. Now the split is read once before training: one line naming the file, no run left behind;
    with data.skip_bad_samples the run trains and the evaluation leaves the file out."""
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=True)
    for sub in ("images", "labels"):  # a3 (label value 9) only in val
        (root / sub / "train" / "a3.png").unlink()
    out = tmp_path / "run"
    argv = _one_step(root, out)
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and str(Path("labels", "val", "a3.png")) in err[0] and "label value 9" in err[0], err
    assert "train.eval_period=-1" in err[0]
    assert not out.exists()
    assert main([*argv, "--set", "data.skip_bad_samples=true"]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["eval"]["images"] == 3 and metrics[-1]["eval"]["skipped_images"] == 1


def test_a_bad_label_in_a_small_training_split_is_named_before_the_first_step(tmp_path: Path, capsys) -> None:
    """One step of 2 images never draws a3 (the seed's order reaches it in step 2), so a bad label there trained
    without a word; a split of up to CHECK_FIRST samples is now read whole first."""
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=True)
    for sub in ("images", "labels"):
        (root / sub / "val" / "a3.png").unlink()  # the evaluation split is clean
    out = tmp_path / "run"
    argv = _one_step(root, out)
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and str(Path("labels", "train", "a3.png")) in err[0] and "label value 9" in err[0], err
    assert not out.exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_a_library_swallowed_still_stops_eval(tmp_path: Path, monkeypatch) -> None:
    """A SIGTERM whose KeyboardInterrupt Python ignored (raised in a __del__ or a fork hook, e.g. as DataLoader
    workers start) left ``eval`` running over the whole split: each image now checks the handler's flag."""
    from conftest import swallow_a_sigterm_after
    from maskformer.errors import terminate_as_interrupt
    from maskformer.inference.predictor import Predictor

    calls = swallow_a_sigterm_after(monkeypatch, Predictor, "predict_resized")
    sets = ["data.dataset=folder", "data.num_workers=0", "model.num_classes=4", "test.min_size=64",
            "test.max_size=128", f"data.root={_folder(tmp_path / 'data', bad=False)}"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        evaluate_model(cfg, maskformer.build_model(cfg), optimize=False)
    assert len(calls) == 1  # stopped before the second of three images


def test_a_bad_image_under_loader_workers_is_one_line(tmp_path: Path) -> None:
    """`maskformer eval` with data.num_workers=2 stopped by a corrupt image printed its one line and then, in 1 run
    of 3, "Exception ignored in atexit callback ... DataLoader worker (pid N) is killed by signal: Terminated"."""
    import subprocess
    import sys

    from maskformer.engine.checkpoint import save_checkpoint

    root = _folder(tmp_path / "data", bad=False)
    (root / "images" / "val" / "a1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    sets = ["data.dataset=folder", "model.num_classes=4", "test.min_size=64", "test.max_size=128"]
    cfg = maskformer.load_config(DEMO_YAML, overrides=[*sets, f"data.root={root}"])
    save_checkpoint(tmp_path / "m.pt", cfg=cfg, model=maskformer.build_model(cfg))
    command = [sys.executable, "-m", "maskformer.cli", "eval", str(tmp_path / "m.pt"), "--data-root", str(root),
               "--set", "data.num_workers=2", "--output-dir", str(tmp_path / "o")]  # fmt: skip
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        said = [
            line
            for line in done.stderr.splitlines()
            if line.strip() and not line.startswith("eval:") and "note:" not in line
        ]
        assert done.returncode == 2 and len(said) == 1 and "a1.png" in said[0], done.stderr


def test_max_images_reads_no_image_after_the_last_one(tmp_path: Path, capsys, monkeypatch) -> None:
    """`eval --max-images 2` read image 3 before stopping, and a bad third image ended the run with an error; its
    progress bar ended at 1/2. The bar is drawn on a terminal only (it filled log files with carriage returns)."""
    root = _folder(tmp_path / "data", bad=False)
    (root / "images" / "val" / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    sets = ["data.dataset=folder", "data.num_workers=0", "model.num_classes=4", "test.min_size=64",
            "test.max_size=128", f"data.root={root}"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    model = maskformer.build_model(cfg).eval()
    assert evaluate_model(cfg, model, optimize=False, max_images=2)["images"] == 2
    assert evaluate_model(cfg, model, optimize=False, max_images=1)["images"] == 1
    capsys.readouterr()
    assert evaluate_model(cfg, model, optimize=False, max_images=2, progress=True)["images"] == 2
    assert "eval" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert evaluate_model(cfg, model, optimize=False, max_images=2, progress=True)["images"] == 2
    assert "2/2" in capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]


def test_a_panoptic_model_on_data_without_panoptic_ground_truth_reports_no_pq(tmp_path: Path) -> None:
    """The demo config (panoptic_on) evaluated on a semantic folder printed "All 0.00 0.00 0.00 n=0" and wrote PQ 0.0:
    a PQ that was never measured. It is left out, with a note."""
    sets = ["data.dataset=folder", "data.num_workers=0", "model.num_classes=4", "test.min_size=64",
            "test.max_size=128", "inference.panoptic_on=true", "inference.semantic_on=true"]  # fmt: skip
    root = _folder(tmp_path / "data", bad=False)
    cfg = maskformer.load_config(DEMO_YAML, overrides=[*sets, f"data.root={root}"])
    got = evaluate_model(cfg, maskformer.build_model(cfg).eval(), optimize=False)
    assert "mIoU" in got and not {"PQ", "All", "Things", "Stuff"} & set(got), sorted(got)
    assert got["panoptic_note"] == "no panoptic ground truth in this split: PQ not measured"


def test_training_data_whose_labels_hold_only_the_ignore_label_is_refused(tmp_path: Path, capsys) -> None:
    """Every pixel 255 (the ignore label) trained on nothing without a word."""
    from conftest import CONFIGS
    from maskformer.cli import main

    root = _folder(tmp_path / "data", bad=False)
    for label in (root / "labels" / "train").iterdir():
        Image.fromarray(np.full((40, 56), 255, dtype=np.uint8)).save(label)
    argv = ["train", str(CONFIGS / "folder" / "small.yaml"), "--data-root", str(root), "--output-dir",
            str(tmp_path / "run"), "--quiet", "--set", "train.max_iters=1", "--set", "train.batch_size=2", "--set",
            "data.num_workers=0", "--set", "train.eval_period=-1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "every label of data.train_split=train holds only the ignore label: nothing to learn" in err, err
    assert not (tmp_path / "run").exists()


def test_the_python_api_takes_a_folders_class_table_or_names_a_class_count_that_disagrees(tmp_path: Path) -> None:
    """load_config + build_model on a folder config gave an 11-class model (the config's count) for 3-class data
    without a word, with "class 0", "class 1" ... as names; eval alone noticed."""
    from conftest import CONFIGS
    from maskformer.build import fit_classes

    root = tmp_path / "mydata"
    root.mkdir()
    (root / "classes.json").write_text('{"classes": [{"name": "road"}, {"name": "car"}, {"name": "sky"}]}')
    cfg = maskformer.load_config(CONFIGS / "folder" / "small.yaml", overrides=[f"data.root={root}"])
    with pytest.raises(maskformer.ConfigError, match=r"model.num_classes=11 but .*classes.json lists 3 classes"):
        maskformer.build_model(cfg)
    model = maskformer.build_model(fit_classes(cfg))
    assert maskformer.Predictor(model, optimize=False).class_names == ["road", "car", "sky"]
    maskformer.save_checkpoint(tmp_path / "mine.pt", cfg=model.cfg, model=model)
    assert maskformer.Predictor.from_pretrained(tmp_path / "mine.pt").class_names == ["road", "car", "sky"]
    (root / "classes.json").write_text('{"classes": ["a", "b"]}')  # the data changed after: the checkpoint still loads
    assert maskformer.load_model(tmp_path / "mine.pt").class_meta.classes == ["road", "car", "sky"]


def test_a_class_count_fitted_from_a_yaml_table_names_that_file(tmp_path: Path, capsys) -> None:
    """With only classes.yaml in the data folder, the note and the error named classes.json, which is not there."""
    from conftest import CONFIGS
    from maskformer.build import fit_classes

    (tmp_path / "classes.yaml").write_text("classes:\n  - name: road\n  - name: sky\n")
    cfg = maskformer.load_config(CONFIGS / "folder" / "small.yaml", overrides=[f"data.root={tmp_path}"])
    assert fit_classes(cfg).model.num_classes == 2
    assert f"{tmp_path}/classes.yaml" in capsys.readouterr().err
    with pytest.raises(maskformer.ConfigError, match=r"classes\.yaml lists 2 classes"):
        fit_classes(cfg, explicit=True)
