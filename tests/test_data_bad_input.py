"""Every kind of bad input gives a one-line DataError naming the file; skip_bad_samples replaces and counts."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskformer.data import DATASETS
from maskformer.data.io import read_image, read_label
from maskformer.errors import DataError


def _write_rgb(path: Path, h: int = 12, w: int = 16, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)


def _write_label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _camvid_tree(root: Path, n: int = 4) -> None:
    """A tiny CamVid tree: n good samples listed in train.txt."""
    lines = []
    for i in range(n):
        _write_rgb(root / "train" / f"{i}.png", seed=i)
        _write_label(root / "trainannot" / f"{i}.png", np.full((12, 16), i % 11, dtype=np.uint8))
        lines.append(f"train/{i}.png trainannot/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")


def _expect_error(root: Path, index: int, bad_file: Path, words: str) -> None:
    ds = DATASETS["camvid"](root=str(root), split="train")
    with pytest.raises(DataError) as e:
        ds[index]
    msg = str(e.value)
    assert "\n" not in msg
    assert str(bad_file) in msg, msg
    assert words in msg, msg


def test_corrupt_image(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    bad = tmp_path / "train" / "1.png"
    bad.write_bytes(b"this is not a png")
    _expect_error(tmp_path, 1, bad, "corrupt")


def test_truncated_image(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    bad = tmp_path / "train" / "2.png"
    _write_rgb(bad, 64, 64)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path, 2, bad, "corrupt")


def test_label_size_differs_from_image(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    bad = tmp_path / "trainannot" / "0.png"
    _write_label(bad, np.zeros((10, 16), dtype=np.uint8))
    _expect_error(tmp_path, 0, bad, "differs")


def test_label_value_out_of_range(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    bad = tmp_path / "trainannot" / "3.png"
    arr = np.zeros((12, 16), dtype=np.uint8)
    arr[5, 5] = 12  # CamVid: 0..10 classes, 11 ignore
    _write_label(bad, arr)
    _expect_error(tmp_path, 3, bad, "label value 12")
    arr[5, 5] = 11  # the ignore value is fine
    _write_label(bad, arr)
    assert DATASETS["camvid"](root=str(tmp_path), split="train")[3]["labels"].tolist() == [0]


def test_missing_file_listed_in_index(tmp_path: Path) -> None:
    """Named when the dataset is built (before, only when sample 4 was read), image and label counted."""
    _camvid_tree(tmp_path)
    (tmp_path / "train.txt").write_text((tmp_path / "train.txt").read_text() + "train/9.png trainannot/9.png\n")
    with pytest.raises(DataError) as e:
        DATASETS["camvid"](root=str(tmp_path), split="train")
    assert str(e.value) == f"{tmp_path / 'train' / '9.png'}: file not found (and 1 more listed files)"
    assert len(DATASETS["camvid"](root=str(tmp_path), split="train", skip_bad_samples=True)) == 5


def test_16bit_label_where_8bit_expected(tmp_path: Path) -> None:
    """A 16-bit label PNG (what saving a numpy uint16 array gives) is read losslessly; its values are checked like
    any label's, and a value beyond 8 bits is one line naming the file."""
    _camvid_tree(tmp_path)
    label = tmp_path / "trainannot" / "1.png"
    arr = np.full((12, 16), 3, dtype=np.uint16)
    arr[0, :4] = 11  # CamVid's ignore value
    _write_label(label, arr)
    assert Image.open(label).mode.startswith("I;16")
    record = DATASETS["camvid"](root=str(tmp_path), split="train")[1]
    assert record["labels"].tolist() == [3]
    assert record["sem_seg"].tolist() == arr.tolist()
    arr[5, 5] = 12  # no CamVid class
    _write_label(label, arr)
    _expect_error(tmp_path, 1, label, "label value 12")
    arr[5, 5] = 300  # beyond 8 bits: cannot be a CamVid label (and is not wrapped to 300 % 256 = 44)
    _write_label(label, arr)
    _expect_error(tmp_path, 1, label, "16-bit label file with value 300")


