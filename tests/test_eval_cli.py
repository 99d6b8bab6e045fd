"""Folder evaluators and ``maskformer eval-predictions``: real COCO panoptic samples, hand-computed values,
bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NEEDS_BF16
from maskformer.cli import main
from maskformer.errors import DataError
from maskformer.evaluation import evaluate_panoptic_folder, evaluate_semantic_folder

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco_panoptic_samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real data not found at {SAMPLES}")


def to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def from_rgb(path: Path) -> np.ndarray:
    c = np.array(Image.open(path), dtype=np.int64)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


@pytest.fixture
def coco(tmp_path: Path) -> dict:
    """Ground-truth JSON with all three sample images (39769's segments live in a separate file) and a writable
    copy of the PNGs to serve as predictions."""
    data = json.loads((SAMPLES / "panoptic_examples.json").read_text())
    segments = json.loads((SAMPLES / "000000039769_segments.json").read_text())
    data["annotations"].append({"image_id": 39769, "file_name": "000000039769.png", "segments_info": segments})
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(data))
    pred_dir = tmp_path / "pred"
    shutil.copytree(SAMPLES / "panoptic", pred_dir)
    return {"data": data, "gt_json": gt_json, "gt_dir": SAMPLES / "panoptic", "pred_dir": pred_dir}


def counted_categories(data: dict) -> tuple[set[int], set[int]]:
    """Categories with a non-crowd segment (only those get TP/FN in a self-evaluation): (things, stuff)."""
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    cats = {s["category_id"] for a in data["annotations"] for s in a["segments_info"] if not s["iscrowd"]}
    return {c for c in cats if isthing[c]}, {c for c in cats if not isthing[c]}


def write_pred_json(coco: dict, tmp_path: Path) -> Path:
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"annotations": coco["data"]["annotations"]}))
    return path


@needs_samples
def test_samples_against_themselves_score_100(coco):
    r = evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], coco["gt_json"], coco["gt_dir"])
    things, stuff = counted_categories(coco["data"])
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": len(things) + len(stuff)}
    assert r["Things"]["n"] == len(things) and r["Stuff"]["n"] == len(stuff)
    assert r["PQ"] == r["SQ"] == r["RQ"] == 100.0
    # the crowd segments (person, cow) are predicted too, and ignored rather than counted as FP
    assert all(v["fp"] == 0 for v in r["per_class"].values())


@needs_samples
def test_predictions_json_as_maskformer_predict_writes_it(coco, tmp_path):
    """predict names an image by its file's stem ("000000142238", not 142238), its PNG <stem>_panoptic.png, and
    numbers categories 0..K-1 with their names: the ground truth against itself in that form still scores 100."""
    gt_cats = coco["data"]["categories"]
    contiguous = {c["id"]: i for i, c in enumerate(gt_cats)}
    pred_dir = tmp_path / "predict_out"
    pred_dir.mkdir()
    annotations = []
    for ann in coco["data"]["annotations"]:
        stem = Path(ann["file_name"]).stem
        shutil.copy(coco["gt_dir"] / ann["file_name"], pred_dir / f"{stem}_panoptic.png")
        segments = [dict(s, category_id=contiguous[s["category_id"]]) for s in ann["segments_info"]]
        annotations.append({"image_id": stem, "file_name": f"{stem}_panoptic.png", "segments_info": segments})
    categories = [{"id": i, "name": c["name"], "isthing": c["isthing"]} for i, c in enumerate(gt_cats)]
    pred_json = tmp_path / "predictions.json"
    pred_json.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    r = evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], pred_json, pred_dir)
    assert r["PQ"] == r["SQ"] == r["RQ"] == 100.0
    pred_json.write_text(json.dumps({"annotations": annotations}))  # without names the ids are taken as they are
    with pytest.raises(DataError, match="unknown category_id 0"):
        evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], pred_json, pred_dir)


@needs_samples
def test_categories_sharing_a_name_pair_by_id_or_are_refused(coco, tmp_path, capsys):
    """Two ground-truth categories with one name: the same class table on both sides scores by id (100, not a PQ
    where one category's segments counted as the other's); renumbered predictions cannot pair and are refused."""
    data = coco["data"]
    data["categories"][1]["name"] = data["categories"][0]["name"]
    coco["gt_json"].write_text(json.dumps(data))
    r = evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], coco["gt_json"], coco["gt_dir"])
    assert r["PQ"] == r["SQ"] == r["RQ"] == 100.0
    renumbered = dict(data, categories=[dict(c, id=i) for i, c in enumerate(data["categories"])])
    pred_json = tmp_path / "renumbered.json"
    pred_json.write_text(json.dumps(renumbered))
    name = data["categories"][0]["name"]
    with pytest.raises(DataError, match=f"the name '{name}' is given to two categories"):
        evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], pred_json, coco["gt_dir"])


@needs_samples
def test_a_category_without_isthing_is_named_before_any_image_is_scored(coco, capsys):
    del coco["data"]["categories"][3]["isthing"]
    coco["gt_json"].write_text(json.dumps(coco["data"]))
    argv = ["eval-predictions", "panoptic", "--gt-json", str(coco["gt_json"]), "--gt-dir", str(coco["gt_dir"]),
            "--pred-json", str(coco["gt_json"]), "--pred-dir", str(coco["gt_dir"])]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad categories (category 4 needs 'isthing' (1 for things" in err, err
    assert str(coco["gt_json"]) in err


@needs_samples
def test_removing_one_segment(coco, tmp_path):
    ann = next(a for a in coco["data"]["annotations"] if a["image_id"] == 142238)
    removed = next(s for s in ann["segments_info"] if s["category_id"] == 1 and not s["iscrowd"])
    t = sum(
        1 for a in coco["data"]["annotations"] for s in a["segments_info"] if s["category_id"] == 1 and not s["iscrowd"]
    )
    png = coco["pred_dir"] / ann["file_name"]
    ids = from_rgb(png)
    ids[ids == removed["id"]] = 0  # its pixels become VOID in the prediction
    Image.fromarray(to_rgb(ids)).save(png)
    ann["segments_info"].remove(removed)
    r = evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], write_pred_json(coco, tmp_path), coco["pred_dir"])
    # person had t true positives with IoU 1; now t-1 TP (IoU 1 each) and 1 FN, nothing else changes:
    # PQ_person = (t-1) / (t-1 + 0.5*1) = RQ_person, SQ_person = 1; every other category keeps PQ = 1.
    pq_person = (t - 1) / (t - 0.5)
    things, stuff = counted_categories(json.loads(coco["gt_json"].read_text()))
    n, n_th = len(things) + len(stuff), len(things)
    assert r["per_class"][1] == pytest.approx(
        {"pq": pq_person, "sq": 1, "rq": pq_person, "tp": t - 1, "fp": 0, "fn": 1}
    )
    assert r["All"] == pytest.approx({"pq": (n - 1 + pq_person) / n, "sq": 1.0, "rq": (n - 1 + pq_person) / n, "n": n})
    assert r["Things"]["pq"] == pytest.approx((n_th - 1 + pq_person) / n_th)
    assert r["Stuff"]["pq"] == 1.0
    assert r["PQ"] < 100.0


@needs_samples
def test_splitting_one_segment(coco, tmp_path):
    ann = next(a for a in coco["data"]["annotations"] if a["image_id"] == 439180)
    seg = next(s for s in ann["segments_info"] if s["category_id"] == 1 and not s["iscrowd"] and s["area"] > 100)
    t = sum(
        1 for a in coco["data"]["annotations"] for s in a["segments_info"] if s["category_id"] == 1 and not s["iscrowd"]
    )
    png = coco["pred_dir"] / ann["file_name"]
    ids = from_rgb(png)
    flat = ids.reshape(-1)
    pixels = np.flatnonzero(flat == seg["id"])
    area = len(pixels)
    kept = int(np.ceil(0.7 * area))
    new_id = int(ids.max()) + 1
    flat[pixels[kept:]] = new_id  # the last 30% (raster order) become a second person segment
    Image.fromarray(to_rgb(ids)).save(png)
    ann["segments_info"].append({"id": new_id, "category_id": 1, "iscrowd": 0})
    r = evaluate_panoptic_folder(coco["gt_json"], coco["gt_dir"], write_pred_json(coco, tmp_path), coco["pred_dir"])
    # the 70% part still matches: IoU = kept / (kept + area - kept - 0 VOID) = kept/area > 0.5 -> TP;
    # the 30% part matches nothing and lies on neither VOID nor crowd -> FP. So for person:
    # TP = t, FP = 1, IoU sum = (t-1) + kept/area; PQ = IoU sum / (t + 0.5), SQ = IoU sum / t, RQ = t / (t + 0.5)
    iou_sum = t - 1 + kept / area
    expected = {"pq": iou_sum / (t + 0.5), "sq": iou_sum / t, "rq": t / (t + 0.5), "tp": t, "fp": 1, "fn": 0}
    assert r["per_class"][1] == pytest.approx(expected)
    n = r["All"]["n"]
    assert r["All"]["pq"] == pytest.approx((n - 1 + expected["pq"]) / n)


@needs_samples
def test_workers_give_the_same_result(coco, tmp_path):
    args = (coco["gt_json"], coco["gt_dir"], coco["gt_json"], coco["pred_dir"])
    ann = coco["data"]["annotations"][0]
    ids = from_rgb(coco["pred_dir"] / ann["file_name"])
    ids[:50] = 0
    Image.fromarray(to_rgb(ids)).save(coco["pred_dir"] / ann["file_name"])
    single = evaluate_panoptic_folder(*args)
    assert single["PQ"] < 100.0
    pooled = evaluate_panoptic_folder(*args, workers=2)
    for name in ("All", "Things", "Stuff"):
        assert pooled[name] == pytest.approx(single[name], abs=1e-12)
    assert pooled["per_class"].keys() == single["per_class"].keys()
    for cat, values in single["per_class"].items():
        assert pooled["per_class"][cat] == pytest.approx(values, abs=1e-12)


@needs_samples
def test_cli_panoptic_json_output_and_table(coco, tmp_path, capsys):
    out = tmp_path / "metrics" / "metrics.json"
    argv = ["eval-predictions", "panoptic", "--gt-json", str(coco["gt_json"]), "--gt-dir", str(coco["gt_dir"])]
    argv += ["--pred-json", str(coco["gt_json"]), "--pred-dir", str(coco["pred_dir"])]
    assert main(argv + ["--json", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["PQ"] == 100.0 and printed["All"]["pq"] == 1.0
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temporary file left behind
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "Things" in table and "100.00" in table


@needs_samples
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda c, a: (c["pred_dir"] / a["file_name"]).unlink(), "file not found"),
        (lambda c, a: Image.new("RGB", (5, 5)).save(c["pred_dir"] / a["file_name"]), "differs from ground truth"),
        (lambda c, a: a["segments_info"].append({"id": 7, "category_id": 1}), "absent from the predicted map"),
        (lambda c, a: a["segments_info"].pop(), "not listed"),
        (lambda c, a: a["segments_info"][0].update(category_id=999), "unknown category_id 999"),
        # int() would have read these as other, valid ids: "1" -> 1, 1.5 -> 1
        (
            lambda c, a: a["segments_info"][0].update(category_id=str(a["segments_info"][0]["category_id"])),
            "is not an integer",
        ),
        (
            lambda c, a: a["segments_info"][0].update(category_id=a["segments_info"][0]["category_id"] + 0.5),
            "is not an integer",
        ),
        (lambda c, a: a["segments_info"][0].update(id=str(a["segments_info"][0]["id"])), "is not an integer"),
    ],
)
def test_cli_panoptic_bad_input(coco, tmp_path, capsys, corrupt, message):
    ann = coco["data"]["annotations"][1]
    corrupt(coco, ann)
    pred_json = write_pred_json(coco, tmp_path)
    argv = ["eval-predictions", "panoptic", "--gt-json", str(coco["gt_json"]), "--gt-dir", str(coco["gt_dir"])]
    argv += ["--pred-json", str(pred_json), "--pred-dir", str(coco["pred_dir"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and ann["file_name"] in err and err.count("\n") == 1


@needs_samples
def test_cli_panoptic_takes_integral_float_ids_as_the_reference_does(coco, tmp_path, capsys):
    """1.0 == 1 for the reference evaluators' dict lookups, so a JSON writer's 1.0 is the id 1 (PQ unchanged)."""
    for ann in coco["data"]["annotations"]:
        for s in ann["segments_info"]:
            s["category_id"] = float(s["category_id"])
    pred_json = write_pred_json(coco, tmp_path)
    argv = ["eval-predictions", "panoptic", "--gt-json", str(coco["gt_json"]), "--gt-dir", str(coco["gt_dir"])]
    assert main(argv + ["--pred-json", str(pred_json), "--pred-dir", str(coco["pred_dir"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["PQ"] == 100.0


def test_a_ground_truth_without_annotations_is_no_score(tmp_path, capsys):
    """PQ 0 over no image, exit 0, and the metrics file written."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"annotations": [], "categories": [{"id": 1, "name": "a", "isthing": 1}]}))
    out = tmp_path / "o.json"
    argv = ["eval-predictions", "panoptic", "--gt-json", str(gt), "--gt-dir", str(tmp_path), "--pred-json", str(gt),
            "--pred-dir", str(tmp_path), "--output", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{gt}: its 'annotations' list is empty" in err and not out.exists(), err


@pytest.mark.parametrize("given", ["nonexist.json", "twoclasses.json"])
def test_classes_names_the_path_it_was_given(tmp_path, capsys, given):
    """A wrong --classes path was named as '.' (the folder it was looked for in)."""
    (tmp_path / "twoclasses.json").write_text('{"classes": ["a", "b"]}')
    (tmp_path / "gt").mkdir()
    argv = ["eval-predictions", "semantic", "--gt-dir", str(tmp_path / "gt"), "--pred-dir", str(tmp_path / "gt"),
            "--classes", str(tmp_path / given)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--classes {tmp_path / given}: " in err, err


def test_missing_prediction_for_an_image(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": []}],
                              "categories": [{"id": 1, "isthing": 1}]}))  # fmt: skip
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="no prediction for image_id 1"):
        evaluate_panoptic_folder(gt, tmp_path, pred, tmp_path)


