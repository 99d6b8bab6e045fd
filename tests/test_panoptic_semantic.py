"""COCO panoptic carries a semantic map derived from its segments, so the per-pixel baselines, the semantic mapper and
semantic evaluation run on it (they ended in KeyError / ValueError tracebacks, and eval in NaN mIoU)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO_YAML, SHARED
from maskformer.cli import main
from maskformer.data import DATASETS, load_meta
from maskformer.data.panoptic import semantic_from_panoptic


def test_semantic_from_panoptic_paints_every_segment_and_ignores_void() -> None:
    pan = np.array([[0, 5, 5, 9], [7, 7, 9, 123]])
    segments = [{"id": 9, "category_id": 40, "iscrowd": 1}, {"id": 5, "category_id": 3}, {"id": 7, "category_id": 0}]
    out = semantic_from_panoptic(pan, segments, ignore_label=255)
    assert out.dtype == np.uint8
    assert out.tolist() == [[255, 3, 3, 40], [0, 0, 40, 255]]  # crowd keeps its class; VOID and unknown id ignored
    assert semantic_from_panoptic(pan, [], ignore_label=65535).tolist() == [[65535] * 4] * 2


@pytest.mark.skipif(not (SHARED / "datasets" / "coco_panoptic_samples").is_dir(), reason="../shared is absent")
def test_coco_samples_semantic_map_matches_their_segments() -> None:
    root = SHARED / "datasets" / "coco_panoptic_samples"
    ds = DATASETS["coco_panoptic"](root=str(root), split="val", json_file="panoptic_examples.json",
                                   image_dir="images", panoptic_dir="panoptic")  # fmt: skip
    for i in range(len(ds)):
        rec = ds[i]
        sem, pan = rec["sem_seg"].numpy(), rec["pan_seg"].numpy()
        assert sem.shape == pan.shape == (rec["height"], rec["width"])
        assert (sem[pan == 0] == 255).all()
        for s in rec["segments_info"]:
            assert (sem[pan == s["id"]] == s["category_id"]).all()


def _coco_tree(root: Path) -> Path:
    """A COCO-panoptic layout with two 48x64 images (a person on grass; a car on road with a crowd of people)."""
    cats = {"person": 1, "car": 3, "grass-merged": 193, "road": 149}  # COCO category ids
    images, annotations = [], []
    for i, (thing, stuff) in enumerate([("person", "grass-merged"), ("car", "road")]):
        pan = np.full((48, 64), 10, dtype=np.int64)
        pan[10:30, 20:40] = 20
        segments = [{"id": 10, "category_id": cats[stuff], "iscrowd": 0},
                    {"id": 20, "category_id": cats[thing], "iscrowd": 0}]  # fmt: skip
        if i == 1:
            pan[0:5, 0:10] = 30
            segments.append({"id": 30, "category_id": 1, "iscrowd": 1})
        pan[40:, :] = 0  # VOID
        for split in ("train", "val"):
            (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
            (root / f"panoptic_{split}2017").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                root / f"{split}2017" / f"{i}.jpg"
            )
            rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / f"panoptic_{split}2017" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 48, "width": 64})
        annotations.append({"image_id": i, "file_name": f"{i}.png", "segments_info": segments})
    (root / "annotations").mkdir()
    coco = load_meta("coco_panoptic").to_dict()
    for split in ("train", "val"):
        categories = [{"id": c["id"], "name": c["name"], "isthing": int(c["isthing"])} for c in coco["classes"]]
        text = json.dumps({"images": images, "annotations": annotations, "categories": categories})
        (root / "annotations" / f"panoptic_{split}2017.json").write_text(text)
    return root


@pytest.mark.parametrize("sets", [["model.meta_arch=per_pixel"], ["data.mapper=semantic"]])
def test_semantic_training_and_eval_on_coco_panoptic(tmp_path: Path, capsys, sets: list[str]) -> None:
    root = _coco_tree(tmp_path / "coco")
    common = ["data.dataset=coco_panoptic", "model.num_classes=133", "data.mapper=detr_panoptic",
              "data.crop_size=[32,48]", "data.min_size_train=[48]", "data.max_size_train=64", "test.min_size=48",
              "test.max_size=64", "train.max_iters=2", "train.batch_size=2", "train.eval_period=0",
              "inference.semantic_on=true", "inference.panoptic_on=false", "data.num_workers=0"]  # fmt: skip
    argv = ["train", str(DEMO_YAML), "--data-root", str(root), "--output-dir", str(tmp_path / "run"), "--quiet"]
    assert main([*argv, *[a for s in [*common, *sets] for a in ("--set", s)]]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "model_final.pt"), "--json", "--output-dir", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 2
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])  # (NaN before: no semantic ground truth)
    present = {name for name, iou in metrics["IoU_by_class"].items() if iou is not None}
    assert {"person", "car", "grass-merged", "road"} <= present  # the classes of the derived ground truth


def _coco_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    import maskformer
    from maskformer.engine.checkpoint import save_checkpoint

    root = _coco_tree(tmp_path / "coco")
    sets = ["data.dataset=coco_panoptic", "model.num_classes=133", "test.min_size=48", "test.max_size=64",
            "inference.semantic_on=false", "inference.panoptic_on=true", "data.num_workers=0",
            f"data.root={root}"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    model = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "m.pt", cfg=cfg, model=model, meta=model.class_meta.to_dict())
    return tmp_path / "m.pt", root


def test_panoptic_eval_writes_the_per_class_scores_its_help_lists(tmp_path: Path, capsys) -> None:
    """`eval --help` lists per_class for panoptic models; metrics.json had only All/Things/Stuff and PQ/SQ/RQ."""
    model, _ = _coco_checkpoint(tmp_path)
    assert main(["eval", str(model), "--json", "--output-dir", str(tmp_path / "ev")]) == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == metrics
    per_class = metrics["per_class"]
    assert len(per_class) == 133 and set(per_class["1"]) == {"name", "pq", "sq", "rq", "tp", "fp", "fn"}  # COCO ids
    assert per_class["1"]["name"] == "person"
    assert "199" in per_class and "0" not in per_class  # (dataset ids, not 0..132)
    counted = [c for c in per_class.values() if c["tp"] + c["fp"] + c["fn"] > 0]
    assert len(counted) == metrics["All"]["n"]
    assert abs(sum(c["pq"] for c in counted) / max(len(counted), 1) - metrics["All"]["pq"]) < 1e-12


def test_eval_with_both_tasks_off_is_refused(tmp_path: Path, capsys) -> None:
    """--set inference.panoptic_on=false on a panoptic-only model left nothing to score: exit 0, {"images": 3}."""
    model, _ = _coco_checkpoint(tmp_path)
    assert main(["eval", str(model), "--set", "inference.panoptic_on=false", "--output-dir", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inference.semantic_on and inference.panoptic_on are both false" in err[0]
    assert not (tmp_path / "ev").exists()
