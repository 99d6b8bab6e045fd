"""Pretrained models by name, offline: the original zoo served from a mirror on 127.0.0.1 (MASKFORMER_ZOO_URL), a
pre-populated Hugging Face cache with HF_HUB_OFFLINE=1, and the table itself."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskformer
from conftest import CONFIGS
from maskformer.cli import main
from maskformer.convert.pickle_io import save_pkl
from maskformer.errors import CheckpointError
from maskformer.zoo import zoo_table, zoo_url
from parity_recipe import REFERENCE, recipe_input, recipe_state

R50 = "ade20k-150/maskformer_R50_bs16_160k"


class _Mirror:
    """A static file server on 127.0.0.1 for the test's lifetime; ``truncate`` names paths sent cut in half (the
    Content-Length announces the whole file, as a dropped connection would look)."""

    def __init__(self, root: Path) -> None:
        self.root, self.truncate, self.requests = root, set(), []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                mirror.requests.append(self.path)
                file = mirror.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if self.path in mirror.truncate else data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Mirror]:
    server = _Mirror(tmp_path / "mirror")
    monkeypatch.setenv("MASKFORMER_ZOO_URL", server.url)
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    yield server
    server.stop()


def _publish(mirror: _Mirror, name: str, state: dict) -> str:
    entry = zoo_table()[name]
    file = mirror.root / entry.path
    file.parent.mkdir(parents=True, exist_ok=True)
    save_pkl({"model": state, "__author__": "recipe"}, file)
    return "/" + entry.path


def test_every_zoo_row_has_a_url_and_a_config() -> None:
    table = [e for e in zoo_table().values() if not e.hub]
    assert len(table) == 30
    for e in table:
        assert (CONFIGS / f"{e.name}.yaml").is_file(), e.name
        assert zoo_url(e).startswith("https://dl.fbaipublicfiles.com/maskformer/") and e.path.endswith(".pkl")
        assert e.metric in ("mIoU", "PQ") and e.reported is not None
    readme_files = {line.split("|")[1].strip() for line in (CONFIGS.parent / "docs" / "pretrained.md").read_text()
                    .splitlines() if line.startswith("| model_final_")}  # fmt: skip
    assert readme_files == {e.file_name for e in table}


def test_zoo_name_from_a_mirror_gives_the_original_outputs(mirror: _Mirror, tmp_path: Path, capsys) -> None:
    if not (REFERENCE / "parity").is_dir():
        pytest.skip("../shared/reference/parity is absent")
    _publish(mirror, R50, recipe_state("R50_ade150"))
    model = maskformer.from_pretrained(R50)
    ref = np.load(REFERENCE / "parity" / "R50_ade150.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(recipe_input()))
    np.testing.assert_allclose(out["pred_logits"].numpy(), ref["pred_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["pred_masks"].numpy(), ref["pred_masks"], atol=1e-3, rtol=0)
    assert model.class_meta.classes[0] == "wall" and model.cfg.model.num_classes == 150
    assert len(mirror.requests) == 1
    mirror.stop()  # the second call and the CLI work from the cache alone
    again = maskformer.from_pretrained(R50)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", R50, str(tmp_path / "x.png"), "--output-dir", str(tmp_path / "out")]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "x_labels.png")).shape == (64, 96)
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[R50]["cached"] is True and rows["ade20k-150/maskformer_R101_bs16_160k"]["cached"] is False


@pytest.mark.parametrize("damage", ["truncated", "not a pickle", "missing"])
def test_a_bad_download_is_one_line_and_caches_nothing(mirror: _Mirror, tmp_path: Path, capsys, damage: str) -> None:
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    entry = zoo_table()[name]
    if damage == "truncated":
        mirror.truncate.add(_publish(mirror, name, {"x": np.zeros(1000, np.float32)}))
    elif damage == "not a pickle":
        (mirror.root / entry.path).parent.mkdir(parents=True)
        (mirror.root / entry.path).write_text("<html>not found</html>")
    with pytest.raises(CheckpointError) as info:
        maskformer.from_pretrained(name)
    text = str(info.value)
    assert name in text and zoo_url(entry) in text and "\n" not in text
    assert {"truncated": "truncated", "not a pickle": "not a usable checkpoint", "missing": "HTTP 404"}[damage] in text
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", name, str(image), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # (a progress bar may come first)
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("maskformer")]
    assert len(errors) == 1 and name in errors[0] and "Traceback" not in err


def test_unknown_names_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="maskformer models"):
        maskformer.from_pretrained("ade20k-150/no_such_model")
    with pytest.raises(CheckpointError, match="config.json"):
        maskformer.from_pretrained(tmp_path)  # a folder that is not a transformers folder


def test_hub_id_from_a_prepopulated_offline_cache(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    config = transformers.MaskFormerConfig(
        backbone_config={"model_type": "resnet", "depths": [1, 1, 1, 1], "hidden_sizes": [32, 64, 128, 256],
                         "embedding_size": 16, "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        decoder_config={"model_type": "detr", "decoder_layers": 1, "d_model": 32, "decoder_attention_heads": 2,
                        "decoder_ffn_dim": 64, "num_queries": 5},
        fpn_feature_size=32, mask_feature_size=32, id2label={0: "cat", 1: "dog"},
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.MaskFormerForInstanceSegmentation(config).eval()
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--maskformer-tiny"
    hf.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "MASKFORMER_CACHE": str(tmp_path / "c"),
    }
    code = ("import maskformer, torch\n"
            "p = maskformer.Predictor.from_pretrained('tiny-org/maskformer-tiny')\n"
            "print(p.class_names)\n"
            "x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))\n"
            "torch.save(p.reference(x, with_aux=False)['pred_logits'], 'logits.pt')\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "['cat', 'dog']" in run.stdout
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=x).class_queries_logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, atol=1e-4, rtol=0)
    assert (tmp_path / "c" / "hub" / "tiny-org" / "maskformer-tiny" / "model.pt").is_file()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    missing = subprocess.run([sys.executable, "-m", "maskformer.cli", "predict", "tiny-org/absent", "x.png",
                              "--output-dir", "o"], env=env, cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "tiny-org/absent" in missing.stderr and "Traceback" not in missing.stderr
