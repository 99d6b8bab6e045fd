"""ONNX export of the lean inference model (inference.export, `maskformer export onnx`), checked with onnxruntime.

The reference is PyTorch's own forward(with_aux=False) of the unfolded model; onnxruntime is an independent runtime.
One export (the slow part, ~10 s) is shared by the tests of this file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import maskformer
from maskformer.cli import main
from maskformer.engine.checkpoint import save_checkpoint

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

DEMO_YAML = Path(maskformer.__file__).parent / "resources" / "demo.yaml"
TOLERANCE = 1e-4  # float32 through a different runtime: summation order only


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    folder = tmp_path_factory.mktemp("export")
    cfg = maskformer.load_config(
        DEMO_YAML, ["model.backbone.norm=FrozenBN", "model.num_queries=8", "model.dec_layers=2"]
    )
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    with torch.no_grad():  # frozen statistics far from identity, so folding them matters
        for name, t in model.state_dict().items():
            if "running_var" in name:
                t.copy_(torch.rand(t.shape) + 0.5)
            elif "running_mean" in name:
                t.copy_(0.2 * torch.randn(t.shape))
    ckpt = folder / "model.pt"
    save_checkpoint(ckpt, cfg=cfg, model=model)
    out = folder / "sub" / "model.onnx"
    assert main(["export", "onnx", str(ckpt), str(out), "--size", "64", "96"]) == 0
    return model, ckpt, out


@pytest.mark.parametrize("size", [(64, 96), (96, 64), (128, 160)])
def test_onnxruntime_matches_pytorch_at_export_and_other_sizes(exported, size):
    model, _, out = exported
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["pred_logits", "pred_masks"]
    # the dynamic sizes carry readable names (they read "32*h32" and "8*s39", the exporter's symbols)
    assert session.get_inputs()[0].shape == [1, 3, "height", "width"]
    assert session.get_outputs()[1].shape == [1, 8, "height/4", "width/4"]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    logits, masks = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x, with_aux=False)
    assert masks.shape == (1, 8, size[0] // 4, size[1] // 4) and logits.shape == (1, 8, 9)
    assert ref["pred_masks"].std() > 0.1
    np.testing.assert_allclose(masks, ref["pred_masks"].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(logits, ref["pred_logits"].numpy(), atol=TOLERANCE, rtol=0)


def test_export_leaves_no_temporary_files(exported):
    _, _, out = exported
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]


def test_export_cli_errors_are_one_line(exported, tmp_path, capsys):
    _, ckpt, _ = exported
    assert main(["export", "onnx", str(tmp_path / "missing.pt"), str(tmp_path / "x.onnx")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["export", "onnx", str(DEMO_YAML), str(tmp_path / "x.onnx")]) == 2  # a config needs --random-weights
    assert "not a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert main(["export", "onnx", str(ckpt), str(tmp_path / "x.onnx"), "--size", "50", "64"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    for output in ("model.txt", "model"):  # the ONNX graph under another name was written silently before
        assert main(["export", "onnx", str(ckpt), str(tmp_path / output), "--size", "64", "64"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("must end in .onnx") and output in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / output).exists()
    (tmp_path / "notes").write_text("a file where the output folder should be")
    assert main(["export", "onnx", str(ckpt), str(tmp_path / "notes" / "x.onnx"), "--size", "64", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "notes" in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def _errors(err: str) -> list[str]:
    """stderr without the steps said as they start ("maskformer export: tracing ...")."""
    steps = ("maskformer export: tracing", "maskformer export: running", "maskformer export: comparing")
    return [line for line in err.strip().splitlines() if not line.startswith(steps)]


def test_a_file_that_fails_verification_is_not_written(exported, tmp_path, capsys):
    _, ckpt, _ = exported
    out = tmp_path / "strict" / "m.onnx"
    code = main(["export", "onnx", str(ckpt), str(out), "--size", "64", "64", "--static", "--tolerance", "1e-12"])
    err = "\n".join(_errors(capsys.readouterr().err))
    assert code == 2 and "not written" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists() or not list(out.parent.iterdir())  # neither the file nor a temporary


def test_export_prints_only_its_own_report(exported, tmp_path, capsys, caplog):
    """torch.onnx's progress lines and onnxscript's optimiser warnings stay out of the user's terminal."""
    _, ckpt, _ = exported
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["export", "onnx", str(ckpt), str(tmp_path / "q.onnx"), "--size", "64", "64", "--static"]) == 0
    out, err = capsys.readouterr()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("onnxscript")] == []
    assert "[torch.onnx]" not in out + err
    assert out.strip().splitlines()[-1].startswith("wrote ")
    # its own steps are said as they start (minutes of tracing without a word looked like a hang)
    steps = [line for line in err.splitlines() if line.startswith("maskformer export: ")]
    assert steps == ["maskformer export: tracing the model for inputs of 64x64 (torch.export; this takes minutes on a "
                     "small CPU)", "maskformer export: comparing onnxruntime with PyTorch"], err  # fmt: skip


