"""The Python API's bad input: each ends in one exception of ours (or ValueError) naming what to fix, never a deep
torch / numpy / Pillow error, and nothing is written that could not be read back (found by a QA walk of the API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.errors import CheckpointError, ConfigError, DataError


@pytest.fixture(scope="module")
def demo() -> tuple[object, torch.nn.Module]:
    cfg = maskformer.load_config(DEMO_YAML)
    return cfg, maskformer.build_model(cfg).eval()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("optimize", [True, False])
def test_a_model_cast_to_another_dtype_is_refused_when_the_predictor_is_built(demo, dtype, optimize) -> None:
    """Built fine, then a raw "Input type (float) and bias type (c10::Half) should be the same" at the first call."""
    cfg, _ = demo
    model = maskformer.build_model(cfg).eval().to(dtype)
    with pytest.raises(ConfigError, match=r"weights are (bfloat16|float16|float64).*model\.float\(\)"):
        maskformer.Predictor(model, optimize=optimize)


def test_predict_resized_checks_its_sizes_and_tasks(demo) -> None:
    """One output size short: the last image's result was an empty dict; an unknown task was ignored."""
    _, model = demo
    predictor = maskformer.Predictor(model, optimize=False)
    a, b = np.zeros((64, 96, 3), np.uint8), np.full((64, 96, 3), 200, np.uint8)
    with pytest.raises(ConfigError, match=r"2 image\(s\) and 1 output size"):
        predictor.predict_resized([a, b], [(64, 96)], ("semantic",))
    for tasks in (("instance",), ("semantic", "panoptc")):
        with pytest.raises(ConfigError, match="task must be one of"):
            predictor.predict_resized([a], [(64, 96)], tasks)
    for size in ((0, 0), (-3, 5), (64,), "64x96", (64.0, 96)):
        with pytest.raises(ConfigError, match="output size must be"):
            predictor.predict_resized([a], [size], ("semantic",))
        with pytest.raises(ConfigError, match="output size must be"):
            predictor.semantic_scores(a, size)
    sizes = [(32, 48), (np.int64(16), 24), torch.tensor([8, 12]), torch.Size([4, 6])]
    got = predictor.predict_resized([a, b, a, b], sizes, ("semantic",))
    assert [tuple(r["semantic"].shape) for r in got] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    with pytest.raises(ConfigError, match="output size must be"):
        predictor.predict_resized([a], [torch.tensor([8.0, 12.0])], ("semantic",))


def test_empty_and_closed_pil_images_are_data_errors(demo, tmp_path: Path) -> None:
    """A 0x0 PIL image divided by zero in the resize; one whose file a `with` block closed raised Pillow's bare
    AssertionError."""
    _, model = demo
    predictor = maskformer.Predictor(model, optimize=False)
    for size in ((0, 0), (0, 7), (7, 0)):
        with pytest.raises(DataError, match="empty PIL image"):
            predictor(Image.new("RGB", size))
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as closed:
        pass
    with pytest.raises(DataError, match="file was closed before its pixels were read"):
        predictor(closed)
    with Image.open(tmp_path / "a.png") as loaded:
        loaded.load()
    assert tuple(predictor(loaded, task="semantic").shape) == (20, 30)
    # a floating-point PIL image: named once ("image: cannot read this PIL image (image: floating-point ...)")
    with pytest.raises(DataError) as floating:
        predictor(Image.new("F", (8, 8)))
    assert str(floating.value).startswith("image: floating-point image") and str(floating.value).count("image:") == 1


def test_panoptic_evaluator_takes_numpy_ids_and_names_a_segment_without_one() -> None:
    """Segments made from np.unique: "segment id np.int64(1) is not an integer"; a missing key was a KeyError."""
    from maskformer.evaluation import PanopticEvaluator

    ev = PanopticEvaluator(categories=[{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}])
    pan = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    segments = [{"id": i, "category_id": np.int32(i)} for i in np.unique(pan)]
    ev.update(pan, segments, pan, segments)
    assert ev.compute()["PQ"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"predicted segments: segment 0 .* has no 'id'"):
        ev.update(pan, [{"category_id": 1}], pan, segments)
    with pytest.raises(ValueError, match="predicted segments: segments_info is a str, not a list"):
        ev.update(pan, "x", pan, segments)  # (eval-predictions: a traceback, from its worker pool too)
    for bad in (True, np.bool_(True), "1", 1.5, float("nan")):
        with pytest.raises(ValueError, match="is not an integer"):
            ev.update(pan, [{"id": bad, "category_id": 1}], pan, segments)