def test_colour_label_file(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    bad = tmp_path / "trainannot" / "2.png"
    _write_rgb(bad)
    _expect_error(tmp_path, 2, bad, "colour label")


def test_grayscale_rgba_and_16bit_images_become_rgb(tmp_path: Path) -> None:
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 16, 3) and (out == gray[..., None]).all()
    rgba = np.random.default_rng(0).integers(0, 256, (12, 16, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    g16 = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and (out[..., 0] == (g16 >> 8)).all()
    # palette images are converted through their palette
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (4, 4, 3)


def test_grayscale_image_in_a_dataset_reads(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    Image.fromarray(np.zeros((12, 16), dtype=np.uint8)).save(tmp_path / "train" / "0.png")
    rec = DATASETS["camvid"](root=str(tmp_path), split="train")[0]
    assert tuple(rec["image"].shape) == (3, 12, 16)


def test_read_label_16bit_and_palette(tmp_path: Path) -> None:
    arr = np.array([[0, 846, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "l.tif")
    out = read_label(tmp_path / "l.tif", bits=16)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 846, 65535]]
    p = Image.fromarray(np.array([[3, 65]], dtype=np.uint8), mode="L").convert("P")
    p.putpalette([i % 256 for i in range(768)])
    p.save(tmp_path / "p.png")
    assert read_label(tmp_path / "p.png").tolist() == [[3, 65]]


def _coco_tree(root: Path, png_ids: list[int], json_ids: list[int]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    _write_rgb(root / "images" / "1.jpg")
    ids = np.zeros((12, 16), dtype=np.int64)
    for k, i in enumerate(png_ids):
        ids[:, k * 4 : k * 4 + 4] = i
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "panoptic" / "1.png")
    seg = [{"id": i, "category_id": 1, "iscrowd": 0, "area": 48} for i in json_ids]
    data = {
        "images": [{"id": 1, "file_name": "1.jpg"}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": seg}],
    }
    (root / "pan.json").write_text(json.dumps(data))


@pytest.mark.parametrize("png_ids, json_ids, words", [([5, 70000], [5], "70000"), ([5], [5, 9], "[9]")])
def test_panoptic_png_ids_must_match_json(tmp_path: Path, png_ids: list, json_ids: list, words: str) -> None:
    _coco_tree(tmp_path, png_ids, json_ids)
    ds = DATASETS["coco_panoptic"](
        root=str(tmp_path), split="val", json_file="pan.json", image_dir="images", panoptic_dir="panoptic"
    )
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(tmp_path / "panoptic" / "1.png") in str(e.value) and words in str(e.value)


def test_panoptic_unknown_category_names_the_json(tmp_path: Path) -> None:
    _coco_tree(tmp_path, [5], [5])
    data = json.loads((tmp_path / "pan.json").read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 12  # not a COCO panoptic category
    (tmp_path / "pan.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="unknown category_id 12") as e:
        DATASETS["coco_panoptic"](
            root=str(tmp_path), split="val", json_file="pan.json", image_dir="images", panoptic_dir="panoptic"
        )
    assert str(tmp_path / "pan.json") in str(e.value)


@pytest.mark.parametrize(("key", "value"), [("category_id", "1"), ("category_id", 1.5), ("id", "5")])
def test_panoptic_ids_that_are_not_integers_name_the_json(tmp_path: Path, key: str, value: object) -> None:
    """A string or fractional id is refused in one line, not read as another id (int("1") == int(1.5) == 1)."""
    _coco_tree(tmp_path, [5], [5])
    data = json.loads((tmp_path / "pan.json").read_text())
    data["annotations"][0]["segments_info"][0][key] = value
    (tmp_path / "pan.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"{value!r} is not an integer") as e:
        DATASETS["coco_panoptic"](
            root=str(tmp_path), split="val", json_file="pan.json", image_dir="images", panoptic_dir="panoptic"
        )
    assert str(tmp_path / "pan.json") in str(e.value)


def test_panoptic_segment_listed_twice_names_the_json(tmp_path: Path) -> None:
    """eval scored every image, then stopped with a traceback from the evaluator ("duplicated segment ids")."""
    _coco_tree(tmp_path, [5], [5, 5])
    with pytest.raises(DataError, match="image 1: segment id 5 is listed twice") as e:
        DATASETS["coco_panoptic"](
            root=str(tmp_path), split="val", json_file="pan.json", image_dir="images", panoptic_dir="panoptic"
        )
    assert str(tmp_path / "pan.json") in str(e.value)


def test_skip_bad_samples_replaces_deterministically_and_counts(tmp_path: Path) -> None:
    _camvid_tree(tmp_path, n=5)
    (tmp_path / "train" / "1.png").write_bytes(b"junk")
    (tmp_path / "train" / "2.png").write_bytes(b"junk")
    ds = DATASETS["camvid"](root=str(tmp_path), split="train", skip_bad_samples=True)
    rec = ds[1]
    assert rec["index"] == 3  # 1 and 2 are bad: the next good index
    assert [f for f, _ in rec["skipped"]] == [str(tmp_path / "train" / "1.png"), str(tmp_path / "train" / "2.png")]
    assert ds.num_bad_samples == 2 and all("corrupt" in reason for _, reason in ds.bad_samples)
    assert ds[1]["index"] == 3 and ds[0]["index"] == 0
    assert len(ds.check_all()) == 2
    with pytest.raises(DataError):
        DATASETS["camvid"](root=str(tmp_path), split="train")[1]


def test_every_sample_bad_with_skipping_says_so(tmp_path: Path) -> None:
    """data.skip_bad_samples with nothing readable left: one line saying no sample of the split is readable."""
    _camvid_tree(tmp_path, n=2)
    for i in range(2):
        (tmp_path / "train" / f"{i}.png").write_bytes(b"not a png")
    ds = DATASETS["camvid"](root=str(tmp_path), split="train", skip_bad_samples=True)
    with pytest.raises(DataError, match="no readable sample among all 2") as e:
        ds[0]
    assert "\n" not in str(e.value) and "0.png" in str(e.value)


def _folder_tree(root: Path, ids: list[int]) -> None:
    """A folder dataset with two samples in images/train + labels/train and classes.json with these ids."""
    for i in range(2):
        _write_rgb(root / "images" / "train" / f"{i}.png", seed=i)
        _write_label(root / "labels" / "train" / f"{i}.png", np.full((12, 16), ids[0], dtype=np.uint8))
    classes = [{"name": f"c{j}", "id": d} for j, d in enumerate(ids)]
    (root / "classes.json").write_text(json.dumps({"classes": classes}))


@pytest.mark.parametrize("bad_id", [70000, -3])
def test_a_class_id_no_label_png_can_hold_names_classes_json(tmp_path: Path, bad_id: int) -> None:
    _folder_tree(tmp_path, [0, bad_id])
    with pytest.raises(DataError, match=rf"classes.json: classes\[1\] has id {bad_id}, outside 0..65535"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_folder_pairing_refuses_two_images_of_one_name_and_a_label_without_image(tmp_path: Path) -> None:
    """Both went unsaid: a.jpg and a.png were two samples with one label, and a label whose image was missing was
    left out of training."""
    _folder_tree(tmp_path, [0, 1])
    assert len(DATASETS["folder"](root=str(tmp_path), split="train")) == 2
    _write_label(tmp_path / "labels" / "train" / "2.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"labels/train/2.png: no image of that name in .*images/train"):
        DATASETS["folder"](root=str(tmp_path), split="train")
    _write_rgb(tmp_path / "images" / "train" / "2.png")
    _write_rgb(tmp_path / "images" / "train" / "2.jpg")
    with pytest.raises(DataError, match=r"2.jpg and .*2.png: two images named '2'"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_an_unknown_dataset_name_lists_every_dataset(tmp_path: Path) -> None:
    import maskformer
    from conftest import CONFIGS
    from maskformer.build import build_meta

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["data.dataset=foldr"])
    with pytest.raises(
        maskformer.ConfigError, match=r"unknown 'foldr' \(did you mean folder\? expected one of .*'folder'"
    ):
        build_meta(cfg)


def test_an_unknown_dataset_name_is_refused_by_info_and_convert_too(tmp_path: Path, capsys) -> None:
    """`ade20k-150` (the zoo folder's spelling) passed `info` and `convert detectron2`, whose checkpoint then named
    its classes "class 0", "class 1", ...; train and eval refused it."""
    from conftest import CONFIGS
    from maskformer.cli import main

    config, typo = str(CONFIGS / "demo.yaml"), "data.dataset=synthetic-x"
    (tmp_path / "m.pkl").write_bytes(b"never read")
    assert main(["info", config, "--set", typo, "--no-flops"]) == 2
    assert main(["convert", "detectron2", str(tmp_path / "m.pkl"), str(tmp_path / "m.pt"), "--config", config,
                 "--set", typo]) == 2  # fmt: skip
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 2 and all("unknown 'synthetic-x' (did you mean synthetic?" in line for line in said), said
    assert not (tmp_path / "m.pt").exists()


def test_a_missing_label_says_which_file_of_that_name_there_is(tmp_path: Path) -> None:
    """labels/train/1.PNG (or 1.jpg) gave only "labels/train/1.png: file not found"."""
    _folder_tree(tmp_path, [0, 1])
    label = tmp_path / "labels" / "train" / "1.png"
    label.rename(label.with_suffix(".jpg"))  # (1.PNG pairs now)
    with pytest.raises(DataError, match=r"train/1.png: file not found; there is 1.jpg \(label maps are lossless"):
        DATASETS["folder"](root=str(tmp_path), split="train")


@pytest.mark.parametrize("which", ["images", "labels"])
def test_a_named_pipe_in_a_folder_dataset_is_named(tmp_path: Path, which: str) -> None:
    """A FIFO among the images was left out of the listing, so its label said "no image of that name"; a FIFO label
    said "file not found"."""
    import os

    _folder_tree(tmp_path, [0, 1])
    fifo = next((tmp_path / which / "train").glob("1.*"))
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=rf"{fifo}: not a regular file \(a named pipe"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_a_jpeg_label_map_is_said_to_be_lossy() -> None:
    from maskformer.data.io import check_label_values

    label = np.array([[0, 1], [7, 1]], np.uint8)  # 7: a value JPEG blurred in between two classes
    with pytest.raises(DataError, match=r"x.jpg: label value 7 .*a JPEG label map: its compression changes values"):
        check_label_values(label, num_classes=2, ignore_label=255, path="x.jpg")
    with pytest.raises(DataError) as plain:
        check_label_values(label, num_classes=2, ignore_label=255, path="x.png")
    assert "JPEG" not in str(plain.value)


def test_missing_files_listed_twice_count_once_and_a_folder_is_called_a_folder(tmp_path: Path) -> None:
    """A list naming one missing pair 1001 times said "(and 2001 more listed files)"; a label path that is a folder
    said "file not found; there is <the folder itself>"."""
    _camvid_tree(tmp_path)
    (tmp_path / "train.txt").write_text((tmp_path / "train.txt").read_text() + "train/9.png trainannot/9.png\n" * 50)
    with pytest.raises(DataError) as e:
        DATASETS["camvid"](root=str(tmp_path), split="train")
    assert str(e.value) == f"{tmp_path / 'train' / '9.png'}: file not found (and 1 more listed files)"
    _camvid_tree(tmp_path)
    label = tmp_path / "trainannot" / "2.png"
    label.unlink()
    label.mkdir()
    with pytest.raises(DataError) as e:
        DATASETS["camvid"](root=str(tmp_path), split="train")
    assert str(e.value) == f"{label}: is a folder, not a label file"


def test_jpeg_data_under_a_png_name_gets_the_jpeg_hint(tmp_path: Path) -> None:
    from maskformer.data.io import check_label_values

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="JPEG")
    with pytest.raises(DataError, match="a JPEG label map"):
        check_label_values(np.array([[0, 7]], np.uint8), num_classes=2, ignore_label=255, path=path)


@pytest.mark.parametrize(
    "table, message",
    [
        # a bool is an int to Python, and as an index into the label tables it selected every value: all labels
        # silently became class 2 / were all ignored
        ({"classes": [{"name": "bg", "id": 0}, {"name": "road", "id": True}, {"name": "car", "id": 2}]},
         r"classes\[1\] has a missing, non-integer or repeated id True"),
        ({"ignore_label": True, "classes": [{"name": "a", "id": 5}, {"name": "b", "id": 6}]},
         "ignore_label True must be"),
        ({"classes": [{"name": ""}]}, r"classes\[0\] needs a non-empty 'name' string"),
        ({"classes": [f"c{i}" for i in range(300)]}, r"ignore_label 255 \(the default\) .* \(e.g. 65535"),
    ],
)  # fmt: skip
def test_class_tables_with_booleans_empty_names_or_a_clashing_default_are_named(tmp_path, table, message) -> None:
    _folder_tree(tmp_path, [0, 1])
    (tmp_path / "classes.json").write_text(json.dumps(table))
    with pytest.raises(DataError, match=message):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_a_yaml_boolean_where_a_class_name_goes_says_to_quote_it(tmp_path: Path) -> None:
    _folder_tree(tmp_path, [0, 1])
    (tmp_path / "classes.json").unlink()
    (tmp_path / "classes.yaml").write_text("classes:\n  - name: no\n  - name: road\n")
    with pytest.raises(DataError, match=r"classes\[0\] .* got False \(YAML reads .* quote the name\)"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_folder_pairs_read_subfolders_and_leave_hidden_files_out(tmp_path: Path) -> None:
    """Pairs in subfolders (images/train/city/x.jpg + labels/train/city/x.png, as Cityscapes keeps them) were left
    out without a word, and macOS's ``._x.png`` resource forks were read as images whose label was missing."""
    _folder_tree(tmp_path, [0, 1])
    _write_rgb(tmp_path / "images" / "train" / "city" / "2.png", seed=2)
    _write_label(tmp_path / "labels" / "train" / "city" / "2.png", np.ones((12, 16), dtype=np.uint8))
    _write_rgb(tmp_path / "images" / "train" / "other" / "2.png", seed=3)  # the same stem in another folder
    _write_label(tmp_path / "labels" / "train" / "other" / "2.png", np.zeros((12, 16), dtype=np.uint8))
    (tmp_path / "images" / "train" / "._0.png").write_bytes(b"\0\5\26\7 resource fork")
    (tmp_path / "images" / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    dataset = DATASETS["folder"](root=str(tmp_path), split="train")
    names = [Path(e["file_name"]).relative_to(tmp_path / "images" / "train").as_posix() for e in dataset.entries]
    assert names == ["0.png", "1.png", "city/2.png", "other/2.png"]
    assert dataset.check_all() == []
    city = dataset.load(dataset.entries[2])["sem_seg"]
    assert set(np.unique(np.asarray(city)).tolist()) == {1}  # its own label, from labels/train/city/
    _write_label(tmp_path / "labels" / "train" / "lost" / "9.png", np.zeros((12, 16), dtype=np.uint8))
    with pytest.raises(DataError, match=r"lost/9.png: no image of that name"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_pair_lists_take_file_names_with_spaces_when_a_tab_separates_them(tmp_path: Path) -> None:
    _folder_tree(tmp_path, [0, 1])
    _write_rgb(tmp_path / "images" / "my photo.png", seed=4)
    _write_label(tmp_path / "labels" / "my photo.png", np.ones((12, 16), dtype=np.uint8))
    lines = "images/train/0.png labels/train/0.png\nimages/my photo.png\tlabels/my photo.png\n"
    (tmp_path / "train.txt").write_text(lines)
    dataset = DATASETS["folder"](root=str(tmp_path), split="train")
    assert [Path(e["file_name"]).name for e in dataset.entries] == ["0.png", "my photo.png"]
    assert dataset.check_all() == []
    (tmp_path / "train.txt").write_text("images/my photo.png labels/my photo.png\n")
    with pytest.raises(DataError, match="train.txt:1: expected 'image label'.*put one tab between the two paths"):
        DATASETS["folder"](root=str(tmp_path), split="train")


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [5, 9, 20, 33]])
def test_a_palette_label_drawn_in_other_classes_colours_is_refused_and_one_in_class_order_is_read(tmp_path, ids):
    """An image editor's indexed-colour PNG orders its palette by itself: index 0 held class 2's colour, so class 2
    was trained as class 0 without a word. Palettes in classes.json's order (VOC-style) and unrelated palettes read
    their indices as before."""
    colors = [[128, 0, 0], [0, 128, 0], [0, 0, 128], [128, 128, 0]]
    classes = [{"name": f"c{j}", "id": d, "color": c} for j, (d, c) in enumerate(zip(ids, colors))]
    (tmp_path / "classes.json").write_text(json.dumps({"ignore_label": 255, "classes": classes}))
    values = np.array(ids, dtype=np.uint8)[np.arange(12 * 16).reshape(12, 16) % 4]
    for i, order in enumerate(([2, 0, 3, 1], None, "grey")):
        _write_rgb(tmp_path / "images" / "train" / f"{i}.png", seed=i)
        label = tmp_path / "labels" / "train" / f"{i}.png"
        palette = np.zeros((256, 3), dtype=np.uint8)
        if order == "grey":
            palette[:] = np.arange(256)[:, None]
            stored = values
        elif order is None:  # index = label value, coloured as classes.json says
            palette[ids] = colors
            stored = values
        else:  # what quantizing an RGB rendering gives: palette position k holds class order[k]'s colour
            palette[: len(order)] = [colors[c] for c in order]
            stored = np.argsort(order).astype(np.uint8)[np.searchsorted(ids, values)]
        png = Image.fromarray(stored, mode="P")
        png.putpalette(palette.ravel().tolist())
        label.parent.mkdir(parents=True, exist_ok=True)
        png.save(label)
    ds = DATASETS["folder"](root=str(tmp_path), split="train")
    with pytest.raises(DataError, match=r"0\.png: palette label file whose index 0 is drawn in the colour of class"):
        ds[0]
    for i in (1, 2):
        sample = ds[i]
        assert sorted(np.unique(sample["sem_seg"]).tolist()) == [0, 1, 2, 3]  # contiguous ids


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"label_divisor": "abc"}, "'label_divisor' is not used by folder datasets"),
        ({"label_id_to_train_id": {"a": 1}}, "'label_id_to_train_id' is not used by folder datasets"),
        ({"label_id_to_train_id": {"7": 1}}, "'label_id_to_train_id' is not used by folder datasets"),
    ],
)
def test_keys_of_the_shipped_tables_in_a_folders_classes_json_are_named(tmp_path: Path, extra, words) -> None:
    """A wrong-typed label_divisor was a traceback, and a well-formed label_id_to_train_id was silently not applied."""
    _folder_tree(tmp_path, [0, 1])
    data = json.loads((tmp_path / "classes.json").read_text())
    (tmp_path / "classes.json").write_text(json.dumps({**data, **extra}))
    with pytest.raises(DataError, match=rf"classes.json: {words}"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_a_wrong_typed_table_in_a_checkpoints_meta_is_one_data_error() -> None:
    from maskformer.data.metadata import meta_from_dict

    for extra in ({"label_divisor": "abc"}, {"label_divisor": 0}, {"label_id_to_train_id": {"a": 1}}):
        with pytest.raises(DataError, match="meta.json: label_"):
            meta_from_dict({"classes": ["a", "b"], **extra}, name="x", where="meta.json")


def test_folder_pairs_in_a_linked_subfolder_are_read_once(tmp_path: Path) -> None:
    """images/train/cityA -> elsewhere (a symbolic link, as predict --recursive follows): its samples were left out
    without a word; a link back up is read once, not forever."""
    _folder_tree(tmp_path / "data", [0, 1])
    elsewhere = tmp_path / "ext"
    _write_rgb(elsewhere / "img" / "5.png", seed=5)
    _write_label(elsewhere / "lab" / "5.png", np.ones((12, 16), dtype=np.uint8))
    (tmp_path / "data" / "images" / "train" / "cityA").symlink_to(elsewhere / "img")
    (tmp_path / "data" / "labels" / "train" / "cityA").symlink_to(elsewhere / "lab")
    (tmp_path / "data" / "images" / "train" / "loop").symlink_to(tmp_path / "data" / "images" / "train")
    dataset = DATASETS["folder"](root=str(tmp_path / "data"), split="train")
    names = [
        Path(e["file_name"]).relative_to(tmp_path / "data" / "images" / "train").as_posix() for e in dataset.entries
    ]
    assert names == ["0.png", "1.png", "cityA/5.png"]
    assert set(np.unique(dataset.load(dataset.entries[2])["sem_seg"]).tolist()) == {1}


def test_a_label_saved_as_upper_case_png_pairs_and_an_unread_image_type_is_named(tmp_path: Path) -> None:
    """labels/train/1.PNG was "file not found; there is 1.PNG (label maps are lossless .png files)", and a label
    whose image was a .gif was "no image of that name"."""
    _folder_tree(tmp_path, [0, 1])
    labels = tmp_path / "labels" / "train"
    (labels / "1.png").rename(labels / "1.PNG")
    dataset = DATASETS["folder"](root=str(tmp_path), split="train")
    assert dataset.check_all() == [] and Path(dataset.entries[1]["sem_seg_file_name"]).name == "1.PNG"
    image = tmp_path / "images" / "train" / "0.png"
    Image.open(image).save(image.with_suffix(".gif"))
    image.unlink()
    with pytest.raises(DataError, match=r"0.png: no image of that name in .*; there is 0.gif, a file type not read"):
        DATASETS["folder"](root=str(tmp_path), split="train")


def test_an_unreadable_header_is_named_when_the_batches_are_grouped(tmp_path: Path) -> None:
    """With aspect-ratio grouping an image whose header Pillow cannot read counted as a portrait: among landscapes it
    waited in that group, unsaid, until enough portraits came (a short run ended with exit 0 without naming it)."""
    _camvid_tree(tmp_path)
    bad = tmp_path / "train" / "1.png"
    bad.write_bytes(b"this is not a png")
    ds = DATASETS["camvid"](root=str(tmp_path), split="train")
    assert ds.aspect_group(0) == 0  # (16 x 12: landscape)
    with pytest.raises(DataError) as e:
        ds.aspect_group(1)
    assert str(e.value).startswith(f"{bad}: unreadable or corrupt image") and "\n" not in str(e.value)
    assert DATASETS["camvid"](root=str(tmp_path), split="train", skip_bad_samples=True).aspect_group(1) == 1


def test_a_landscape_photo_turned_upright_by_its_exif_is_grouped_as_a_portrait(tmp_path: Path) -> None:
    """Batches are grouped by the shape the image is read in (upright), not by its stored width and height."""
    _camvid_tree(tmp_path)
    photo = tmp_path / "train" / "1.png"
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.open(photo).save(photo, exif=exif.tobytes())  # (16 x 12 stored, 12 x 16 as read)
    ds = DATASETS["camvid"](root=str(tmp_path), split="train")
    assert read_image(photo).shape[:2] == (16, 12) and ds.aspect_group(1) == 1 and ds.aspect_group(0) == 0


def test_a_jpeg_label_whose_values_are_all_class_ids_is_refused_too(tmp_path: Path) -> None:
    """A JPEG label map (named in a train.txt list, or JPEG data named .png) whose blurred values all stayed class ids
    was read, and trained on classes the file was never drawn with; only an out-of-range value got the JPEG hint."""
    label = np.full((64, 96), 5, np.uint8)
    label[10:37, 13:51] = 9
    for name in ("a.jpg", "b.png"):
        Image.fromarray(label).save(tmp_path / name, format="JPEG", quality=75)
        assert set(np.unique(np.asarray(Image.open(tmp_path / name)))) > {5, 9}  # (values in between: wrong classes)
        with pytest.raises(DataError, match=f"{name}: a JPEG label map: its compression changes the class ids"):
            read_label(tmp_path / name)


def test_a_label_with_an_alpha_channel_is_not_called_colour(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 2), np.uint8), mode="LA").save(tmp_path / "la.png")
    with pytest.raises(DataError, match=r"la.png: label file with an alpha channel \(mode LA\).*without transparency"):
        read_label(tmp_path / "la.png")


def test_label_maps_and_panoptic_pngs_are_turned_by_their_exif_orientation_as_images_are(tmp_path: Path) -> None:
    """An image and its label map saved with the same EXIF orientation (a phone photo and the map drawn over it in a
    viewer): the image was turned upright and the label read as stored, so they disagreed on half the pixels with no
    error (detectron2's read_image turns both)."""
    from PIL import ImageOps

    from maskformer.data.io import read_panoptic_png

    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, :32] = 1
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(stripes * 255).convert("RGB").save(tmp_path / "e.jpg", exif=exif.tobytes())
    Image.fromarray(stripes).save(tmp_path / "e.png", exif=exif.tobytes())
    Image.fromarray(np.stack([stripes, stripes * 0, stripes * 0], -1)).save(tmp_path / "p.png", exif=exif.tobytes())
    image = read_image(tmp_path / "e.jpg")[..., 0] > 128
    label = read_label(tmp_path / "e.png")
    assert (image == (label == 1)).all()
    assert (read_panoptic_png(tmp_path / "p.png") == label).all()
    viewer = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "e.png")))
    assert (label == viewer).all() and not (label == stripes).all()


