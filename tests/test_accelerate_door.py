"""The speed code's one door: ``inference.accelerate.accelerate`` chosen by the Predictor, stepping aside by itself."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

import maskformer
from maskformer.inference import accelerate as door
from maskformer.inference.accelerate.fast_model import FastModel


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = maskformer.load_config(None, ["data.dataset=synthetic", "model.num_classes=5", "model.num_queries=6",
        "model.backbone.blocks=[1,1,1,1]", "model.backbone.stem_out_channels=16", "model.backbone.width_per_group=8",
        "model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=64", "model.dec_layers=2",
        "model.convs_dim=32", "model.mask_dim=32", "test.min_size=64", "test.max_size=256"])  # fmt: skip
    return maskformer.build_model(cfg).eval()


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)


def test_default_predictor_runs_the_optimised_copy_with_the_exact_labels(model) -> None:
    fast, exact = maskformer.Predictor(model), maskformer.Predictor(model, optimize=False)
    assert fast.accelerated and isinstance(fast.model, FastModel) and fast.model is not model
    assert not exact.accelerated and exact.model is model
    assert torch.equal(fast(_image(), task="semantic"), exact(_image(), task="semantic"))
    assert fast.min_size == 64 and fast.max_size == 256  # from the model's own config


@pytest.mark.parametrize("reason", ["env", "machine", "torch", "device"])
def test_the_door_steps_aside_where_exactness_is_not_tested(model, monkeypatch, reason: str) -> None:
    if reason == "env":
        monkeypatch.setenv("MASKFORMER_ACCELERATE", "0")
    elif reason == "machine":
        monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    elif reason == "torch":
        monkeypatch.setattr(torch, "__version__", "2.1.0")
    ok, why = door.supported("cuda" if reason == "device" else "cpu")
    assert not ok and why
    if reason != "device":
        pred = maskformer.Predictor(model)
        assert not pred.accelerated and pred.model is model
        assert torch.equal(pred(_image(), task="semantic"), maskformer.Predictor(model, optimize=False)(_image(),
                           task="semantic"))  # fmt: skip


def test_forcing_an_untested_torch_release(monkeypatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.1.0")
    monkeypatch.setenv("MASKFORMER_ACCELERATE", "1")
    assert door.supported("cpu")[0] == (platform.machine().lower() in ("x86_64", "amd64"))


def test_stepped_aside_bf16_is_still_bfloat16(model, monkeypatch) -> None:
    monkeypatch.setenv("MASKFORMER_ACCELERATE", "0")
    pred = maskformer.Predictor(model, bf16=True)
    assert not pred.accelerated and pred.corner_labels is True
    labels = pred(_image(), task="semantic")
    assert labels.shape == (64, 80) and labels.dtype == torch.int64


def test_a_built_model_knows_its_shipped_class_table() -> None:
    ade = maskformer.build_model(
        maskformer.load_config(None, ["model.num_classes=150", "model.backbone.blocks=[1,1,1,1]"])
    )
    assert maskformer.Predictor(ade, optimize=False).class_names[:2] == ["wall", "building"]
    other = maskformer.build_model(
        maskformer.load_config(None, ["model.num_classes=7", "model.backbone.blocks=[1,1,1,1]"])
    )
    assert maskformer.Predictor(other, optimize=False).class_names[:2] == ["class 0", "class 1"]