def test_save_checkpoint_refuses_a_config_that_does_not_describe_the_model(demo, tmp_path: Path) -> None:
    """It wrote a file every reader then refused ("weights do not fit its config")."""
    cfg, model = demo
    other = maskformer.load_config(DEMO_YAML, ["model.num_queries=7"])
    with pytest.raises(CheckpointError, match=r"cfg does not describe this model .*query_embed.*nothing was written"):
        maskformer.save_checkpoint(tmp_path / "x.pt", cfg=other, model=model)
    assert not (tmp_path / "x.pt").exists()
    maskformer.save_checkpoint(tmp_path / "x.pt", cfg=cfg, model=model)
    assert maskformer.load_model(tmp_path / "x.pt").cfg.model.num_queries == cfg.model.num_queries


def test_predict_video_checks_every(demo, tmp_path: Path) -> None:
    """every=0 was a ZeroDivisionError, a negative one was taken (the CLI checks --every itself)."""
    from maskformer.inference.video import predict_video

    _, model = demo
    predictor = maskformer.Predictor(model, optimize=False)
    for every in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="every must be a positive integer"):
            predict_video(predictor, tmp_path / "none.mp4", tmp_path / "out.mp4", every=every, progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_criterion_names_targets_that_do_not_pair_labels_with_masks(demo) -> None:
    """2 labels for 1 mask: an IndexError from the matcher; build_criterion(path): an AttributeError."""
    cfg, model = demo
    criterion = maskformer.build_criterion(cfg)
    outputs = model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"targets\[0\]: labels \[N\] and masks \[N, H, W\] expected"):
        criterion(outputs, [{"labels": torch.tensor([1, 2]), "masks": torch.ones(1, 64, 64, dtype=torch.bool)}])
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'masks'"):
        criterion(outputs, [{"labels": torch.tensor([1])}])
    with pytest.raises(ConfigError, match="build_criterion takes a Config"):
        maskformer.build_criterion(str(DEMO_YAML))
    # a per-pixel baseline's loss given a MaskFormer's targets: KeyError 'sem_seg'
    per_pixel = maskformer.load_config(DEMO_YAML, ["model.meta_arch=per_pixel"])
    logits = maskformer.build_model(per_pixel)(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'sem_seg'"):
        maskformer.build_criterion(per_pixel)(logits, [{"labels": torch.tensor([1]), "masks": torch.ones(1, 64, 64)}])


def test_overlay_takes_the_predictors_colour_list_and_evaluators_check_their_counts(demo) -> None:
    from maskformer.evaluation import SemanticEvaluator
    from maskformer.inference.visualize import overlay

    _, model = demo
    predictor = maskformer.Predictor(model, optimize=False)
    image = np.full((8, 9, 3), 100, np.uint8)
    labels = np.zeros((8, 9), np.int64)
    drawn = overlay(image, labels, predictor.colors)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert np.array_equal(drawn, overlay(image, labels, np.asarray(predictor.colors, np.uint8)))
    for kwargs in ({"num_classes": "3", "ignore_label": 255}, {"num_classes": 3, "ignore_label": None}):
        with pytest.raises(ValueError, match="must be an integer"):
            SemanticEvaluator(**kwargs)


def test_build_model_checks_values_set_in_python() -> None:
    """load_config refuses num_queries 0 or "x", a value set on the Config afterwards reached torch (a TypeError from
    nn.Embedding, or a model of no queries)."""
    cfg = maskformer.load_config(DEMO_YAML)
    for value, why in (("x", "must be an integer"), (0, "must be at least 1")):
        cfg.model.num_queries = value
        with pytest.raises(ConfigError, match=f"model.num_queries.*{why}"):
            maskformer.build_model(cfg)
    # what Python hands over as it is, and the model takes (refused by the first version of this check)
    cfg.model.num_queries, cfg.data.root = np.int64(7), Path("/nonexistent")
    assert maskformer.build_model(cfg).cfg.model.num_queries == 7


def test_checkpoint_of_a_config_with_numpy_numbers_saves_and_reads_back(tmp_path: Path) -> None:
    """A Config holding np.int64 / Path values (taken by build_model) was refused by save_checkpoint's own check
    ("must be an integer, got np.int64(7)"); it is stored as plain YAML values, as a config file gives them."""
    from maskformer.config import config_to_dict
    from maskformer.engine.checkpoint import load_checkpoint, save_checkpoint

    cfg = maskformer.load_config(DEMO_YAML)
    cfg.model.num_queries, cfg.data.root = np.int64(7), Path("/nonexistent")
    model = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "m.pt", cfg=cfg, model=model)
    stored = load_checkpoint(tmp_path / "m.pt")["config"]
    assert type(stored["model"]["num_queries"]) is int and stored["data"]["root"] == "/nonexistent"
    assert config_to_dict(cfg) == stored
