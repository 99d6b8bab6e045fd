"""Class tables: sizes, ignore labels and id maps against independent sources (shared files, published tables)."""

import json
import re
from pathlib import Path

import pytest

from maskformer.data import load_meta
from maskformer.data.metadata import META_NAMES, meta_from_dict
from maskformer.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")


@pytest.mark.parametrize(
    "name, k, ignore, things",
    [
        ("ade20k_150", 150, 255, 100),
        ("ade20k_panoptic", 150, 255, 100),
        ("ade20k_full_847", 847, 65535, 0),
        ("coco_stuff_10k", 171, 255, 80),
        ("cityscapes", 19, 255, 8),
        ("mapillary_vistas", 65, 65, 37),
        ("camvid", 11, 11, 3),
        ("coco_panoptic", 133, 255, 80),
    ],
)
def test_table_sizes(name: str, k: int, ignore: int, things: int) -> None:
    m = load_meta(name)
    assert m.num_classes == k == len(m.colors) == len(m.isthing)
    assert m.ignore_label == ignore and sum(m.isthing) == things
    assert len(set(m.dataset_id_to_contiguous)) == k and sorted(m.dataset_id_to_contiguous.values()) == list(range(k))
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in m.colors)
    assert {m.contiguous_to_dataset_id[c]: c for c in range(k)} == m.dataset_id_to_contiguous


def test_all_named_tables_load_and_unknown_name_fails() -> None:
    for name in META_NAMES:
        load_meta(name)
    with pytest.raises(DataError, match="unknown dataset"):
        load_meta("imagenet")


@needs_shared
def test_ade20k_names_match_object_info_150() -> None:
    rows = (SHARED / "ade20k_samples" / "objectInfo150.csv").read_text().splitlines()[1:]
    theirs = [r.split(",")[-1].split(";") for r in rows]  # synonyms, words separated by ';'
    m = load_meta("ade20k_150")
    for i, (ours, words) in enumerate(zip(m.classes, theirs)):
        assert set(re.split(r"[ ,]+", ours.strip())) <= set(words), (i, ours, words)
    # a few well-known thing/stuff flags of the ADE20K panoptic split
    for name, thing in [("wall", False), ("sky", False), ("person", True), ("car", True), ("bed", True)]:
        assert m.isthing[m.classes.index(name)] == thing
    assert m.colors[0] == [120, 120, 120] and m.colors[2] == [6, 230, 230]


@needs_shared
def test_coco_panoptic_matches_panopticapi_categories() -> None:
    cats = json.loads((SHARED / "coco_panoptic_samples" / "panoptic_coco_categories.json").read_text())
    m = load_meta("coco_panoptic")
    things = [c for c in cats if c["isthing"]]
    stuff = [c for c in cats if not c["isthing"]]
    order = sorted(things, key=lambda c: c["id"]) + sorted(stuff, key=lambda c: c["id"])
    assert m.classes == [c["name"] for c in order]
    assert m.colors == [c["color"] for c in order]
    assert m.isthing == [bool(c["isthing"]) for c in order]
    assert m.dataset_id_to_contiguous == {c["id"]: i for i, c in enumerate(order)}


@needs_shared
def test_camvid_matches_shared_classes_json() -> None:
    data = json.loads((SHARED / "camvid" / "classes.json").read_text())
    m = load_meta("camvid")
    assert m.classes == [c["name"] for c in data["classes"]] and m.colors == [c["color"] for c in data["classes"]]
    assert m.ignore_label == data["ignore_label"]


def test_coco_stuff_ids_are_the_cocostuff_label_ids() -> None:
    m = load_meta("coco_stuff_10k")
    # COCO-Stuff: ids 1..182 minus the 11 unused thing ids (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
    unused = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}
    assert sorted(m.dataset_id_to_contiguous) == [i for i in range(1, 183) if i not in unused]
    assert m.classes[:3] == ["person", "bicycle", "car"] and m.classes[-1] == "wood"
    assert (
        m.classes[m.dataset_id_to_contiguous[149]] == "road"
        and m.classes[m.dataset_id_to_contiguous[157]] == "sky-other"
    )