def test_opsets_and_the_smallest_size(exported, tmp_path, capfd):
    """--opset 7 said "opset 7" over a file of opset 18 and --opset 99 ended in onnxruntime's traceback: both are now
    one line before any export; the report gives the opset the file declares. --size 32 32 printed torch's guard
    traceback before falling back to a static graph: the dynamic graph is now traced at 64 and runs at 32."""
    import onnx

    _, ckpt, _ = exported
    for opset in ("7", "99"):
        assert main(["export", "onnx", str(ckpt), str(tmp_path / "o.onnx"), "--opset", opset]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--opset: torch's ONNX exporter writes opsets 18 to" in err[0], err
    for tolerance in ("nan", "-1", "0"):  # (NaN passed every check, -1 and 0 failed every export, after the export)
        assert main(["export", "onnx", str(ckpt), str(tmp_path / "o.onnx"), "--tolerance", tolerance]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert err == [f"maskformer export: error: --tolerance must be a positive number, got {float(tolerance)}"]
    assert not (tmp_path / "o.onnx").exists()
    assert main(["export", "onnx", str(ckpt), str(tmp_path / "s.onnx"), "--size", "32", "32", "--opset", "20"]) == 0
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "torch/_guards" not in err
    assert "(opset 20, dynamic H/W" in out.strip().splitlines()[-1]
    graph = onnx.load(str(tmp_path / "s.onnx"))
    assert {o.domain: o.version for o in graph.opset_import}[""] == 20


def test_a_graph_onnxruntime_cannot_load_names_the_output_and_suggests_an_older_opset(
    exported, tmp_path, capfd, monkeypatch
):
    """onnxruntime 1.32 refuses opset 26's Attention node: the message named the temporary file
    (.o26.onnx.kdu2mbmq.onnx) and did not say what to do."""
    from maskformer.inference import export

    def refuse(path, model, example):
        raise RuntimeError(f"[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from {path} failed:invalid model")

    monkeypatch.setattr(export, "_differences", refuse)
    _, ckpt, _ = exported
    out = tmp_path / "o20.onnx"
    assert main(["export", "onnx", str(ckpt), str(out), "--size", "64", "64", "--static", "--opset", "20"]) == 2
    err = _errors(capfd.readouterr().err)
    assert len(err) == 1 and err[0].endswith("opset 20 may be newer than this onnxruntime runs: try --opset 18"), err
    assert "Load model from o20.onnx failed" in err[0] and not list(tmp_path.iterdir()), err


@pytest.mark.parametrize("scale, written", [(1e5, True), (1.0, False)])
def test_the_tolerance_is_relative_to_the_outputs_range(exported, tmp_path, capsys, monkeypatch, scale, written):
    """Random R101 weights reach activations of ~1e5, where float32 rounding alone is ~2e-3: the absolute bound
    refused the export 4 times in 4 (with differing numbers: the weights were not seeded either)."""
    from maskformer.inference import export

    _, ckpt, _ = exported
    monkeypatch.setattr(export, "_differences", lambda path, model, images: {"pred_masks": (2e-3, scale)})
    out = tmp_path / "m.onnx"
    code = main(["export", "onnx", str(ckpt), str(out), "--size", "64", "64", "--static"])
    assert (code == 0) is written and out.exists() is written, capsys.readouterr().err


def test_random_weights_are_the_same_each_run(tmp_path) -> None:
    import onnx

    graphs = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.onnx"
        argv = ["export", "onnx", str(DEMO_YAML), str(out), "--random-weights", "--size", "64", "64", "--static"]
        assert main(argv) == 0
        graphs.append([np.asarray(onnx.numpy_helper.to_array(t)) for t in onnx.load(str(out)).graph.initializer])
    assert len(graphs[0]) == len(graphs[1]) > 0 and all(np.array_equal(a, b) for a, b in zip(*graphs))


def test_a_config_without_random_weights_says_the_flag(tmp_path, capsys):
    """`export onnx configs/folder/small.yaml x.onnx` said "train it or pass a checkpoint", not --random-weights."""
    from conftest import CONFIGS

    (tmp_path / "DEMO.YAML").write_text(
        (CONFIGS / "demo.yaml").read_text().replace("../src", str(CONFIGS.parent / "src"))
    )
    for config in (CONFIGS / "demo.yaml", tmp_path / "DEMO.YAML"):
        assert main(["export", "onnx", str(config), str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "add --random-weights" in err[0] and not (tmp_path / "x.onnx").exists(), err


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_without_the_onnx_extra_export_is_one_line_naming_it(tmp_path, capsys, monkeypatch, missing) -> None:
    """Without onnxscript (installed without the extra) the export ended in a 49-line traceback, exit 1."""
    import sys

    monkeypatch.setitem(sys.modules, missing, None)  # (how an absent package looks to import and find_spec)
    argv = ["export", "onnx", str(DEMO_YAML), str(tmp_path / "x.onnx"), "--random-weights", "--static"]
    assert main([*argv, "--size", "64", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"maskformer export: error: export onnx needs the onnx extra: pip install 'maskformer[onnx]' " \
                  f"({missing} is missing)", err  # fmt: skip
    assert not (tmp_path / "x.onnx").exists()


def test_the_documented_onnxruntime_snippet_gives_the_predictors_labels(exported, tmp_path) -> None:
    """docs/onnx.md's snippet, run as written beside the exported file (numpy, Pillow and onnxruntime only), on a
    picture already at its test size and on one that needs padding: the labels of ``Predictor(optimize=False)``."""
    import json
    import re
    import subprocess
    import sys

    from PIL import Image

    from conftest import ROOT

    _, ckpt, onnx_file = exported
    model = maskformer.load_model(ckpt)  # (with the class table the checkpoint carries, as the export read it)
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "onnx.md").read_text(), flags=re.S)
    info = ort.InferenceSession(str(onnx_file)).get_modelmeta().custom_metadata_map
    assert json.loads(info["classes"]) == maskformer.Predictor(model, optimize=False).class_names
    assert json.loads(info["pixel_mean"]) == [round(float(v), 6) for v in model.pixel_mean]
    assert info["size_divisibility"] == "32" and int(info["test_min_size"]) == model.cfg.test.min_size
    (tmp_path / "model.onnx").symlink_to(onnx_file)
    rng = np.random.default_rng(3)
    for h, w in ((128, 160), (128, 203), (150, 130)):  # (the demo's test size: shorter side 128; the last resized)
        picture = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(picture).save(tmp_path / "street.png")
        run = subprocess.run([sys.executable, "-c", block + "\nnp.save('labels.npy', labels)\n"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        got = np.load(tmp_path / "labels.npy")
        if min(h, w) != model.cfg.test.min_size:  # the snippet resizes as the Predictor does: compare on that picture
            from maskformer.inference.preprocess import resize_image, resize_shortest_edge_size

            sizes = (model.cfg.test.min_size, model.cfg.test.max_size)
            picture = resize_image(picture, resize_shortest_edge_size(h, w, *sizes))
        want = maskformer.Predictor(model, optimize=False)(picture, task="semantic").numpy()
        assert got.shape == want.shape and (got == want).mean() > 0.999, (got != want).sum()


def test_a_model_that_pads_nothing_says_the_multiple_its_graph_takes(tmp_path) -> None:
    """The COCO-panoptic configs pad nothing (size_divisibility 0): the metadata said 0, the graph takes multiples of
    32, and docs/onnx.md's snippet divided by zero. The metadata now gives the multiple the graph takes."""
    import re
    import subprocess
    import sys

    from PIL import Image

    from conftest import ROOT

    cfg = maskformer.load_config(DEMO_YAML, ["model.size_divisibility=0", "model.num_queries=8", "model.dec_layers=1"])
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, cfg=cfg, model=model)
    assert main(["export", "onnx", str(ckpt), str(tmp_path / "model.onnx"), "--size", "64", "64"]) == 0
    info = ort.InferenceSession(str(tmp_path / "model.onnx")).get_modelmeta().custom_metadata_map
    assert info["size_divisibility"] == "32"
    (block,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "onnx.md").read_text(), flags=re.S)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 203, 3), dtype=np.uint8)).save(
        tmp_path / "street.png"
    )
    run = subprocess.run([sys.executable, "-c", block + "\nprint(labels.shape)\n"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("(128, 203)")