def _own_categories(root: Path, count: int) -> None:
    """The JSON of ``_coco_tree`` with ``count`` categories of its own (ids 1000..), segment 5 of the last one, and a
    second image listed without an annotation."""
    data = json.loads((root / "pan.json").read_text())
    data["categories"] = [{"id": 1000 + i, "name": f"c{i}", "isthing": i % 2} for i in range(count)]
    data["annotations"][0]["segments_info"][0]["category_id"] = 1000 + count - 1
    data["images"].append({"id": 2, "file_name": "2.jpg"})
    (root / "pan.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("count", "ignore"), [(255, 255), (256, 65535), (300, 65535)])
def test_panoptic_json_with_255_or_more_categories_marks_no_segment_outside_the_classes(tmp_path, count, ignore):
    """With 255 or more categories the class table kept COCO's ignore value 255, a class's position from 255 on:
    training such data stopped at "ignore_label must be an integer outside 0..299", which no key could change."""
    from maskformer.data.panoptic import panoptic_json_meta

    _coco_tree(tmp_path, [0, 5], [5])
    _own_categories(tmp_path, count)
    meta = panoptic_json_meta(tmp_path / "pan.json")
    assert meta.num_classes == count and meta.ignore_label == ignore
    ds = DATASETS["coco_panoptic"](root=str(tmp_path), split="val", json_file="pan.json", image_dir="images",
                                   panoptic_dir="panoptic", meta=meta)  # fmt: skip
    sem = np.asarray(ds[0]["sem_seg"])
    assert set(np.unique(sem).tolist()) == {count - 1, ignore}  # (segment 5: the last class; id 0: no segment)


def test_images_a_panoptic_json_lists_without_annotation_are_said_once(tmp_path: Path, capsys) -> None:
    """An image listed under 'images' with no annotation was left out of training and evaluation, unsaid (as the
    original and panopticapi leave it out)."""
    from conftest import CONFIGS
    from maskformer.build import build_dataset
    from maskformer.config import load_config

    _coco_tree(tmp_path, [5], [5])
    _own_categories(tmp_path, 3)
    sets = ["data.dataset=coco_panoptic", "data.panoptic_json=pan.json", "data.panoptic_images=images",
            "data.panoptic_masks=panoptic", f"data.root={tmp_path}", "model.num_classes=3"]  # fmt: skip
    cfg = load_config(str(CONFIGS / "folder" / "small_panoptic.yaml"), sets)
    for _ in range(2):
        assert len(build_dataset(cfg, split="val", train=False)) == 1
    err = capsys.readouterr().err
    assert err.count("note:") == 1, err
    assert f"{tmp_path / 'pan.json'}: 1 image(s) listed under 'images' have no annotation and are left out of the " \
           "val split (2.jpg)" in err  # fmt: skip


def test_a_data_root_that_is_the_class_file_and_a_missing_split_say_what_to_give(tmp_path: Path) -> None:
    (tmp_path / "classes.json").write_text('{"classes": ["a", "b"]}')
    with pytest.raises(DataError) as e:
        DATASETS["folder"](root=str(tmp_path / "classes.json"), split="train")
    assert str(e.value) == f"{tmp_path / 'classes.json'}: a file; the data root is the folder holding classes.json, " \
                           "images/ and labels/"  # fmt: skip
    with pytest.raises(DataError, match=r"train with --set data.train_split=all .*, evaluate with --split all\)"):
        DATASETS["folder"](root=str(tmp_path), split="nosuch")


def test_a_label_turned_by_its_own_exif_tag_says_so_when_its_size_then_differs(tmp_path: Path) -> None:
    _camvid_tree(tmp_path)
    label = tmp_path / "trainannot" / "1.png"
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.open(label).save(label, exif=exif.tobytes())  # (stored as its image is; read turned)
    _expect_error(tmp_path, 1, label, "the label file's own EXIF orientation 6 turns it when read")
