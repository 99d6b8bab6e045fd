"""Dataset readers: real samples from ../shared/datasets (expected values computed here from the files with
PIL/numpy/json) and tiny fake trees for the formats that have no shared samples."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.data import DATASETS
from maskformer.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/datasets not present (real-data tests skipped)"
)


def _png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _ids(path: Path) -> np.ndarray:
    rgb = np.array(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


# ------------------------------------------------------------------------------------------ real samples


@needs_shared
@pytest.mark.parametrize("split, count", [("train", 367), ("val", 101)])
def test_camvid_real(split: str, count: int) -> None:
    root = SHARED / "camvid"
    pairs = [line.split() for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
    ds = DATASETS["camvid"](root=str(root), split=split)
    assert len(ds) == len(pairs) == count
    assert ds.meta.num_classes == 11 and ds.meta.ignore_label == 11
    for i in (0, len(ds) // 2, len(ds) - 1):
        rec = ds[i]
        label = _png(root / pairs[i][1])
        image = np.array(Image.open(root / pairs[i][0]).convert("RGB"))
        np.testing.assert_array_equal(rec["sem_seg"].numpy(), label)
        np.testing.assert_array_equal(rec["image"].permute(1, 2, 0).numpy(), image)
        present = sorted(set(np.unique(label).tolist()) - {11})
        assert rec["labels"].tolist() == present
        assert rec["masks"].sum((1, 2)).tolist() == [int((label == c).sum()) for c in present]
        assert (rec["height"], rec["width"]) == label.shape == (360, 480)


@needs_shared
def test_ade20k_real_samples_shifted_on_the_fly() -> None:
    root = SHARED / "ade20k_samples"
    ds = DATASETS["ade20k_150"](root=str(root), split="val")
    files = sorted((root / "annotations").glob("*.png"))
    assert len(ds) == len(files) == 3
    names = [line.split(",")[-1] for line in (root / "objectInfo150.csv").read_text().splitlines()[1:]]
    # our names are the first synonym of objectInfo150's ';'-separated lists for the simple ones
    assert ds.meta.classes[0] == names[0] == "wall" and ds.meta.classes[2] == names[2] == "sky"
    for i, f in enumerate(files):
        raw = _png(f)
        expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # 0 = other -> ignore, k -> k-1
        rec = ds[i]
        assert rec["file_name"].endswith(f.stem + ".jpg")
        np.testing.assert_array_equal(rec["sem_seg"].numpy(), expected)
        assert rec["labels"].tolist() == sorted(int(v) - 1 for v in np.unique(raw) if v != 0)


@needs_shared
def test_coco_panoptic_real_samples() -> None:
    root = SHARED / "coco_panoptic_samples"
    data = json.loads((root / "panoptic_examples.json").read_text())
    cats = json.loads((root / "panoptic_coco_categories.json").read_text())
    # detectron2 contiguous ids: things (ids ascending) then stuff (ids ascending)
    order = sorted(cats, key=lambda c: (c["isthing"] == 0, c["id"]))
    contiguous = {c["id"]: i for i, c in enumerate(order)}
    isthing = {c["id"]: bool(c["isthing"]) for c in cats}
    ds = DATASETS["coco_panoptic"](
        root=str(root), split="val", json_file="panoptic_examples.json", image_dir="images", panoptic_dir="panoptic"
    )
    assert len(ds) == len(data["annotations"]) == 2 and ds.meta.num_classes == 133
    for i, ann in enumerate(data["annotations"]):
        rec = ds[i]
        ids = _ids(root / "panoptic" / ann["file_name"])
        segs = ann["segments_info"]
        assert len(rec["segments_info"]) == len(segs)
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segs}
        np.testing.assert_array_equal(rec["pan_seg"].numpy(), ids)
        for got, s in zip(rec["segments_info"], segs):
            assert got["id"] == s["id"] and got["iscrowd"] == s["iscrowd"]
            assert got["category_id"] == contiguous[s["category_id"]] and got["isthing"] == isthing[s["category_id"]]
            assert got["area"] == s["area"] == int((ids == s["id"]).sum())
        non_crowd = [s for s in segs if not s["iscrowd"]]
        assert rec["labels"].tolist() == [contiguous[s["category_id"]] for s in non_crowd]
        assert rec["masks"].sum((1, 2)).tolist() == [s["area"] for s in non_crowd]
        image = data["images"][[im["id"] for im in data["images"]].index(ann["image_id"])]
        assert (rec["height"], rec["width"]) == (image["height"], image["width"])


@needs_shared
def test_coco_panoptic_two_cats(tmp_path: Path) -> None:
    root = SHARED / "coco_panoptic_samples"
    segs = json.loads((root / "000000039769_segments.json").read_text())
    ann = {"image_id": 39769, "file_name": "000000039769.png", "segments_info": segs}
    data = {"images": [{"id": 39769, "file_name": "000000039769.png"}], "annotations": [ann]}
    (tmp_path / "cats.json").write_text(json.dumps(data))
    ds = DATASETS["coco_panoptic"](
        root=str(tmp_path),
        split="val",
        json_file="cats.json",
        image_dir=str(root / "images"),
        panoptic_dir=str(root / "panoptic"),
    )
    rec = ds[0]
    ids = _ids(root / "panoptic" / "000000039769.png")
    assert [s["area"] for s in rec["segments_info"]] == [int((ids == s["id"]).sum()) for s in segs]
    assert rec["labels"].tolist().count(ds.meta.classes.index("cat")) == 2  # two cats


# ------------------------------------------------------------------------------------------ fake trees


def _rgb(path: Path, h: int = 8, w: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)


def _save(path: Path, arr: np.ndarray, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def test_cityscapes_label_ids_and_train_ids(tmp_path: Path) -> None:
    base = tmp_path / "cityscapes"
    _rgb(base / "leftImg8bit/val/aachen/a_000001_leftImg8bit.png")
    _rgb(base / "leftImg8bit/val/bonn/b_000002_leftImg8bit.png")
    label_ids = np.array([[7, 26, 0, 33, 9, 24, 11, 23, 23, 23]] * 8, dtype=np.uint8)
    _save(base / "gtFine/val/aachen/a_000001_gtFine_labelIds.png", label_ids)
    train_ids = np.full((8, 10), 255, dtype=np.uint8)
    train_ids[:, :3] = 18
    _save(base / "gtFine/val/bonn/b_000002_gtFine_labelTrainIds.png", train_ids)
    ds = DATASETS["cityscapes"](root=str(tmp_path), split="val")
    # cityscapesScripts: road 7->0, car 26->13, unlabeled 0->255, bicycle 33->18, parking 9->255,
    # person 24->11, building 11->2, sky 23->10
    expected = np.array([[0, 13, 255, 18, 255, 11, 2, 10, 10, 10]] * 8)
    np.testing.assert_array_equal(ds[0]["sem_seg"].numpy(), expected)
    np.testing.assert_array_equal(ds[1]["sem_seg"].numpy(), train_ids)
    assert ds.meta.classes[13] == "car" and ds.meta.num_classes == 19
    bad = label_ids.copy()
    bad[0, 0] = 40  # not a Cityscapes labelId
    _save(base / "gtFine/val/aachen/a_000001_gtFine_labelIds.png", bad)
    with pytest.raises(DataError, match="label value 40"):
        ds[0]


def test_mapillary_palette_labels(tmp_path: Path) -> None:
    base = tmp_path / "mapillary_vistas" / "validation"
    _rgb(base / "images/x.jpg")
    idx = np.array([[0, 13, 64, 65, 65, 1, 2, 3, 4, 5]] * 8, dtype=np.uint8)
    p = Image.fromarray(idx, mode="L").convert("P")
    p.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    (base / "labels").mkdir(parents=True)
    p.save(base / "labels/x.png")
    ds = DATASETS["mapillary_vistas"](root=str(tmp_path), split="val")
    rec = ds[0]
    np.testing.assert_array_equal(rec["sem_seg"].numpy(), idx)
    assert rec["labels"].tolist() == [0, 1, 2, 3, 4, 5, 13, 64]  # 65 = ignore
    assert ds.meta.num_classes == 65 and ds.meta.classes[13] == "Road"


def test_coco_stuff_10k_layout(tmp_path: Path) -> None:
    base = tmp_path / "coco" / "coco_stuff_10k"
    _rgb(base / "images_detectron2/test/COCO_1.jpg")
    lab = np.array([[0, 170, 255, 91, 80] * 2] * 8, dtype=np.uint8)
    _save(base / "annotations_detectron2/test/COCO_1.png", lab)
    ds = DATASETS["coco_stuff_10k"](root=str(tmp_path), split="val")
    assert ds[0]["labels"].tolist() == [0, 80, 91, 170]
    meta = ds.meta
    # contiguous 80 = first stuff class (COCO id 92 banner); 170 = id 182 wood; 0 = person (id 1)
    assert meta.contiguous_to_dataset_id[80] == 92 and meta.classes[80] == "banner"
    assert meta.contiguous_to_dataset_id[170] == 182 and meta.classes[170] == "wood"
    assert meta.contiguous_to_dataset_id[0] == 1 and meta.num_classes == 171


def test_ade20k_full_16bit_tiff(tmp_path: Path) -> None:
    base = tmp_path / "ADE20K_2021_17_01"
    _rgb(base / "images_detectron2/validation/ADE_frame_1.jpg")
    lab = np.array([[0, 846, 65535, 300, 5] * 2] * 8, dtype=np.uint16)
    _save(base / "annotations_detectron2/validation/ADE_frame_1.tif", lab)
    ds = DATASETS["ade20k_full_847"](root=str(tmp_path), split="val")
    rec = ds[0]
    assert rec["labels"].tolist() == [0, 5, 300, 846] and int(rec["sem_seg"].max()) == 65535
    assert ds.meta.num_classes == 847 and ds.meta.ignore_label == 65535
    lab[0, 0] = 847
    _save(base / "annotations_detectron2/validation/ADE_frame_1.tif", lab)
    with pytest.raises(DataError, match="label value 847"):
        ds[0]


def test_ade20k_prefers_detectron2_annotations(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    _rgb(base / "images/training/ADE_train_1.jpg")
    _save(base / "annotations/training/ADE_train_1.png", np.full((8, 10), 5, dtype=np.uint8))
    ds = DATASETS["ade20k_150"](root=str(tmp_path), split="train")
    assert ds[0]["labels"].tolist() == [4]  # raw 5 -> 4
    _save(base / "annotations_detectron2/training/ADE_train_1.png", np.full((8, 10), 7, dtype=np.uint8))
    ds = DATASETS["ade20k_150"](root=str(tmp_path), split="train")
    assert ds[0]["labels"].tolist() == [7]  # already converted: used as is


def test_folder_dataset_with_sparse_ids_yaml(tmp_path: Path) -> None:
    (tmp_path / "classes.yaml").write_text(
        "ignore_label: 0\nclasses:\n"
        "  - {name: sky, id: 1, color: [0, 0, 255]}\n  - {name: tree, id: 7}\n  - {name: road, id: 2}\n"
    )
    _rgb(tmp_path / "images/train/a.jpg")
    _save(tmp_path / "labels/train/a.png", np.array([[1, 7, 2, 0, 0] * 2] * 8, dtype=np.uint8))
    ds = DATASETS["folder"](root=str(tmp_path), split="train")
    # ids 1, 7, 2 -> contiguous 0, 1, 2; the files' ignore value 0 would collide with class 0, so it becomes 255
    np.testing.assert_array_equal(ds[0]["sem_seg"].numpy()[0], [0, 1, 2, 255, 255] * 2)
    assert ds.meta.ignore_label == 255 and ds[0]["labels"].tolist() == [0, 1, 2]
    assert ds.meta.classes == ["sky", "tree", "road"] and ds.meta.colors[0] == [0, 0, 255]
    _save(tmp_path / "labels/train/a.png", np.array([[1, 3, 2, 0, 0] * 2] * 8, dtype=np.uint8))
    with pytest.raises(DataError, match="label value 3"):
        ds[0]
    with pytest.raises(DataError, match="data.val_split=all"):
        DATASETS["folder"](root=str(tmp_path), split="val")


def test_folder_dataset_flat_and_list_layouts(tmp_path: Path) -> None:
    (tmp_path / "classes.json").write_text(json.dumps({"ignore_label": 255, "classes": ["a", "b"]}))
    _rgb(tmp_path / "images/x.png")
    _save(tmp_path / "labels/x.png", np.array([[0, 1, 255, 1, 0] * 2] * 8, dtype=np.uint8))
    assert DATASETS["folder"](root=str(tmp_path), split="all")[0]["labels"].tolist() == [0, 1]
    (tmp_path / "val.txt").write_text("images/x.png labels/x.png\n")
    assert len(DATASETS["folder"](root=str(tmp_path), split="val")) == 1
    (tmp_path / "classes.json").write_text("{not json")
    with pytest.raises(DataError, match="classes.json"):
        DATASETS["folder"](root=str(tmp_path), split="val")


@pytest.mark.parametrize(
    ("classes_file", "message"),
    [
        ({"ignore_lable": 0, "classes": ["a", "b"]}, "unknown key 'ignore_lable' (did you mean 'ignore_label'?)"),
        ({"ignore_index": 0, "classes": ["a", "b"]}, "unknown key 'ignore_index' (did you mean 'ignore_label'?)"),
        ({"classes": [{"name": "a"}, {"name": "car", "is_thing": True}]}, "classes[1] has an unknown key 'is_thing'"),
        ({"classes": [{"name": "a", "colour": [1, 2, 3]}, "b"]}, "classes[0] has an unknown key 'colour'"),
        ({"classes": [{"name": "sky", "isthing": "no"}, "b"]}, "classes[0] (sky) has isthing 'no': write true or"),
        ({"classes": ["sky", "road", "sky"]}, "classes[0] and classes[2] are both named 'sky'"),
        ({"num_classes": 3, "classes": ["a", "b"]}, "num_classes is 3 but 'classes' lists 2"),
    ],
)
def test_classes_file_misspellings_and_bad_values_are_named(tmp_path: Path, classes_file, message) -> None:
    """Each was accepted without a word: a misspelt key fell back to its default (Car trained as stuff, the colour
    replaced), "isthing": "no" made a thing, and two classes shared a name in tables and predictions."""
    (tmp_path / "classes.json").write_text(json.dumps(classes_file))
    _rgb(tmp_path / "images/x.png")
    _save(tmp_path / "labels/x.png", np.zeros((8, 10), dtype=np.uint8))
    with pytest.raises(DataError) as e:
        DATASETS["folder"](root=str(tmp_path), split="all")
    assert str(e.value).startswith(str(tmp_path / "classes.json")) and message in str(e.value), str(e.value)


def test_classes_file_keys_of_its_own_are_left_alone(tmp_path: Path, shared_dir: Path) -> None:
    """A source note, a trainId or a consistent num_classes are not errors: CamVid's own file carries several."""
    (tmp_path / "classes.json").write_text(json.dumps({"source": "mine", "num_classes": 2, "ignore_name": "void",
                                                       "classes": [{"name": "a", "trainId": 0}, "b"]}))  # fmt: skip
    _rgb(tmp_path / "images/x.png")
    _save(tmp_path / "labels/x.png", np.zeros((8, 10), dtype=np.uint8))
    assert DATASETS["folder"](root=str(tmp_path), split="all")[0]["labels"].tolist() == [0]
    from maskformer.data.folder import read_folder_meta

    assert len(read_folder_meta(shared_dir / "datasets" / "camvid").classes) == 11