def test_cityscapes_train_ids() -> None:
    m = load_meta("cityscapes")
    # cityscapesScripts labels.py, trainId order
    assert m.classes == [
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
    ]  # fmt: skip
    t = m.label_id_to_train_id
    assert [t[i] for i in (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)] == list(range(19))
    assert all(t[i] == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30))
    assert m.colors[0] == [128, 64, 128] and m.colors[10] == [70, 130, 180]


def test_mapillary_and_ade_full_spot_values() -> None:
    m = load_meta("mapillary_vistas")
    assert m.classes[0] == "Bird" and m.classes[13] == "Road" and m.classes[64] == "Ego Vehicle"
    assert m.colors[13] == [128, 64, 128] and m.colors[27] == [70, 130, 180]  # road, sky
    f = load_meta("ade20k_full_847")
    assert f.classes[0] == "wall" and f.classes[846] == "adding machine, totalizer, totaliser"
    assert f.contiguous_to_dataset_id[0] == 2978 and f.contiguous_to_dataset_id[846] == 3148
    assert len(set(f.classes)) > 840  # a few ADE names repeat with different ids (e.g. "pier")


def test_meta_from_dict_validation() -> None:
    m = meta_from_dict({"classes": ["a", "b"], "ignore_label": 255}, name="x", where="f")
    assert m.classes == ["a", "b"] and m.isthing == [False, False] and m.colors[0] != m.colors[1]
    with pytest.raises(DataError, match="ignore_label"):
        meta_from_dict({"classes": ["a", "b"], "ignore_label": 1}, name="x", where="f")
    with pytest.raises(DataError, match="colour"):
        meta_from_dict({"classes": [{"name": "a", "color": [1, 2]}]}, name="x", where="f")
    with pytest.raises(DataError, match="repeated id"):
        meta_from_dict({"classes": [{"name": "a", "id": 3}, {"name": "b", "id": 3}]}, name="x", where="f")


def test_build_meta_folder_and_synthetic(tmp_path: Path) -> None:
    from maskformer import load_config
    from maskformer.build import build_meta

    (tmp_path / "classes.json").write_text(json.dumps({"ignore_label": 9, "classes": [{"name": "a"}, {"name": "b"}]}))
    m = build_meta(load_config(None, overrides=["data.dataset=folder", f"data.root={tmp_path}"]))
    assert m.classes == ["a", "b"] and m.ignore_label == 9 and m.name == "folder"
    s = build_meta(load_config(None, overrides=["data.dataset=synthetic", "data.synthetic_num_classes=6"]))
    assert s.num_classes == 6 and s.isthing == [False] * 3 + [True] * 3


def test_checkpoint_meta_reads_every_layout_written_so_far() -> None:
    from maskformer.data.metadata import meta_from_checkpoint
    from maskformer.errors import CheckpointError

    table = load_meta("coco_panoptic")
    # the schema (what train and convert write now)
    m = meta_from_checkpoint(table.to_dict(), num_classes=133, dataset="x", where="ck.pt")
    assert m.classes == table.classes and m.isthing == table.isthing and m.colors == table.colors
    assert m.contiguous_to_dataset_id == table.contiguous_to_dataset_id and m.name == "coco_panoptic"
    # `maskformer convert` before the schema: names + separate colour and thing lists
    old = {"classes": table.classes, "colors": table.colors, "isthing": table.isthing, "dataset": "coco_panoptic"}
    m = meta_from_checkpoint(old, num_classes=133, dataset="x", where="ck.pt")
    assert m.classes == table.classes and m.isthing == table.isthing and m.colors == table.colors
    # nothing stored: the shipped table of the config's dataset when it fits, else generic names
    assert meta_from_checkpoint({}, num_classes=133, dataset="coco_panoptic", where="ck.pt").isthing == table.isthing
    assert meta_from_checkpoint(None, num_classes=3, dataset="coco_panoptic", where="ck.pt").classes == [
        "class 0", "class 1", "class 2"]  # fmt: skip
    with pytest.raises(CheckpointError, match=r"ck.pt: its metadata lists 133 classes but the model predicts 5"):
        meta_from_checkpoint(table.to_dict(), num_classes=5, dataset="x", where="ck.pt")
    with pytest.raises(CheckpointError, match="ck.pt"):
        meta_from_checkpoint({"classes": [{"name": "a", "color": [1, 2]}]}, num_classes=1, dataset="x", where="ck.pt")
