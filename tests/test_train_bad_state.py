"""Training from bad starting weights or a damaged run: one line naming the file, exit 2, nothing left behind (a
QA walk of bad input, 2026-12-07). Before, each of these was a traceback, and the run folder kept a config.yaml that
blocked the next start."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import maskformer
from conftest import CONFIGS
from maskformer.cli import main
from maskformer.engine.checkpoint import save_checkpoint
from maskformer.engine.conversion import convert_to_detectron2

TINY = [
    "train.batch_size=2",
    "train.checkpoint_period=2",
    "train.eval_period=-1",
    "data.num_workers=0",
    "data.synthetic_image_size=64",
    "data.synthetic_train_size=8",
    "data.crop_size=[64,64]",
    "data.min_size_train=[64]",
]


def _train(tmp_path: Path, run: str, *extra: str, resume: bool = False) -> int:
    args = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path / run), "--quiet"]
    return main([*args, *[a for kv in [*TINY, *extra] for a in ("--set", kv)], *(["--resume"] if resume else [])])


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[maskformer]")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run of 2 iterations (checkpoint_last.pt at 2, model_final.pt)."""
    root = tmp_path_factory.mktemp("runs")
    assert _train(root, "base", "train.max_iters=2") == 0
    return root / "base"


def test_starting_weights_that_do_not_fit_are_one_line_and_leave_nothing(tmp_path: Path, capsys) -> None:
    """model.weights of another architecture: a 174-line traceback ("size mismatch for ...") and a config.yaml."""
    other = maskformer.load_config(CONFIGS / "demo.yaml", ["model.num_queries=7"])
    save_checkpoint(tmp_path / "other.pt", cfg=other, model=maskformer.build_model(other))
    assert _train(tmp_path, "new/a/w", "train.max_iters=1", f"model.weights={tmp_path / 'other.pt'}") == 2
    line = _one_line(capsys)
    assert f"model.weights: {tmp_path / 'other.pt'}: " in line and "query_embed" in line, line
    assert not (tmp_path / "new").exists()  # (the folders made above the run's too)
    # NaN weights: named (it said "non-finite predictions at iteration 1 ... lower solver.base_lr")
    cfg = maskformer.load_config(CONFIGS / "demo.yaml")
    model = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "ok.pt", cfg=cfg, model=model)
    obj = torch.load(tmp_path / "ok.pt", weights_only=True)
    next(v for v in obj["model"].values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(obj, tmp_path / "nan.pt")
    assert _train(tmp_path, "n", "train.max_iters=1", f"model.weights={tmp_path / 'nan.pt'}") == 2
    assert "hold NaN or infinite values" in _one_line(capsys)
    # the same in the original's .pkl layout (was not checked: the run trained from NaN and blamed the learning rate)
    convert_to_detectron2(tmp_path / "ok.pt", tmp_path / "ok.pkl")
    with open(tmp_path / "ok.pkl", "rb") as f:
        pkl = pickle.load(f)
    next(v for v in pkl["model"].values() if v.dtype.kind == "f")[...] = np.inf
    with open(tmp_path / "inf.pkl", "wb") as f:
        pickle.dump(pkl, f)
    assert _train(tmp_path, "p", "train.max_iters=1", f"model.weights={tmp_path / 'inf.pkl'}") == 2
    line = _one_line(capsys)
    assert "train: error: model.weights: " in line and "inf.pkl: weights " in line and "infinite" in line, line
    assert not (tmp_path / "p").exists()
    # a folder (a transformers save_pretrained one): it said "not found"
    (tmp_path / "hf").mkdir()
    assert _train(tmp_path, "f", "train.max_iters=1", f"model.weights={tmp_path / 'hf'}") == 2
    assert "is a folder" in _one_line(capsys) and not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("scheduler", "x"),
        ("iteration", "x"),
        ("iteration", -3),
        ("data", "x"),
        ("rng", {}),
        ("rng", None),
        ("optimizer", "x"),
        ("config", "hello"),
        ("meta", [1]),
    ],
)
def test_a_damaged_checkpoint_last_is_one_line_on_resume(finished: Path, tmp_path: Path, capsys, field, value) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run / name).write_bytes((finished / name).read_bytes())
    obj = torch.load(finished / "checkpoint_last.pt", weights_only=True)
    obj[field] = value
    torch.save(obj, run / "checkpoint_last.pt")
    config = (run / "config.yaml").read_bytes()
    assert _train(tmp_path, "r", "train.max_iters=4", resume=True) == 2
    line = _one_line(capsys)
    assert "checkpoint_last.pt" in line and "Traceback" not in line, line
    assert (run / "config.yaml").read_bytes() == config and not (run / "model_final.pt").exists()


def test_damaged_config_or_meta_is_one_line_for_predict(finished: Path, tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(tmp_path / "a.png")
    for key, value in (("config", "hello"), ("config", [1]), ("meta", [1]), ("model", "x")):
        obj = torch.load(finished / "model_final.pt", weights_only=True)
        obj[key] = value
        torch.save(obj, tmp_path / "bad.pt")
        code = main(["predict", str(tmp_path / "bad.pt"), str(tmp_path / "a.png"), "--output-dir", str(tmp_path / "o")])
        assert code == 2
        assert f"its {key!r} is a " in _one_line(capsys)
        assert not (tmp_path / "o").exists()


def test_a_one_pixel_crop_trains(tmp_path: Path, capsys) -> None:
    """A 1x1 crop of a flipped picture: "At least one stride in the given numpy array is negative" in the loader."""
    assert _train(tmp_path, "c", "train.max_iters=1", "data.crop_size=[1,1]", "data.pad_to_crop=false") == 0


def test_panoptic_json_with_a_word_for_iscrowd_is_one_line(tmp_path: Path) -> None:
    from maskformer.data.metadata import DatasetMeta
    from maskformer.data.panoptic import load_panoptic_json
    from maskformer.errors import DataError

    data = {
        "images": [{"id": 7, "file_name": "a.jpg"}],
        "annotations": [
            {"image_id": 7, "file_name": "a.png", "segments_info": [{"id": 1, "category_id": 1, "iscrowd": "yes"}]}
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "thing", "isthing": 1}],
    }
    (tmp_path / "p.json").write_text(json.dumps(data))
    meta = DatasetMeta(name="x", classes=["thing"], colors=[[1, 2, 3]], isthing=[True], dataset_id_to_contiguous={1: 0})
    with pytest.raises(DataError, match=r"p\.json: image 7: malformed annotation \(ValueError"):
        load_panoptic_json(tmp_path / "p.json", tmp_path, tmp_path, meta)
