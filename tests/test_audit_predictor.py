"""Audit of Predictor inputs the other tests did not reach: extreme aspect ratios (the test resize gave 0 rows and
PIL raised, a traceback in `maskformer predict`), a non-positive test size, an empty batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import maskformer
from maskformer.errors import ConfigError, UserError
from maskformer.inference.preprocess import resize_shortest_edge_size

DEMO_YAML = Path(maskformer.__file__).parent / "resources" / "demo.yaml"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    cfg = maskformer.load_config(DEMO_YAML, ["model.num_queries=20", "model.dec_layers=2"])
    torch.manual_seed(0)
    return maskformer.build_model(cfg).eval()


def test_resize_keeps_at_least_one_pixel_per_side():
    assert resize_shortest_edge_size(1, 5000, 800, 1333) == (1, 1333)
    assert resize_shortest_edge_size(5000, 2, 512, 2048) == (2048, 1)
    assert resize_shortest_edge_size(97, 131, 512, 2048) == (512, 691)  # ordinary sizes unchanged: 131 * 512 / 97


@pytest.mark.parametrize("optimize", [True, False])
def test_predictor_on_a_one_pixel_high_strip(model, optimize):
    predictor = maskformer.Predictor(model, min_size=128, max_size=320, optimize=optimize)
    strip = np.random.default_rng(0).integers(0, 256, (1, 5000, 3), dtype=np.uint8)
    labels = predictor(strip, task="semantic")
    assert labels.shape == (1, 5000) and labels.dtype == torch.int64
    pan, segments = predictor(strip, task="panoptic")
    assert pan.shape == (1, 5000) and isinstance(segments, list)


def test_non_positive_min_size_is_a_config_error(model):
    with pytest.raises(ConfigError, match="min_size"):
        maskformer.Predictor(model, min_size=0)
    assert issubclass(ConfigError, UserError)  # the CLI prints it as one line


def test_empty_batch_gives_an_empty_list(model):
    predictor = maskformer.Predictor(model, min_size=64, max_size=128)
    assert predictor([], task="semantic") == []
    assert predictor([], task="panoptic") == []
    assert predictor.predict_resized([], [], ("semantic", "panoptic")) == []


def test_panoptic_on_a_per_pixel_baseline_is_one_line_in_the_cli(tmp_path, capsys):
    from PIL import Image

    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(DEMO_YAML, ["model.meta_arch=per_pixel"])
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    with pytest.raises(ConfigError, match="per-pixel"):
        maskformer.Predictor(model, min_size=64, max_size=128)(np.zeros((40, 50, 3), np.uint8), task="panoptic")
    save_checkpoint(tmp_path / "pp.pt", cfg=cfg, model=model)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "pp.pt"), str(tmp_path / "a.png"), "--task", "panoptic",
                 "--output-dir", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "per-pixel" in err and len(err.strip().splitlines()) == 1


def test_predict_refuses_inputs_whose_outputs_would_overwrite_each_other(model, tmp_path, capsys):
    from PIL import Image

    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", cfg=model.cfg, model=model)
    for folder, suffix in (("one", ".png"), ("two", ".png"), ("three", ".jpg")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / folder / f"x{suffix}")
    (tmp_path / "three" / "x.png").write_bytes((tmp_path / "one" / "x.png").read_bytes())
    for inputs in (["one", "two"], ["three"]):
        out = tmp_path / f"out_{inputs[0]}"
        code = main(["predict", str(tmp_path / "m.pt"), *(str(tmp_path / i) for i in inputs), "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and "overwrite" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    code = main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "one" / "x.png"), str(tmp_path / "one" / "x.png"),
                 "--output-dir", str(tmp_path / "same")])  # fmt: skip
    assert code == 0  # the same file twice writes the same outputs twice: allowed


def test_tta_with_panoptic_is_one_line_not_silently_ignored(model, tmp_path, capsys):
    """The original has test-time augmentation for semantic labels only: asked for panoptic, it is an error."""
    from PIL import Image

    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(ConfigError, match="semantic labels only"):
        maskformer.Predictor(model, tta=True)(image, task="panoptic")
    assert maskformer.Predictor(model, tta=True)(image, task="semantic").shape == (40, 50)
    save_checkpoint(tmp_path / "m.pt", cfg=model.cfg, model=model)
    Image.fromarray(image).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "a.png"), "--task", "panoptic", "--tta",
                 "--output-dir", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--tta" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