def write_labels(folder: Path, maps: dict[str, list[list[int]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in maps.items():
        Image.fromarray(np.array(values, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def semantic_dirs(tmp_path: Path) -> tuple[Path, Path]:
    gt = write_labels(tmp_path / "gt", {"a": [[0, 0, 1, 1], [2, 2, 255, 255]], "b": [[0]]})
    pred = write_labels(tmp_path / "pred", {"a": [[0, 1, 1, 1], [2, 0, 2, 1]], "b": [[3]], "extra": [[1]]})
    return gt, pred


def test_semantic_folder_hand_computed(semantic_dirs):
    gt, pred = semantic_dirs
    # K = 4. Labelled (gt, pred) pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) in a, (0,3) in b.
    # class 0: tp 1, gt 3, pred 2 -> IoU 1/4, ACC 1/3; class 1: tp 2, gt 2, pred 3 -> IoU 2/3, ACC 1;
    # class 2: tp 1, gt 2, pred 1 -> IoU 1/2, ACC 1/2; class 3: predicted once, absent from GT.
    r = evaluate_semantic_folder(gt, pred, num_classes=4, ignore_label=255)
    assert r["mIoU"] == pytest.approx(100 * (1 / 4 + 2 / 3 + 1 / 2) / 4)  # 2021: class 3 counts as 0
    assert r["fwIoU"] == pytest.approx(100 * (3 / 7 * 1 / 4 + 2 / 7 * 2 / 3 + 2 / 7 * 1 / 2))
    assert r["mACC"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 2) / 3)
    assert r["pACC"] == pytest.approx(100 * 4 / 7)
    assert r["IoU"][:3] == pytest.approx([25.0, 200 / 3, 50.0]) and r["IoU"][3] is None
    current = evaluate_semantic_folder(gt, pred, num_classes=4, ignore_label=255, miou_formula="d2_current")
    assert current["mIoU"] == pytest.approx(100 * (1 / 4 + 2 / 3 + 1 / 2) / 3)
    assert evaluate_semantic_folder(gt, pred, num_classes=4, ignore_label=255, workers=2) == r


def test_cli_semantic(semantic_dirs, tmp_path, capsys):
    gt, pred = semantic_dirs
    out = tmp_path / "m.json"
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred), "--num-classes", "4"]
    argv += ["--ignore-label", "255", "--miou-formula", "d2_current"]
    assert main(argv + ["--json", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["mIoU"] == pytest.approx(100 * (1 / 4 + 2 / 3 + 1 / 2) / 3)
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "mIoU" in table and "47.22" in table and "66.67" in table


@pytest.mark.parametrize(
    "maps, args, message",
    [
        ({"a": [[5]]}, {}, "predicted label 5 outside [0, 4)"),
        ({}, {}, "not found"),
        ({"a": [[0, 0]]}, {}, "differs from ground truth"),
        ({"a": [[0]]}, {"--num-classes": "0"}, "--num-classes"),
    ],
)
def test_cli_semantic_bad_input(tmp_path, capsys, maps, args, message):
    gt = write_labels(tmp_path / "gt", {"a": [[0]]})
    pred = write_labels(tmp_path / "pred", maps)
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred)]
    for key, value in {"--num-classes": "4", "--ignore-label": "255", **args}.items():
        argv += [key, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    if "label" in message or "differs" in message:
        assert str(pred / "a.png") in err


def test_a_prediction_under_both_names_is_refused_not_picked(tmp_path, capsys):
    """pred/a.png and pred/a_labels.png both there (e.g. predictions written beside other label maps): scoring
    either one silently could score the wrong file."""
    gt = write_labels(tmp_path / "gt", {"a": [[0]]})
    pred = write_labels(tmp_path / "pred", {"a": [[1]], "a_labels": [[0]]})
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred), "--num-classes", "2"]
    assert main(argv + ["--ignore-label", "255"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(pred / "a.png") in err and "a_labels.png" in err, err
    (pred / "a.png").unlink()  # one of them gone: scored
    assert main(argv + ["--ignore-label", "255", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mIoU"] == pytest.approx(100.0)


def test_rgb_label_png_is_rejected(tmp_path):
    gt = write_labels(tmp_path / "gt", {"a": [[0]]})
    (tmp_path / "pred").mkdir()
    Image.new("RGB", (1, 1)).save(tmp_path / "pred" / "a.png")
    with pytest.raises(DataError, match="single-channel"):
        evaluate_semantic_folder(gt, tmp_path / "pred", num_classes=2, ignore_label=255)


def test_help_exits_zero(capsys):
    for argv in (["eval-predictions", "--help"], ["eval-predictions", "panoptic", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "--gt-json" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_reference_with_bf16_is_refused_in_one_line(tmp_path, capsys, command):
    import maskformer
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(Path(maskformer.__file__).parent / "resources" / "demo.yaml")
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, cfg=cfg, model=maskformer.build_model(cfg))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    extra = [str(image), "--output-dir", str(tmp_path / "out")] if command == "predict" else []
    assert main([command, str(ckpt), *extra, "--reference", "--bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "options",
    [[], pytest.param(["--bf16"], marks=NEEDS_BF16), ["--fast"], pytest.param(["--bf16", "--fast"], marks=NEEDS_BF16)],
)
def test_predict_options_write_label_maps(tmp_path, options):
    import maskformer
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(Path(maskformer.__file__).parent / "resources" / "demo.yaml")
    ckpt = tmp_path / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, cfg=cfg, model=maskformer.build_model(cfg))
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(image), "--task", "semantic", "--output-dir", str(out), *options]) == 0
    labels = np.asarray(Image.open(out / "a_labels.png"))
    assert labels.shape == (48, 64)


def test_semantic_table_shows_the_papers_pq_st() -> None:
    from maskformer.evaluation import format_semantic_table

    result = {"mIoU": 40.0, "fwIoU": 60.0, "mACC": 50.0, "pACC": 70.0, "IoU": [40.0], "ACC": [50.0]}
    assert "PQ^St" not in format_semantic_table(result)
    text = format_semantic_table({**result, "PQ_St": {"PQ": 31.25, "SQ": 70.5, "RQ": 44.0}}, class_names=["wall"])
    assert [line.split() for line in text.splitlines()[6:9]] == [
        ["PQ^St", "31.25"],
        ["SQ^St", "70.50"],
        ["RQ^St", "44.00"],
    ]


def test_semantic_table_says_why_nothing_was_scored_when_every_label_pixel_is_ignored() -> None:
    """mIoU nan and pACC nan were printed with an empty per-class table and no word why."""
    from maskformer.evaluation import format_semantic_table

    nan = float("nan")
    result = {"mIoU": nan, "fwIoU": 0.0, "mACC": nan, "pACC": nan, "IoU": [None, None], "ACC": [None, None]}
    text = format_semantic_table(result, class_names=["a", "b"])
    assert text.endswith("(no ground-truth pixel of any class: every label pixel is the ignore value)")


def test_cli_semantic_against_raw_ade20k_annotations(tmp_path, capsys):
    """ADE20K's raw annotations hold 0 = other and k = class k - 1; --ade20k-raw reads them as `maskformer eval`
    does, so predictions of the right classes score 100 (without it every class is off by one)."""
    raw = [[0, 1, 2, 150], [150, 3, 3, 0]]
    gt = write_labels(tmp_path / "annotations", {"scene": raw})
    pred = write_labels(tmp_path / "pred", {"scene_labels": [[7, 0, 1, 149], [149, 2, 2, 9]]})  # 0s: anything
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred), "--json"]
    assert main(argv + ["--ade20k-raw"]) == 0
    right = json.loads(capsys.readouterr().out)
    assert right["mIoU"] == 100.0 and right["pACC"] == 100.0 and len(right["IoU"]) == 150
    assert right["classes"][0] == "wall" and right["IoU_by_class"]["wall"] == 100.0  # (as eval's metrics.json)
    assert main(argv + ["--num-classes", "151", "--ignore-label", "0"]) == 0  # the raw values taken as they are
    assert json.loads(capsys.readouterr().out)["pACC"] == 0.0
    write_labels(gt, {"scene": [[0, 151, 2, 150], [150, 3, 3, 0]]})
    assert main(argv + ["--ade20k-raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "scene.png: value 151 is not an ADE20K-150 raw annotation" in err
    assert main(argv + ["--ade20k-raw", "--num-classes", "100"]) == 2
    assert "--ade20k-raw means 150 classes" in capsys.readouterr().err


def _bad_prediction_with_classes(tmp_path, capsys, classes: dict, gt: list, pred: list) -> str:
    """The one error line of `eval-predictions semantic --classes` for a folder dataset's classes.json ``classes``
    and one ground-truth / prediction pair."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.json").write_text(json.dumps(classes))
    gt_dir = write_labels(tmp_path / "gt", {"scene": gt})
    pred_dir = write_labels(tmp_path / "pred", {"scene_labels": pred})
    capsys.readouterr()
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir)]
    assert main([*argv, "--classes", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err], err
    return err


def test_a_prediction_holding_the_ignore_value_is_named_by_its_file_value(tmp_path, capsys):
    """With --classes the error said "predicted label 255 outside [0, 2)": 255 and [0, 2) are internal positions
    the user never wrote; the file holds 0 (the dataset's ignore value)."""
    classes = {"ignore_label": 0, "classes": [{"name": "road", "id": 100}, {"name": "car", "id": 107}]}
    err = _bad_prediction_with_classes(tmp_path, capsys, classes, [[100, 107], [107, 0]], [[100, 0], [107, 107]])
    assert "scene_labels.png: value 0 names no class of --classes" in err and "255" not in err, err


def test_with_classes_whose_ids_are_positions_a_bad_prediction_never_asks_for_classes(tmp_path, capsys):
    """A classes.json whose ids are the positions: the error for a bad prediction said "pass --classes" to a command
    that had --classes."""
    classes = {"ignore_label": 255, "classes": [{"name": "road"}, {"name": "car"}]}
    err = _bad_prediction_with_classes(tmp_path, capsys, classes, [[0, 1], [1, 255]], [[0, 5], [1, 1]])
    assert "scene_labels.png: value 5 names no class of --classes" in err and "pass --classes" not in err, err


def test_undefined_metrics_are_json_null_not_nan(tmp_path, capsys):
    """A split whose labels are all "ignore" has no mIoU: metrics.json held a bare NaN, which strict JSON parsers
    (JavaScript's JSON.parse, jq) reject; per-class values were already null."""
    gt = write_labels(tmp_path / "gt", {"a": [[255, 255]]})
    pred = write_labels(tmp_path / "pred", {"a": [[0, 1]]})
    out = tmp_path / "m.json"
    argv = ["eval-predictions", "semantic", "--gt-dir", str(gt), "--pred-dir", str(pred), "--num-classes", "2"]
    assert main([*argv, "--ignore-label", "255", "--json", "--output", str(out)]) == 0

    def strict(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    for text in (capsys.readouterr().out, out.read_text()):
        metrics = json.loads(text, parse_constant=strict)
        assert metrics["mIoU"] is None and metrics["IoU"] == [None, None]


def _signal_handlers(items) -> list[tuple[bool, bool]]:
    import signal

    return [(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)]


def test_evaluation_pool_workers_leave_signals_to_the_command() -> None:
    """--workers N under a command: the forked workers ran its SIGTERM handler when the pool ended them
    (Pool.terminate sends SIGTERM), and printed "Process ForkPoolWorker-2: Traceback ... KeyboardInterrupt", also
    after correct results."""
    from maskformer.errors import terminate_as_interrupt
    from maskformer.evaluation.offline import _run

    with terminate_as_interrupt():
        seen = _run(_signal_handlers, list(range(8)), workers=2)
    assert seen and all(handlers == [(True, True)] for handlers in seen), seen


def test_panoptic_predictions_of_nested_folders_pair_by_their_path(tmp_path):
    """`predict --recursive` names an image c1/d/b (its path in the folder); the ground truth's file_name is
    c1/d/b.png: it was looked up by the stem "b" alone and said "no prediction for image_id 7"."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = (1, 0, 0)  # segment id 1
    gt_anns, pred_anns = [], []
    for image_id, name in ((7, "c1/d/b"), (8, "c2/b")):  # (the same stem in two folders)
        for folder, file_name in ((tmp_path / "gt", f"{name}.png"), (tmp_path / "pred", f"{name}_panoptic.png")):
            (folder / file_name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / file_name)
        segment = {"id": 1, "category_id": 1, "area": 12, "iscrowd": 0}
        gt_anns.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": [segment]})
        pred_anns.append({"image_id": name, "file_name": f"{name}_panoptic.png", "segments_info": [segment]})
    categories = [{"id": 1, "name": "thing", "isthing": 1}]
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": gt_anns, "categories": categories}))
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_anns, "categories": categories}))
    metrics = evaluate_panoptic_folder(tmp_path / "gt.json", tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred")
    assert metrics["All"]["pq"] == 1.0 and metrics["All"]["n"] == 1


def test_a_data_root_for_a_model_of_generated_scenes_is_refused(tmp_path, capsys) -> None:
    """eval of the demo's model with --data-root (even one that does not exist) scored the generated scenes and
    exited 0: a user could believe the numbers were their data's."""
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(DEMO_YAML)
    save_checkpoint(tmp_path / "demo.pt", cfg=cfg, model=maskformer.build_model(cfg))
    argv = ["eval", str(tmp_path / "demo.pt"), "--data-root", str(tmp_path / "camvid"), "--max-images", "1"]
    assert main([*argv, "--output-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data-root {tmp_path / 'camvid'}: " in err and "synthetic" in err, err
    assert not (tmp_path / "e").exists()


def test_tables_align_wide_class_names() -> None:
    """CJK names take two terminal columns each: the IoU column of eval's table was pushed out of line by them."""
    from maskformer.evaluation.table import format_table

    lines = format_table(["class", "IoU"], [["Straße / 道路", 1.0], ["自動車", 22.5], ["car", None]]).splitlines()

    def columns(text: str) -> int:  # (what a terminal shows: East Asian wide characters take two)
        import unicodedata

        return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)

    assert len({columns(line) for line in lines}) == 1, lines
    assert lines[2].endswith(" 1.00") and lines[3].endswith("22.50") and lines[4].endswith("    -")


def _tiny_panoptic(tmp_path: Path, gt_anns: list, pred_anns: list, categories=None) -> list[str]:
    """20x20 PNGs: every file holds segment 8 on its top half and 9 on its bottom half; argv for eval-predictions."""
    ids = np.full((20, 20), 8, np.int64)
    ids[10:] = 9
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir(exist_ok=True)
        for ann in gt_anns if folder == "gt" else pred_anns:
            if isinstance(ann.get("file_name"), str):
                Image.fromarray(to_rgb(ids)).save(tmp_path / folder / ann["file_name"])
    categories = categories or [{"id": 7, "name": "sky", "isthing": 0}, {"id": 3, "name": "road", "isthing": 0}]
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": gt_anns, "categories": categories}))
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred_anns}))
    return ["eval-predictions", "panoptic", "--gt-json", str(tmp_path / "gt.json"), "--gt-dir", str(tmp_path / "gt"),
            "--pred-json", str(tmp_path / "pred.json"), "--pred-dir", str(tmp_path / "pred"), "--json"]  # fmt: skip


SEGMENTS = [{"id": 8, "category_id": 7, "area": 200}, {"id": 9, "category_id": 3, "area": 200}]


def test_another_images_prediction_is_never_borrowed_by_file_name(tmp_path, capsys):
    """Ground truth x (file y.png) without a prediction was scored with the prediction of ground truth y, found by
    x's file name: PQ 33 and exit 0 (a QA walk). panopticapi refuses: no prediction for x."""
    gt = [{"image_id": "x", "file_name": "y.png", "segments_info": SEGMENTS},
          {"image_id": "y", "file_name": "z.png", "segments_info": SEGMENTS}]  # fmt: skip
    argv = _tiny_panoptic(tmp_path, gt, [{"image_id": "y", "file_name": "z.png", "segments_info": SEGMENTS}])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no prediction for image_id x" in err and err.count("\n") == 1, err
    # one prediction named by two ground-truth images' file names (ids 1 and 2, both a.png): refused
    gt = [{"image_id": 1, "file_name": "a.png", "segments_info": SEGMENTS},
          {"image_id": 2, "file_name": "sub/../a.png", "segments_info": SEGMENTS}]  # fmt: skip
    (tmp_path / "gt" / "sub").mkdir(parents=True)
    argv = _tiny_panoptic(tmp_path, gt, [{"image_id": "a", "file_name": "a.png", "segments_info": SEGMENTS}])
    assert main(argv) == 2
    assert "would be scored for two images (1 and 2)" in capsys.readouterr().err


@pytest.mark.parametrize("iscrowd, pq", [(0, 100.0), (1, 0.0), (2, 100.0)])
def test_crowd_is_iscrowd_equal_to_1_as_panopticapi(tmp_path, capsys, iscrowd, pq):
    """iscrowd 2 (and "0") was taken as crowd by its truth value: the segment dropped out of the score."""
    gt_segments = [dict(SEGMENTS[0], iscrowd=iscrowd), SEGMENTS[1]]
    gt = [{"image_id": 1, "file_name": "a.png", "segments_info": gt_segments}]
    argv = _tiny_panoptic(tmp_path, gt, [{"image_id": 1, "file_name": "a.png", "segments_info": SEGMENTS}])
    assert main(argv) == 0
    sky = json.loads(capsys.readouterr().out)["per_class"]["7"]  # (crowd only: 0 TP, FP, FN, reported as 0)
    assert 100 * sky["pq"] == pq and sky["tp"] == (iscrowd != 1), sky


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda g, p: g[0].update(image_id=[1]), "image_id [1] is not a string or an integer"),
        (lambda g, p: p[0].update(file_name=5), "file_name 5 is not a file name"),
        (lambda g, p: g[0]["segments_info"][0].update(area="400"), "area '400' is not a number of pixels"),
        (lambda g, p: g[0]["segments_info"][0].update(iscrowd="0"), "iscrowd '0' is not an integer"),
    ],
)
def test_malformed_panoptic_json_fields_are_one_line(tmp_path, capsys, change, words):
    """Each was a TypeError or numpy traceback (unhashable image_id, Path / int, an area of text)."""
    gt = [{"image_id": 1, "file_name": "a.png", "segments_info": [dict(s) for s in SEGMENTS]}]
    pred = [{"image_id": 1, "file_name": "a.png", "segments_info": SEGMENTS}]
    argv = _tiny_panoptic(tmp_path, gt, pred)
    change(gt, pred)
    (tmp_path / "gt.json").write_text(json.dumps({"annotations": gt, "categories": json.loads(
        (tmp_path / "gt.json").read_text())["categories"]}))  # fmt: skip
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": pred}))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_categories_that_are_not_objects_and_unnamed_prediction_categories(tmp_path, capsys):
    gt = [{"image_id": 1, "file_name": "a.png", "segments_info": SEGMENTS}]
    argv = _tiny_panoptic(tmp_path, gt, [dict(gt[0])], categories=[1, 2])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad categories (a category is 1, not an object with an 'id')" in err and err.count("\n") == 1, err
    # prediction categories without names: the ids are taken as they are (it said "the name 'None' is given to two")
    argv = _tiny_panoptic(tmp_path, gt, [dict(gt[0])])
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": gt, "categories": [{"id": 7}, {"id": 3}]}))
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["PQ"] == 100.0


def test_semantic_table_leaves_out_classes_without_ground_truth() -> None:
    """A 3-image set of a 133-class model printed 133 rows, most of them "-"; their count is said instead."""
    from maskformer.evaluation import format_semantic_table

    result = {"mIoU": 40.0, "fwIoU": 60.0, "mACC": 50.0, "pACC": 70.0, "IoU": [40.0, None, 0.0], "ACC": [50, None, 0]}
    lines = format_semantic_table(result, class_names=["wall", "sky", "car"]).splitlines()
    assert [line.split()[0] for line in lines[-3:-1]] == ["wall", "car"]
    assert lines[-1] == "(1 of 3 classes without ground-truth pixels are left out)"


def test_offline_ground_truth_is_read_upright_and_a_jpeg_one_refused(tmp_path) -> None:
    """eval-predictions read ground truth as stored while `eval` and training turn it by its EXIF orientation
    (predict's upright outputs were refused as "size differs"), and it scored JPEG ground truth silently."""
    from PIL import Image

    from maskformer.errors import DataError
    from maskformer.evaluation import read_label_png
    from maskformer.evaluation.offline import read_panoptic_png

    labels = np.zeros((4, 6), np.uint8)
    labels[:, 3:] = 1
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(labels).save(tmp_path / "l.png", exif=exif.tobytes())
    Image.fromarray(np.stack([labels, labels * 0, labels * 0], -1)).save(tmp_path / "p.png", exif=exif.tobytes())
    assert read_label_png(tmp_path / "l.png").shape == (6, 4)
    assert (read_panoptic_png(tmp_path / "p.png") == read_label_png(tmp_path / "l.png")).all()
    Image.fromarray(labels).save(tmp_path / "j.png", format="JPEG")
    with pytest.raises(DataError, match="j.png: a JPEG label map"):
        read_label_png(tmp_path / "j.png")