def test_a_listed_file_that_is_missing_is_named_before_any_sample_is_read(tmp_path: Path) -> None:
    """A train.txt line naming a missing image, or an image without its label, was found only if a training step drew
    it: a short run finished with exit 0. skip_bad_samples keeps the old behaviour (the sample is skipped when read)."""
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b"]}))
    for name in ("x", "y"):
        _rgb(tmp_path / f"images/train/{name}.png")
    _save(tmp_path / "labels/train/x.png", np.zeros((8, 10), dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels/train/y.png: file not found$"):
        DATASETS["folder"](root=str(tmp_path), split="train")
    (tmp_path / "val.txt").write_text("images/train/x.png labels/train/x.png\nimages/z.png labels/z.png\n")
    with pytest.raises(DataError, match=r"images/z.png: file not found \(and 1 more listed files\)"):
        DATASETS["folder"](root=str(tmp_path), split="val")
    assert len(DATASETS["folder"](root=str(tmp_path), split="val", skip_bad_samples=True)) == 2


def test_ade20k_panoptic_tree(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    _rgb(base / "images/validation/ADE_val_1.jpg", 8, 10)
    ids = np.zeros((8, 10), dtype=np.int64)
    ids[:, :5] = 1000 * 0 + 1  # stuff "wall" (category 0)
    ids[:, 5:] = 12 * 1000 + 7  # thing "person" (category 12)
    ids[0, 9] = 0  # VOID pixel
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    _save(base / "ade20k_panoptic_val/ADE_val_1.png", rgb)
    raw_sem = np.where(np.arange(10)[None, :] < 5, 1, 13).repeat(8, 0).astype(np.uint8)  # raw ADE: class + 1
    _save(base / "annotations/validation/ADE_val_1.png", raw_sem)
    segs = [
        {"id": 1, "category_id": 0, "iscrowd": 0, "area": 40},
        {"id": 12007, "category_id": 12, "iscrowd": 0, "area": 39},
    ]
    data = {"annotations": [{"image_id": "ADE_val_1", "file_name": "ADE_val_1.png", "segments_info": segs}]}
    (base / "ade20k_panoptic_val.json").write_text(json.dumps(data))
    rec = DATASETS["ade20k_panoptic"](root=str(tmp_path), split="val")[0]
    assert rec["labels"].tolist() == [0, 12]
    assert [s["isthing"] for s in rec["segments_info"]] == [False, True]
    assert rec["masks"].sum((1, 2)).tolist() == [40, 39]
    np.testing.assert_array_equal(rec["sem_seg"].numpy(), raw_sem.astype(np.int64) - 1)
    assert torch.equal(rec["pan_seg"], torch.from_numpy(ids))


def test_synthetic_factory_and_unknown_split(tmp_path: Path) -> None:
    ds = DATASETS["synthetic"](root="", split="val", length=3, num_classes=6, image_size=64)
    assert len(ds) == 3 and ds.meta.num_classes == 6 and tuple(ds[0]["image"].shape) == (3, 64, 64)
    with pytest.raises(DataError, match="unknown split"):
        DATASETS["ade20k_150"](root=str(tmp_path), split="bogus")
    with pytest.raises(DataError):
        DATASETS["camvid"](root=str(tmp_path), split="train")


@needs_shared
def test_coco_format_panoptic_data_in_its_own_layout_trains_and_evaluates(tmp_path: Path, capsys) -> None:
    """data.panoptic_json / panoptic_images / panoptic_masks locate COCO-format panoptic data (here the samples'
    flat layout) without symlinks into COCO's tree; on another dataset they are one ConfigError."""
    import maskformer
    from maskformer.build import build_dataset
    from maskformer.cli import main
    from maskformer.errors import ConfigError

    root = SHARED / "coco_panoptic_samples"
    keys = ["data.panoptic_json=panoptic_examples.json", "data.panoptic_images=images", "data.panoptic_masks=panoptic"]
    small = ["model.backbone.weights=", "train.max_iters=1", "train.batch_size=2", "data.num_workers=0",
             "data.min_size_train=[96]", "data.max_size_train=160", "data.crop_size=[64,96]", "test.min_size=96",
             "test.max_size=160", "model.backbone.blocks=[1,1,1,1]", "model.dec_layers=1",
             "model.enc_layers=1"]  # fmt: skip
    config = Path(__file__).resolve().parents[1] / "configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml"
    cfg = maskformer.load_config(config, [*keys, f"data.root={root}"])
    assert len(build_dataset(cfg, split="val", train=False)) == 2
    with pytest.raises(ConfigError, match="need data.dataset=coco_panoptic"):
        build_dataset(maskformer.load_config(config, [*keys, "data.dataset=ade20k_150"]), split="val", train=False)
    args = ["train", str(config), "--data-root", str(root), "--output-dir", str(tmp_path / "run")]
    assert main([*args, *(f"--set={kv}" for kv in [*keys, *small])]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "model_final.pt"), "--json", "--output-dir", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2


def _own_panoptic(tmp_path: Path) -> list[str]:
    """A COCO-format panoptic dataset with categories of its own (ids 7, 20, 21) under ``tmp_path``; returns the
    --set values that locate it."""
    categories = [{"id": 7, "name": "cat", "isthing": 1, "color": [200, 30, 30]},
                  {"id": 20, "name": "sky", "isthing": 0, "color": [30, 30, 200]},
                  {"id": 21, "name": "grass", "isthing": 0, "color": [30, 200, 30]}]  # fmt: skip
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for split in ("train", "val"):
        (tmp_path / "pan" / split).mkdir(parents=True)
        (tmp_path / "img" / split).mkdir(parents=True)
    for i in range(4):
        ids = np.full((64, 96), 1, np.int64)  # sky on top, grass below, a cat in the middle
        ids[32:] = 2
        ids[20 + i : 44, 30 : 60 + i] = 3
        split = "train" if i < 3 else "val"
        rgb = np.stack([ids % 256, ids // 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "pan" / split / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "img" / split / f"{i}.jpg")
        segments = [{"id": k, "category_id": c, "iscrowd": 0, "area": int((ids == k).sum()), "bbox": [0, 0, 1, 1]}
                    for k, c in ((1, 20), (2, 21), (3, 7))]  # fmt: skip
        images.append((split, {"id": i, "file_name": f"{i}.jpg", "height": 64, "width": 96}))
        annotations.append((split, {"image_id": i, "file_name": f"{i}.png", "segments_info": segments}))
    for split in ("train", "val"):
        data = {"images": [im for s, im in images if s == split], "categories": categories,
                "annotations": [a for s, a in annotations if s == split]}  # fmt: skip
        (tmp_path / f"{split}.json").write_text(json.dumps(data))
    return ["data.panoptic_json={split}.json", "data.panoptic_images=img/{split}", "data.panoptic_masks=pan/{split}"]


PANOPTIC_R50 = Path(__file__).resolve().parents[1] / "configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml"
SMALL_PANOPTIC = ["model.backbone.weights=", "train.max_iters=1", "train.batch_size=2", "data.num_workers=0",
                  "data.min_size_train=[64]", "data.max_size_train=96", "data.crop_size=[48,64]", "test.min_size=64",
                  "test.max_size=96", "model.backbone.blocks=[1,1,1,1]", "model.dec_layers=1", "model.enc_layers=1",
                  "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]  # fmt: skip


def test_coco_format_panoptic_data_with_its_own_categories(tmp_path: Path, capsys) -> None:
    """A COCO-format panoptic JSON with categories of its own (ids 7, 20, 21): the model gets those 3 classes (the
    note names the JSON), and predict's predictions.json speaks those ids."""
    import maskformer
    from maskformer.build import build_meta
    from maskformer.cli import main

    keys = _own_panoptic(tmp_path)
    config = PANOPTIC_R50
    meta = build_meta(maskformer.load_config(config, [*keys, f"data.root={tmp_path}"]))
    assert meta.classes == ["cat", "sky", "grass"] and meta.thing_ids == [0]
    args = ["train", str(config), "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "run")]
    capsys.readouterr()
    assert main([*args, *(f"--set={kv}" for kv in [*keys, *SMALL_PANOPTIC])]) == 0
    assert f"model.num_classes 133 -> 3 (from the categories of {tmp_path / 'train.json'})" in capsys.readouterr().err
    model = tmp_path / "run" / "model_final.pt"
    assert main(["eval", str(model), "--json", "--output-dir", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    # validation data alone (no train.json): its categories are the class table ("train.json: not found" before)
    (tmp_path / "train.json").rename(tmp_path / "train.json.away")
    assert main(["eval", str(model), "--json", "--output-dir", str(tmp_path / "e")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    (tmp_path / "val.json").rename(tmp_path / "val.json.away")  # neither: both named (it was train.json alone)
    assert main(["eval", str(model), "--output-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'train.json'} or {tmp_path / 'val.json'}: panoptic JSON not found" in err and "\n" not in err
    (tmp_path / "val.json.away").rename(tmp_path / "val.json")
    (tmp_path / "train.json.away").rename(tmp_path / "train.json")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "img" / "val"), "--output-dir", str(out)]) == 0
    written = json.loads((out / "predictions.json").read_text())
    assert [(c["id"], c["name"], c["isthing"]) for c in written["categories"]] == [(7, "cat", 1), (20, "sky", 0),
                                                                                   (21, "grass", 0)]  # fmt: skip
    assert {s["category_id"] for s in written["annotations"][0]["segments_info"]} <= {7, 20, 21}


@pytest.mark.parametrize("damage", ["missing_png", "no_isthing", "not_json", "a_name_twice"])
def test_bad_coco_format_panoptic_data_is_one_line_before_training(tmp_path: Path, capsys, damage: str) -> None:
    """A missing PNG was found only when a step read it (a run folder stayed, or with few steps, none did and the
    run passed), categories without isthing trained an all-stuff model, and a train JSON that is not JSON said "no
    readable 'categories' list": now each is one line before the first step, and no run folder stays."""
    from maskformer.cli import main

    keys = _own_panoptic(tmp_path)
    if damage == "missing_png":
        (tmp_path / "pan" / "train" / "2.png").unlink()
        words = f"{tmp_path / 'pan' / 'train' / '2.png'}: file not found (image 2 of"
    elif damage == "no_isthing":
        data = json.loads((tmp_path / "train.json").read_text())
        del data["categories"][0]["isthing"]
        (tmp_path / "train.json").write_text(json.dumps(data))
        words = "categories need 'isthing' (1 for things, 0 for stuff); missing or not 0/1 for cat"
    elif damage == "a_name_twice":  # (eval then found the model's classes "in another order"; offline PQ mixed them)
        data = json.loads((tmp_path / "train.json").read_text())
        data["categories"][1]["name"] = data["categories"][0]["name"]
        (tmp_path / "train.json").write_text(json.dumps(data))
        words = f"{tmp_path / 'train.json'}: two categories are named 'cat'; give each category its own name"
    else:
        (tmp_path / "train.json").write_text("this is { not json")
        words = "train.json: not a COCO panoptic JSON (JSONDecodeError"
    args = ["train", str(PANOPTIC_R50), "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "run")]
    capsys.readouterr()
    assert main([*args, *(f"--set={kv}" for kv in [*keys, *SMALL_PANOPTIC])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and not any("Traceback" in line for line in err), err
    assert not (tmp_path / "run").exists()
