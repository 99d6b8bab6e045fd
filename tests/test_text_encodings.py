"""Files users write (config YAML, classes.json/.yaml, split lists, COCO panoptic JSON): UTF-8 with or without a BOM
reads; another encoding is one line naming the file (a UnicodeDecodeError traceback before)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CONFIGS
from maskformer.cli import main
from maskformer.config import load_config
from maskformer.data import DATASETS
from maskformer.errors import ConfigError, DataError

BOM = b"\xef\xbb\xbf"


def _folder(root: Path, classes: bytes, pair_list: bytes | None = None) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "images" / "train" / "a.png")
    Image.fromarray(np.ones((8, 8), dtype=np.uint8)).save(root / "labels" / "train" / "a.png")
    (root / "classes.json").write_bytes(classes)
    if pair_list is not None:
        (root / "train.txt").write_bytes(pair_list)
    return root


def test_classes_json_with_a_bom_and_non_ascii_names_reads(tmp_path: Path) -> None:
    classes = BOM + json.dumps({"classes": ["sol", "caf\u00e9"]}, ensure_ascii=False).encode("utf-8")
    ds = DATASETS["folder"](root=str(_folder(tmp_path, classes)), split="train")
    assert ds.meta.classes == ["sol", "caf\u00e9"] and ds[0]["labels"].tolist() == [1]


def test_latin1_classes_json_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path, '{"classes": ["sol", "caf\u00e9"]}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"classes\.json: not UTF-8 text \(byte 0xe9"):
        DATASETS["folder"](root=str(root), split="train")
    code = main(
        ["train", str(CONFIGS / "folder" / "small.yaml"), "--data-root", str(root), "--output-dir", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "classes.json: not UTF-8" in err and "Traceback" not in err


def test_latin1_split_list_is_one_line_naming_it(tmp_path: Path) -> None:
    root = _folder(
        tmp_path,
        b'{"classes": ["a", "b"]}',
        pair_list="images/train/a.png labels/train/a.png # \u00e9\n".encode("latin-1"),
    )
    with pytest.raises(DataError, match=r"train\.txt: not UTF-8 text"):
        DATASETS["folder"](root=str(root), split="train")
    (root / "train.txt").write_bytes(BOM + b"images/train/a.png labels/train/a.png\n")
    assert len(DATASETS["folder"](root=str(root), split="train")) == 1


def test_latin1_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes("model: {num_queries: 5}  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c\.yaml: not "):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_bytes(BOM + "model: {num_queries: 5}  # caf\u00e9\n".encode("utf-8"))
    assert load_config(tmp_path / "c.yaml").model.num_queries == 5


def test_latin1_panoptic_json_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    text = '{"annotations": [], "info": "caf\u00e9"}'
    (tmp_path / "annotations" / "panoptic_val2017.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=r"panoptic_val2017\.json: not UTF-8 text"):
        DATASETS["coco_panoptic"](root=str(tmp_path), split="val")
