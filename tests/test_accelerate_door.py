"""The speed code's one door: ``inference.accelerate.accelerate`` chosen by the Predictor, stepping aside by itself."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

import maskformer
from conftest import DEMO_YAML
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


def test_bf16_is_refused_in_one_line_where_the_cpu_would_emulate_it(model, monkeypatch, tmp_path, capsys) -> None:
    """On a CPU without bfloat16 instructions (an AVX2-only AMD EPYC) oneDNN cannot lay out bf16 weights: ``--bf16``
    gave a traceback in predict / eval / benchmark and a failed request on every upload to ``serve --bf16``. It is now
    refused when the Predictor is built (torch's autocast would emulate bf16 there, several times slower than fp32);
    ``optimize=False`` keeps that autocast."""
    from PIL import Image

    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint
    from maskformer.errors import ConfigError
    from maskformer.inference.accelerate import fast_model, onednn

    monkeypatch.setattr(onednn, "native_bf16", lambda: False)
    monkeypatch.setattr(fast_model, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="no bfloat16 instructions"):
        maskformer.Predictor(model, bf16=True)
    with pytest.raises(ConfigError, match="no bfloat16 instructions"):
        fast_model.prepare_for_inference(model, bf16=True)
    assert maskformer.Predictor(model).accelerated  # fp32 is not affected
    labels = maskformer.Predictor(model, bf16=True, optimize=False)(_image(), task="semantic")
    assert labels.shape == (64, 80)
    save_checkpoint(tmp_path / "m.pt", cfg=model.cfg, model=model)
    Image.fromarray(_image()).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "a.png"), "--output-dir", str(tmp_path / "o"),
                 "--bf16"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--bf16" in err and "no bfloat16 instructions" in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_compile_does_not_print_torchs_cuda_home_warning() -> None:
    """`predict --compile` on a CPU machine printed torch's "No CUDA runtime is found, using CUDA_HOME=..." (inductor
    imports torch.utils.cpp_extension, which warns when a CUDA folder exists): not the user's problem."""
    import subprocess
    import sys

    def stderr(code: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr

    plain = stderr("import torch.utils.cpp_extension")
    build = (  # the compiled copy is set up (no forward: no compilation), then inductor's import comes
        "import maskformer; from maskformer.inference.accelerate.fast_model import prepare_for_inference; "
        f"cfg = maskformer.load_config({str(DEMO_YAML)!r}); "
        "prepare_for_inference(maskformer.build_model(cfg).eval(), compile=True); "
        "import torch.utils.cpp_extension; print('built')"
    )
    quiet = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, timeout=300)
    assert quiet.stdout.strip() == "built" and "No CUDA runtime" not in quiet.stderr, quiet.stderr[-2000:]
    if "No CUDA runtime" not in plain:  # (no CUDA folder on this machine: nothing to hide)
        pytest.skip("torch does not warn here (no CUDA_HOME folder): nothing to check")
