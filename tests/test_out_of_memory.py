"""A picture too large for the machine's memory ended predict and eval in a traceback (and predict dropped the
pictures after it): now one line naming the picture and its size; predict goes on with the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.cli import main
from maskformer.errors import out_of_memory
from maskformer.inference.predictor import Predictor
from test_eval_bad_samples import _folder
from test_predict_outputs import _checkpoint


def _torch_allocation_error() -> RuntimeError:
    try:
        torch.empty(10**13)  # 40 TB
    except RuntimeError as e:
        return e
    pytest.skip("this machine allocated 40 TB")


def test_allocation_failures_are_recognised() -> None:
    assert out_of_memory(_torch_allocation_error()) == "out of memory (an allocation of 40000.0 GB failed)"
    try:
        np.empty((10**7, 10**7))
    except MemoryError as e:
        assert out_of_memory(e) == "out of memory (an allocation of 728 TiB failed)"
    assert out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) == (
        "out of memory (an allocation of 2.00 GiB failed)"
    )
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    assert out_of_memory(ValueError("out of memory")) is None


def _fails_when_wide(monkeypatch, method: str) -> None:
    """Predictor.<method> fails to allocate for pictures wider than 60 pixels, as a too large one would."""
    real = getattr(Predictor, method)

    def run(self, images, *args, **kwargs):
        if any(np.asarray(image).shape[1] > 60 for image in ([images] if isinstance(images, np.ndarray) else images)):
            raise _torch_allocation_error()
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(Predictor, method, run)


def test_predict_names_the_picture_and_writes_the_others(tmp_path: Path, monkeypatch, capfd) -> None:
    model = _checkpoint(tmp_path / "m.pt")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, width in [("a", 40), ("big", 90), ("c", 40)]:
        Image.fromarray(np.full((30, width, 3), 90, dtype=np.uint8)).save(folder / f"{name}.png")
    _fails_when_wide(monkeypatch, "__call__")
    out = tmp_path / "o"
    assert main(["predict", str(model), str(folder), "--output-dir", str(out), "--task", "semantic"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert f"skipped {folder / 'big.png'} (90x30): out of memory (an allocation of 40000.0 GB failed)" in err, err
    assert f"1 of 3 file(s) ran out of memory: {folder / 'big.png'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "c_labels.png", "c_overlay.png"]
    # one picture: the error itself, in one line
    assert main(["predict", str(model), str(folder / "big.png"), "--output-dir", str(tmp_path / "o2")]) == 2
    err = capfd.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"maskformer predict: error: {folder / 'big.png'} (90x30)"), err


def test_eval_names_the_picture(tmp_path: Path, monkeypatch, capfd) -> None:
    from conftest import CONFIGS

    root = _folder(tmp_path / "data", bad=False)
    run = tmp_path / "run"
    args = ["--data-root", str(root), "--quiet", "--set", "train.batch_size=2", "--set", "data.num_workers=0",
            "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]", "--set", "train.eval_period=-1",
            "--set", "train.max_iters=1"]  # fmt: skip
    assert main(["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(run), *args]) == 0
    capfd.readouterr()
    _fails_when_wide(monkeypatch, "predict_resized")  # (every picture here: eval passes them test-resized)
    assert main(["eval", str(run / "model_final.pt"), "--data-root", str(root), "--set", "data.num_workers=0"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.splitlines() == [err], err
    assert "a0.png (56x40): out of memory (an allocation of 40000.0 GB failed)" in err, err


def test_serve_answers_413_and_stays_up(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("starlette")
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.serve.app import build_app
    from test_image_reading import _post_image

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    _fails_when_wide(monkeypatch, "__call__")
    app = build_app(maskformer.Predictor(model, optimize=False))
    for name, width in [("big.png", 90), ("small.png", 40)]:
        Image.fromarray(np.full((30, width, 3), 90, dtype=np.uint8)).save(tmp_path / name)
    status, reply = _post_image(app, "big.png", (tmp_path / "big.png").read_bytes())
    assert status == 413, reply
    assert reply["error"].startswith("big.png (90x30): out of memory (an allocation of 40000.0 GB failed)"), reply
    assert _post_image(app, "small.png", (tmp_path / "small.png").read_bytes())[0] == 200
