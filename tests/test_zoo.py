"""Pretrained models by name, offline: the original zoo served from a mirror on 127.0.0.1 (MASKFORMER_ZOO_URL), a
pre-populated Hugging Face cache with HF_HUB_OFFLINE=1, and the table itself."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskformer
from conftest import CONFIGS
from fake_hub import SHA
from maskformer.cli import main
from maskformer.config import save_config
from maskformer.convert.pickle_io import save_pkl
from maskformer.engine.conversion import convert_detectron2
from maskformer.errors import CheckpointError
from maskformer.zoo import resolve_model, zoo_table, zoo_url
from parity_recipe import REFERENCE, recipe_input, recipe_state

R50 = "ade20k-150/maskformer_R50_bs16_160k"


class _Mirror:
    """A static file server on 127.0.0.1 for the test's lifetime; ``truncate`` names paths sent cut in half (the
    Content-Length announces the whole file, as a dropped connection would look)."""

    def __init__(self, root: Path) -> None:
        self.root, self.truncate, self.stall, self.loop, self.requests = root, set(), set(), set(), []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                mirror.requests.append(self.path)
                if self.path in mirror.loop:  # (a redirect to itself: urllib gives up after 10)
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                file = mirror.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in mirror.stall:  # half the file, then silence (bounded) before the rest
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    time.sleep(3)
                    data = data[len(data) // 2 :]
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
    server.monkeypatch = monkeypatch  # (_publish renames the table's entries)
    monkeypatch.setenv("MASKFORMER_ZOO_URL", server.url)
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    yield server
    server.stop()


def _publish(mirror: _Mirror, name: str, state: dict) -> str:
    """Serve ``state`` as the zoo file of ``name`` (``_serve``)."""
    file = mirror.root / "unnamed.pkl"
    save_pkl({"model": state, "__author__": "recipe"}, file)
    data = file.read_bytes()
    file.unlink()
    return _serve(mirror, name, data)


def _serve(mirror: _Mirror, name: str, data: bytes) -> str:
    """Serve ``data`` as the zoo file of ``name``. The zoo names each file by the first 6 hex digits of its md5 (which
    downloads are checked against), so the table's entry is renamed after this file's md5 for the test's duration."""
    import dataclasses

    import maskformer.zoo as zoo

    entry = zoo.zoo_table()[name]
    path = re.sub(r"_[0-9a-f]{6}\.pkl$", f"_{hashlib.md5(data).hexdigest()[:6]}.pkl", entry.path)
    (mirror.root / path).parent.mkdir(parents=True, exist_ok=True)
    (mirror.root / path).write_bytes(data)
    table = {**zoo.zoo_table(), name: dataclasses.replace(entry, path=path)}
    mirror.monkeypatch.setattr(zoo, "zoo_table", lambda: table)
    return "/" + path


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
    hub = [e for e in zoo_table().values() if e.hub]
    assert len(hub) == 16 and all(e.name.startswith("facebook/maskformer-") for e in hub)
    assert {e.dataset for e in hub} <= {e.dataset for e in table} and all(e.backbone for e in hub)


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


def _tiny_zoo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MASKFORMER_CONFIGS -> a configs/ folder where the R50 name's config is a tiny model of the same kind."""
    cfg = maskformer.load_config(None, [
        "model.backbone.blocks=[1,1,1,1]", "model.backbone.width_per_group=16", "model.backbone.stem_out_channels=32",
        "model.num_classes=150", "model.num_queries=4", "model.hidden_dim=32", "model.nheads=2",
        "model.dim_feedforward=32", "model.dec_layers=2", "model.convs_dim=32", "model.mask_dim=32",
        "data.dataset=ade20k_150", "test.min_size=64", "test.max_size=128",
    ])  # fmt: skip
    config = tmp_path / "configs" / f"{R50}.yaml"
    config.parent.mkdir(parents=True)
    save_config(cfg, config)
    monkeypatch.setenv("MASKFORMER_CONFIGS", str(tmp_path / "configs"))
    return config


def _original_layout(config: Path) -> dict[str, np.ndarray]:
    """What a released .pkl of ``config``'s model holds: numpy arrays under the original's (new-layout) names."""
    torch.manual_seed(0)
    state = maskformer.build_model(maskformer.load_config(config)).state_dict()
    g = np.random.default_rng(0)
    out = {}
    for k, v in state.items():
        if v.dtype == torch.int64:
            value = v.numpy()
        else:  # variances stay positive, so the outputs are finite and comparable
            value = g.uniform(0.5, 1.5, v.shape) if "running_var" in k else 0.1 * g.standard_normal(v.shape)
            value = value.astype(np.float32)
        out["sem_seg_head." + k if k.startswith(("pixel_decoder.", "predictor.")) else k] = value
    return out


def test_tiny_zoo_model_from_a_mirror_then_every_command_from_the_cache(
    mirror: _Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The R50 flow with a tiny model behind the same name (seconds): download -> convert -> cache, the same weights
    as converting the file by hand, then from the cache alone: a second call and every command that takes a MODEL."""
    config = _tiny_zoo_config(tmp_path, monkeypatch)
    served = mirror.root / _publish(mirror, R50, _original_layout(config)).lstrip("/")
    model = maskformer.from_pretrained(R50)
    assert not model.training and model.cfg.model.num_queries == 4 and model.class_meta.classes[0] == "wall"
    convert_detectron2(served, tmp_path / "by_hand.pt", config=config)
    by_hand = maskformer.load_model(tmp_path / "by_hand.pt")
    assert model.state_dict().keys() == by_hand.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), by_hand.state_dict().values()))
    cache = tmp_path / "cache"
    assert [p.relative_to(cache) for p in cache.rglob("*") if p.is_file()] == [Path("zoo", R50, "model.pt")]

    mirror.stop()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = by_hand(x)["pred_logits"]
        torch.testing.assert_close(maskformer.from_pretrained(R50)(x)["pred_logits"], expected, atol=0, rtol=0)
        predictor = maskformer.Predictor.from_pretrained(R50)
        torch.testing.assert_close(predictor.reference(x, with_aux=False)["pred_logits"], expected, atol=0, rtol=0)
    assert predictor.class_names[:2] == ["wall", "building"]
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(tmp_path / "x.png")
    commands = {
        "predict": ["predict", R50, str(tmp_path / "x.png"), "--output-dir", str(tmp_path / "out")],
        "convert to-hf": ["convert", "to-hf", R50, str(tmp_path / "hf")],
    }
    for command, argv in commands.items():
        assert main(argv) == 0, command
    assert np.asarray(Image.open(tmp_path / "out" / "x_labels.png")).shape == (40, 56)
    assert (tmp_path / "hf" / "config.json").is_file()
    said = capsys.readouterr().out
    assert f": {R50} -> {tmp_path / 'hf'} (" in said, said  # the model as given, not its cache file
    # every command that takes a MODEL goes through the resolver: a name not in the cache, with the server gone, is
    # the resolver's one line (model and URL) and exit code 2 in each of them
    other = "ade20k-150/maskformer_R101_bs16_160k"
    url = zoo_url(zoo_table()[other])
    (tmp_path / "configs" / f"{other}.yaml").write_text("{}")  # (its config is at hand: the download is what fails)
    for argv in (["predict", other, str(tmp_path / "x.png"), "--output-dir", str(tmp_path / "o2")],
                 ["eval", other], ["export", "onnx", other, str(tmp_path / "m.onnx")], ["benchmark", other],
                 ["convert", "to-hf", other, str(tmp_path / "hf2")], ["serve", other, "--port", "0"]):  # fmt: skip
        capsys.readouterr()
        assert main(argv) == 2, argv[0]
        err = [
            line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("maskformer")
        ]
        assert len(err) == 1 and other in err[0] and url in err[0] and "download failed" in err[0], (argv[0], err)
    assert len(mirror.requests) == 1
    capsys.readouterr()
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(zoo_table())
    assert [line.split()[-1] for line in lines if line.startswith(R50 + " ")] == ["yes"]
    assert sum(line.endswith("yes") for line in lines) == 1
    at = lines[0].index("backbone")  # every row's backbone starts under its heading (ade20k-150-panoptic pushed it)
    assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines[1:])


def test_a_local_zoo_pkl_is_converted_with_the_tables_config(
    mirror: _Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    config = _tiny_zoo_config(tmp_path, monkeypatch)
    local = tmp_path / "downloads" / zoo_table()[R50].file_name
    local.parent.mkdir()
    save_pkl({"model": _original_layout(config)}, local)
    model = maskformer.from_pretrained(local)
    assert len(list((tmp_path / "cache" / "local").glob("*.pt"))) == 1 and not mirror.requests
    # the file is not the zoo name's weights: another file of the same name gives its own (it gave the first's), and
    # the name itself is not cached by it (`maskformer models` said "yes")
    assert not (tmp_path / "cache" / "zoo" / R50 / "model.pt").exists()
    other = tmp_path / "elsewhere" / local.name
    other.parent.mkdir()
    save_pkl({"model": {k: v * 2 if v.dtype == np.float32 else v for k, v in _original_layout(config).items()}}, other)
    doubled = maskformer.from_pretrained(other).state_dict()
    assert all(
        torch.equal(2 * a, b) for a, b in zip(model.state_dict().values(), doubled.values()) if a.is_floating_point()
    )
    assert main(["convert", "detectron2", str(local), str(tmp_path / "o.pt")]) == 0  # no --config: the table's
    assert "maskformer_R50_bs16_160k.yaml" in capsys.readouterr().out
    again = maskformer.load_model(tmp_path / "o.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    save_pkl({"model": _original_layout(config)}, tmp_path / "model_final_unknown.pkl")
    with pytest.raises(CheckpointError, match="convert detectron2"):
        maskformer.from_pretrained(tmp_path / "model_final_unknown.pkl")  # not in the table: which config? say so


@pytest.mark.parametrize(
    "damage", ["truncated", "cut pickle", "bytes changed", "not a pickle", "not a pickle, right md5", "missing"]
)
def test_a_bad_download_is_one_line_and_caches_nothing(mirror: _Mirror, tmp_path: Path, capsys, damage: str) -> None:
    import maskformer.zoo as zoo

    mirror.monkeypatch.setattr(zoo, "DEFAULT_ZOO_URL", mirror.url)  # served as the zoo itself (md5s are binding)
    mirror.monkeypatch.delenv("MASKFORMER_ZOO_URL")
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    entry = zoo_table()[name]
    if damage == "truncated":
        mirror.truncate.add(_publish(mirror, name, {"x": np.zeros(1000, np.float32)}))
    elif damage in ("cut pickle", "bytes changed"):  # complete as far as HTTP can tell (Content-Length of the file)
        file = mirror.root / _publish(mirror, name, {"x": np.arange(1000, dtype=np.float32)}).lstrip("/")
        data = bytearray(file.read_bytes())
        if damage == "cut pickle":
            del data[-100:]
        else:  # the same length, a few weights' bytes flipped (loads fine: only the md5 in its name tells)
            mid = len(data) // 2
            data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
        file.write_bytes(bytes(data))
    elif damage == "not a pickle":
        (mirror.root / entry.path).parent.mkdir(parents=True)
        (mirror.root / entry.path).write_text("<html>not found</html>")
    elif damage == "not a pickle, right md5":  # (the md5 fits its name: the unpickler still refuses it)
        _serve(mirror, name, b"<html>not found</html>")
    entry = zoo.zoo_table()[name]
    with pytest.raises(CheckpointError) as info:
        maskformer.from_pretrained(name)
    text = str(info.value)
    assert name in text and zoo_url(entry) in text and "\n" not in text
    unusable, corrupt = "not a usable checkpoint", "the download is corrupt (its md5 begins"
    expected = {"truncated": "truncated", "cut pickle": corrupt, "bytes changed": corrupt, "not a pickle": corrupt,
                "not a pickle, right md5": unusable, "missing": "HTTP 404"}  # fmt: skip
    assert expected[damage] in text, text
    assert ".download." not in text  # (the deleted temporary file's path was in it)
    cache = tmp_path / "cache"
    assert not cache.exists() or not list(cache.iterdir())  # no file, and no empty zoo/ade20k-150/ folders either
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", name, str(image), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # (a progress bar may come first)
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("maskformer")]
    assert len(errors) == 1 and name in errors[0] and "Traceback" not in err


def test_a_mirrors_own_file_under_a_zoo_name_is_used_with_a_note(mirror: _Mirror, tmp_path: Path, capsys) -> None:
    """A mirror (MASKFORMER_ZOO_URL) may hold its own files under the zoo's names (fine-tuned, re-exported): their
    md5 is not the name's, which is said in a note, and the file is used."""
    name = R50
    entry = zoo_table()[name]
    config = _tiny_zoo_config(tmp_path, mirror.monkeypatch)
    (mirror.root / entry.path).parent.mkdir(parents=True)
    save_pkl({"model": _original_layout(config)}, mirror.root / entry.path)
    model = maskformer.from_pretrained(name)
    assert model.cfg.model.num_queries == 4
    err = capsys.readouterr().err
    assert f"maskformer: note: {name}: {zoo_url(entry)} is not the released file (its md5 begins" in err, err
    # and later: every use says it again, and `maskformer models` marks it (it showed the released model's score)
    maskformer.from_pretrained(name)
    err = capsys.readouterr().err
    assert f"maskformer: note: {name}: the cached copy came from {zoo_url(entry)}, not the released file" in err, err
    assert main(["models", "--json"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["name"] == name]
    assert row["cached"] and row["cached_from_mirror"]
    assert main(["models"]) == 0
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(name + " ")]
    assert line.endswith("  mirror"), line


def test_junk_from_a_mirror_is_one_error_line_without_the_mirror_note(mirror: _Mirror, tmp_path: Path, capsys) -> None:
    """A mirror (MASKFORMER_ZOO_URL) answering with an HTML page under a zoo name printed the note "...; using the
    mirror's" before the error that the file cannot be used: two lines, the first one wrong."""
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    entry = zoo_table()[name]
    (mirror.root / entry.path).parent.mkdir(parents=True)
    (mirror.root / entry.path).write_text("<html>not found</html>")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", name, str(image), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("maskformer")]
    assert len(lines) == 1 and "not a usable checkpoint" in lines[0] and "note" not in err, err
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("configs", ["missing", "empty"])
def test_without_the_zoos_config_nothing_is_downloaded(mirror: _Mirror, tmp_path: Path, capsys, configs: str) -> None:
    """With no configs folder (a non-editable install), a zoo name downloaded the whole file, threw it away and called
    it "not a usable checkpoint"; a MASKFORMER_CONFIGS that pointed nowhere was ignored without a word."""
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    _publish(mirror, name, {"x": np.zeros(10, np.float32)})
    folder = tmp_path / ("nowhere" if configs == "missing" else "configs")
    if configs == "empty":
        folder.mkdir()
    mirror.monkeypatch.setenv("MASKFORMER_CONFIGS", str(folder))
    capsys.readouterr()
    assert main(["info", name, "--no-flops"]) == 2
    err = capsys.readouterr().err.strip()
    want = f"MASKFORMER_CONFIGS={folder}: not a folder" if configs == "missing" else f"is not in {folder}: set MASKF"
    assert len(err.splitlines()) == 1 and want in err and "usable" not in err, err
    assert mirror.requests == []  # nothing was downloaded
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pkl"))


def test_a_zoo_config_path_works_from_any_folder_with_maskformer_configs(tmp_path: Path, monkeypatch, capsys) -> None:
    """``maskformer train ade20k-150/....yaml`` (as the zoo names its configs) outside a checkout said "config file
    not found" although MASKFORMER_CONFIGS was set; ``benchmark`` took the same .yaml for a zoo name and downloaded."""
    monkeypatch.setenv("MASKFORMER_CONFIGS", str(CONFIGS))
    monkeypatch.setenv("MASKFORMER_ZOO_URL", "http://127.0.0.1:9/")  # (a download would fail at once)
    monkeypatch.chdir(tmp_path)
    assert main(["info", "ade20k-150/maskformer_R50_bs16_160k.yaml", "--no-flops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 41_254_743
    assert main(["benchmark", "ade20k-150/no_such_config.yaml", "--reps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_config.yaml: config file not found" in err, err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device whose writes fail: disk full)")
def test_a_full_cache_during_a_download_is_a_write_error_not_the_networks(
    mirror: _Mirror, tmp_path: Path, capsys
) -> None:
    """A download onto a full MASKFORMER_CACHE said "download failed (No space left on device); without internet,
    ... set MASKFORMER_ZOO_URL to a mirror", exit 2: the network blamed for this machine's disk."""
    from maskformer import fetch

    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    _publish(mirror, name, {"x": np.zeros(1000, np.float32)})
    mirror.monkeypatch.setattr(fetch._Local, "__init__", lambda self, dest: setattr(self, "dest", Path("/dev/full")))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", name, str(image), "--output-dir", str(tmp_path / "o")]) == 1
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("maskf")]
    cache = tmp_path / "cache" / "zoo" / name
    assert len(err) == 1 and f"{cache}: No space left on device" in err[0] and "internet" not in err[0], err


def test_a_stalled_download_says_how_long_it_waited(mirror: _Mirror, tmp_path: Path, monkeypatch) -> None:
    from maskformer import fetch, zoo

    monkeypatch.setattr(fetch, "TIMEOUT", 1.0)
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    mirror.stall.add(_publish(mirror, name, {"x": np.zeros(300_000, np.float32)}))
    with pytest.raises(
        CheckpointError,
        match=r"download failed \(no data for 1 s, timed out\); check the mirror MASKFORMER_ZOO_URL=http://127\.0\.0"
        r"\.1:\d+, or give the file itself$",
    ):
        maskformer.from_pretrained(name)  # (it said "set MASKFORMER_ZOO_URL to a mirror", the one that stalled)
    monkeypatch.delenv("MASKFORMER_ZOO_URL")  # the default address stalling: a mirror is the advice
    monkeypatch.setattr(zoo, "DEFAULT_ZOO_URL", mirror.url)
    with pytest.raises(CheckpointError, match=r"without internet, give the file \w+\.pkl itself or set MASKFORMER_ZOO"):
        maskformer.from_pretrained(name)
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_a_damaged_cache_entry_says_it_is_the_cached_copy(tmp_path: Path, monkeypatch, capsys) -> None:
    """A truncated cached model.pt was named only as "model.pt: the file is truncated or corrupt"."""
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    cached = tmp_path / "cache" / "zoo" / name / "model.pt"
    cached.parent.mkdir(parents=True)
    torch.save({"x": torch.zeros(1000)}, cached)
    whole = cached.read_bytes()
    cached.write_bytes(whole[:-200])
    with pytest.raises(CheckpointError, match=rf"the cached copy of {name} is damaged .*delete it"):
        maskformer.from_pretrained(name)
    flipped = bytearray(whole)  # a changed byte inside the tensor's data: its checksum fails (said "copy it again")
    at = whole.index(bytes(4000)) + 2000
    flipped[at] ^= 0xFF
    cached.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=rf"the cached copy of {name} is damaged .*delete it"):
        maskformer.from_pretrained(name)
    # changed bytes in the archive's end record that Python's zipfile lets pass and torch does not (it said only
    # "the file is truncated or corrupt (incomplete archive)")
    flipped = bytearray(whole)
    flipped[-30] ^= 0xFF
    flipped[-29] ^= 0xFF
    cached.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=rf"the cached copy of {name} is damaged .*delete it"):
        maskformer.from_pretrained(name)
    assert main(["models", "--json"]) == 0  # (it said cached: yes)
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["name"] == name]
    assert not row["cached"] and row["cached_damaged"]


def test_a_cache_folder_given_with_a_tilde_is_in_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    """MASKFORMER_CACHE='~/mf' (quoted in a unit file or .env: the shell does not expand it) made a folder named "~"
    in the current folder."""
    from maskformer import zoo

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MASKFORMER_CACHE", "~/mf")
    assert zoo.cache_dir() == tmp_path / "home" / "mf"
    monkeypatch.setenv("MASKFORMER_CONFIGS", "~/configs")
    with pytest.raises(CheckpointError, match=r"MASKFORMER_CONFIGS=\S+/home/configs: not a folder"):
        zoo._config_folders()
    (tmp_path / "home" / "configs").mkdir(parents=True)
    assert zoo._config_folders() == [tmp_path / "home" / "configs"]


def test_a_redirect_loop_and_a_mirror_without_its_scheme_are_one_line(mirror: _Mirror, tmp_path: Path) -> None:
    """urllib's reason for a redirect loop is three lines: only "(HTTP 302 The HTTP server returned ..." was shown,
    without its end or the advice; a mirror given as a folder said only "unknown url type"."""
    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    mirror.loop.add(_publish(mirror, name, {"x": np.zeros(10, np.float32)}))
    with pytest.raises(CheckpointError) as looped:
        maskformer.from_pretrained(name)
    text = str(looped.value)
    assert "\n" not in text and "(HTTP 302 " in text and text.endswith("or give the file itself"), text
    mirror.monkeypatch.setenv("MASKFORMER_ZOO_URL", str(mirror.root))
    with pytest.raises(CheckpointError, match=r"a mirror is an http://, https:// or file:///folder address\)"):
        maskformer.from_pretrained(name)


def test_names_that_are_nearly_right_or_not_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo of a listed name that looks like a Hub id was asked of the Hub and said only that (no suggestion); a
    pasted leading space sent the zoo name to the Hub; None and "" were looked up as files."""
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # (the Hub is not asked: its empty cache answers)
    monkeypatch.setenv("MASKFORMER_ZOO_URL", "http://127.0.0.1:9")  # (a download fails at once)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"did you mean ade20k-150/maskformer_R50_bs16_160k\? `maskformer models"):
        maskformer.from_pretrained("ade20k/maskformer_R50_bs16_160k")
    with pytest.raises(CheckpointError, match=r"did you mean facebook/maskformer-swin-tiny-ade\?"):
        maskformer.from_pretrained("facebook/maskformer-swin-tiny-adee")
    with pytest.raises(CheckpointError) as listed:  # (a listed Hub id the Hub did not give: it suggested itself)
        maskformer.from_pretrained("facebook/maskformer-swin-tiny-ade")
    assert str(listed.value).startswith("facebook/maskformer-swin-tiny-ade") and "did you mean" not in str(listed.value)
    with pytest.raises(CheckpointError, match=r"^ade20k-150/maskformer_R50_bs16_160k: http://127.0.0.1:9/"):
        maskformer.from_pretrained(" ade20k-150/maskformer_R50_bs16_160k")  # (the zoo's name: downloaded)
    with pytest.raises(CheckpointError, match="an empty model name"):
        maskformer.from_pretrained("")
    for wrong in (None, 123):
        with pytest.raises(TypeError, match="a model is a name, Hub id or path"):
            maskformer.from_pretrained(wrong)


def test_unknown_names_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="maskformer models"):
        maskformer.from_pretrained("ade20k-150/no_such_model")
    with pytest.raises(CheckpointError, match="config.json"):
        maskformer.from_pretrained(tmp_path)  # a folder that is not a transformers folder
    # a typo in a local path was looked up on the Hub ("Name or service not known"); a run folder was "without
    # config.json"
    (tmp_path / "runs" / "long").mkdir(parents=True)
    (tmp_path / "runs" / "long" / "model_final.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"runs/lng: no such file or folder \(did you mean runs/long\?\)"):
        maskformer.from_pretrained("runs/lng")
    with pytest.raises(CheckpointError, match="a training run's folder: give its checkpoint, e.g. runs/long/model_fi"):
        maskformer.from_pretrained("runs/long")
    with pytest.raises(CheckpointError, match=r"did you mean runs/long/model_final.pt\?\)$"):
        maskformer.from_pretrained("runs/long/model_finl.pt")


def _tiny_hf_config(transformers):
    """A transformers MaskFormerConfig small enough to build in a test: ResNet of 4 blocks, 1 decoder layer,
    classes cat and dog."""
    return transformers.MaskFormerConfig(
        backbone_config={"model_type": "resnet", "depths": [1, 1, 1, 1], "hidden_sizes": [32, 64, 128, 256],
                         "embedding_size": 16, "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        decoder_config={"model_type": "detr", "decoder_layers": 1, "d_model": 32, "decoder_attention_heads": 2,
                        "decoder_ffn_dim": 64, "num_queries": 5},
        fpn_feature_size=32, mask_feature_size=32, id2label={0: "cat", 1: "dog"},
    )  # fmt: skip


def test_hub_id_from_a_prepopulated_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    config = _tiny_hf_config(transformers)
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
    # the same folder given as a path (a save_pretrained folder): converted once into the cache, then reused
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "c"))
    folder = repo / "snapshots" / revision
    with torch.no_grad():
        logits = maskformer.from_pretrained(folder)(x)["pred_logits"]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    [converted] = (tmp_path / "c" / "local").glob("*.pt")
    stamp = converted.stat().st_mtime_ns
    assert resolve_model(folder) == converted and converted.stat().st_mtime_ns == stamp
    # a changed folder is converted again and replaces its cache entry (one per folder; they piled up before)
    os.utime(folder / "config.json", ns=(stamp + 10**9, stamp + 10**9))
    again = resolve_model(folder)
    assert again != converted and list((tmp_path / "c" / "local").glob("*.pt")) == [again]
    # writing the transformers folder onto itself is refused, --overwrite or not (its cache entry is not the input)
    from maskformer.cli import main

    assert main(["convert", "to-hf", str(folder), str(folder), "--overwrite"]) == 2
    assert (folder / "config.json").is_file()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    missing = subprocess.run([sys.executable, "-m", "maskformer.cli", "predict", "tiny-org/absent", "x.png",
                              "--output-dir", "o"], env=env, cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "tiny-org/absent" in missing.stderr and "Traceback" not in missing.stderr
    assert (
        missing.stderr.strip().endswith("(save_pretrained) instead")
        and not (tmp_path / "c" / "hub" / "tiny-org" / "absent").exists()
    )


def test_hub_id_from_a_server_then_from_the_cache_when_the_hub_does_not_answer(tmp_path: Path) -> None:
    """A Hub id is fetched from a Hub (a stand-in on 127.0.0.1), converted and cached; an endpoint that accepts
    connections and never answers ends after huggingface_hub's metadata timeout: from its cache when the snapshot
    is there, else in one line (before, huggingface_hub's repo lookup waited for good)."""
    import socket

    from fake_hub import FakeHub

    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    config = _tiny_hf_config(transformers)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path / "repo")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DISABLE_TELEMETRY="1")

    def predict(model: str, endpoint: str, cache: str) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "maskformer.cli", "predict", model, "x.png", "--output-dir", f"out-{cache}"]
        run_env = {**env, "HF_ENDPOINT": endpoint, "MASKFORMER_CACHE": cache}
        return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=run_env)

    hub = FakeHub({"tiny-org/maskformer-tiny": tmp_path / "repo"})
    try:
        run = predict("tiny-org/maskformer-tiny", hub.url, "c1")
    finally:
        hub.stop()
    assert run.returncode == 0, run.stderr
    assert f"GET /tiny-org/maskformer-tiny/resolve/{SHA}/model.safetensors" in hub.requests, hub.requests
    assert (tmp_path / "c1" / "hub" / "tiny-org" / "maskformer-tiny" / "model.pt").is_file()
    silent = socket.socket()  # the kernel completes the handshakes; nobody ever reads or answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        start = time.monotonic()
        cached = predict("tiny-org/maskformer-tiny", dead, "c2")  # our cache is empty; huggingface_hub's is not
        missing = predict("tiny-org/absent", dead, "c3")
        seconds = time.monotonic() - start
    finally:
        silent.close()
    assert cached.returncode == 0, cached.stderr
    assert (tmp_path / "c2" / "hub" / "tiny-org" / "maskformer-tiny" / "model.pt").is_file()
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].endswith("tiny-org/absent: not a file or folder here, and as a Hub"
                                                            " id it could not be fetched from the Hub nor "
                                                            "found in its cache (no answer within 1 s); without "
                                                            "internet, give a folder of its files (save_pretrained) "
                                                            "instead")  # fmt: skip
    assert seconds < 100  # bounded (the subprocess timeout would raise first if a call hung)


def test_sigterm_during_a_download_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while a model is being fetched acts as Ctrl-C: the partial files are removed (the default action
    would end the process at once and leave them in MASKFORMER_CACHE for good), and the handler is restored."""
    import signal

    from maskformer import zoo

    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    out = zoo.cache_dir() / "zoo" / "some" / "model.pt"
    out.parent.mkdir(parents=True)

    def make(tmp: Path) -> None:
        (out.parent / ".download.x").mkdir()
        (out.parent / ".download.x" / "part.pkl").write_bytes(b"half")
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # (the signal arrives first)

    def make_in_tempdir(tmp: Path) -> None:
        import shutil

        try:
            make(tmp)
        finally:
            shutil.rmtree(
                out.parent / ".download.x", ignore_errors=True
            )  # as _download_and_convert's TemporaryDirectory

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        zoo._write(out, make_in_tempdir, what="some")
    assert not (tmp_path / "cache" / "zoo").exists()
    assert signal.getsignal(signal.SIGTERM) is before


def test_hub_ids_of_res640_recipes_keep_the_recipes_test_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """facebook/maskformer-swin-base-ade was converted from the res640 recipe (test 640 / 2560), but a Hub folder
    was given ADE20K's defaults (512 / 2048): the same weights as the zoo name predicted 4.9 % other labels."""
    transformers = pytest.importorskip("transformers")
    from maskformer import fetch
    from maskformer.data import load_meta
    from maskformer.engine.checkpoint import load_checkpoint

    config = _tiny_hf_config(transformers)
    config.id2label = dict(enumerate(load_meta("ade20k_150").classes))
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path / "snapshot")
    monkeypatch.setattr(fetch, "hub_snapshot", lambda repo_id: tmp_path / "snapshot")
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "c"))
    sizes = {}
    for name in ("facebook/maskformer-swin-base-ade", "facebook/maskformer-swin-tiny-ade"):
        test = load_checkpoint(resolve_model(name))["config"]["test"]
        sizes[name] = (test["min_size"], test["max_size"], test["tta_min_sizes"][-1])
    assert sizes == {"facebook/maskformer-swin-base-ade": (640, 2560, 1120),
                     "facebook/maskformer-swin-tiny-ade": (512, 2048, 896)}  # fmt: skip


def test_convert_hf_with_a_config_of_another_class_count_is_refused(tmp_path: Path, capsys) -> None:
    """A 2-class transformers folder converted with the 19-class Cityscapes config exited 0: the checkpoint said
    data.dataset=cityscapes over 2 classes, with generic colours and Cityscapes' test sizes."""
    transformers = pytest.importorskip("transformers")
    from conftest import CONFIGS
    from maskformer.cli import main

    transformers.MaskFormerForInstanceSegmentation(_tiny_hf_config(transformers)).save_pretrained(tmp_path / "hf")
    capsys.readouterr()  # (transformers' own progress bar)
    config = CONFIGS / "cityscapes" / "maskformer_R101c_bs16_90k.yaml"
    assert main(["convert", "hf", str(tmp_path / "hf"), str(tmp_path / "out.pt"), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maskformer convert: error: ") and len(err.splitlines()) == 1, err
    assert "model.num_classes is 19 (data.dataset=cityscapes)" in err and "has 2 classes" in err, err
    assert not (tmp_path / "out.pt").exists()


def test_convert_hf_with_a_config_of_another_architecture_is_refused(tmp_path: Path, capsys) -> None:
    """The architecture comes from config.json; a --config of another model (same class count) exited 0 with the
    folder's ResNet under the other config's name, solver and test settings."""
    transformers = pytest.importorskip("transformers")
    from maskformer.engine.checkpoint import load_model_and_config

    transformers.MaskFormerForInstanceSegmentation(_tiny_hf_config(transformers)).save_pretrained(tmp_path / "hf")
    capsys.readouterr()
    (tmp_path / "other.yaml").write_text(
        json.dumps({"_base_": str(CONFIGS / "demo.yaml"), "model": {"num_classes": 2}})
    )
    argv = ["convert", "hf", str(tmp_path / "hf"), str(tmp_path / "out.pt"), "--config"]
    assert main([*argv, str(tmp_path / "other.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.yaml: describes another model than" in err, err
    assert not (tmp_path / "out.pt").exists()
    # a config of the folder's own architecture is taken
    assert main(["convert", "hf", str(tmp_path / "hf"), str(tmp_path / "a.pt")]) == 0
    save_config(load_model_and_config(tmp_path / "a.pt")[1], tmp_path / "same.yaml")
    assert main([*argv, str(tmp_path / "same.yaml")]) == 0


def test_a_refusal_about_a_zoo_names_cached_copy_names_the_model(tmp_path: Path, monkeypatch, capsys) -> None:
    """``convert to-hf cityscapes/maskformer_R101c_bs16_90k`` named ``.../cache/zoo/.../model.pt`` in its error."""
    from conftest import DEMO_YAML
    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "c"))
    name = "cityscapes/maskformer_R101c_bs16_90k"
    cached = tmp_path / "c" / "zoo" / name / "model.pt"
    cached.parent.mkdir(parents=True)
    cfg = maskformer.load_config(DEMO_YAML, ["model.backbone.stem=deeplab"])
    save_checkpoint(cached, cfg=cfg, model=maskformer.build_model(cfg))
    assert resolve_model(name) == cached
    assert main(["convert", "to-hf", name, str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"maskformer convert: error: {name}: model.") and str(cached) not in err, err
    assert "has no transformers equivalent" in err, err


def test_a_hub_ids_new_revision_and_a_folders_swapped_weights_are_converted_again(tmp_path: Path) -> None:
    """A Hub id's converted copy was used for good once made: weights pushed to the repo later were never seen (it is
    now kept with the commit it came from). A save_pretrained folder was keyed by its newest file time: weights
    copied in with an older time (`cp -p`, `rsync -a`, `tar x`) kept the old conversion."""
    from fake_hub import FakeHub

    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    config = _tiny_hf_config(transformers)
    torch.manual_seed(0)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path / "repo")
    torch.manual_seed(1)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path / "v2")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), MASKFORMER_CACHE=str(tmp_path / "c"), HF_HUB_DISABLE_TELEMETRY="1")
    probe = ("import sys, maskformer\n"
             "m = maskformer.from_pretrained(sys.argv[1])\n"
             "print(round(float(m.predictor.class_embed.weight.sum()), 4))\n")  # fmt: skip

    def weights_sum(model: str, endpoint: str = "") -> str:
        run = subprocess.run([sys.executable, "-c", probe, model], env={**env, "HF_ENDPOINT": endpoint}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    hub = FakeHub({"tiny-org/maskformer-tiny": tmp_path / "repo"})
    try:
        first = weights_sum("tiny-org/maskformer-tiny", hub.url)
        for f in (tmp_path / "v2").iterdir():  # the owner pushes new weights: a new commit
            (tmp_path / "repo" / f.name).write_bytes(f.read_bytes())
        hub.sha = "fedcba9876543210fedcba9876543210fedcba98"
        second = weights_sum("tiny-org/maskformer-tiny", hub.url)
    finally:
        hub.stop()
    assert second != first
    assert (tmp_path / "c" / "hub" / "tiny-org" / "maskformer-tiny" / "revision").read_text() == hub.sha
    folder = tmp_path / "folder"
    folder.mkdir()
    for f in (tmp_path / "v2").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    os.utime(folder / "model.safetensors", (1e9, 1e9))  # older than config.json
    assert weights_sum(str(folder)) == second
    torch.manual_seed(0)
    transformers.MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path / "v1")
    (folder / "model.safetensors").write_bytes((tmp_path / "v1" / "model.safetensors").read_bytes())
    os.utime(folder / "model.safetensors", (1e9 + 1, 1e9 + 1))  # still older than config.json: copied with its time
    assert weights_sum(str(folder)) == first


def test_what_a_killed_download_left_is_removed_by_the_next_one(mirror: _Mirror, tmp_path: Path) -> None:
    """A hard kill (OOM, SIGKILL) leaves the partial download and temporary checkpoint: the next use of the cache
    folder removes them once they are stale, and leaves a download another process is making now."""
    import maskformer.zoo as zoo

    name = "ade20k-150/per_pixel_baseline_R50_bs16_160k"
    folder = tmp_path / "cache" / "zoo" / name
    (folder / ".download.killed").mkdir(parents=True)
    (folder / ".download.killed" / "model_final_1043f3.pkl").write_bytes(b"x" * 1000)
    (folder / ".model.pt.abc.pt.tmp").write_bytes(b"")
    (folder / ".download.running").mkdir()
    (folder / ".download.running" / "model_final_1043f3.pkl").write_bytes(b"y")
    old = time.time() - zoo._STALE_SECONDS - 60
    for p in [folder / ".download.killed", folder / ".download.killed" / "model_final_1043f3.pkl",
              folder / ".model.pt.abc.pt.tmp", folder / ".download.running"]:  # fmt: skip
        os.utime(p, (old, old))
    _publish(mirror, name, {"x": np.zeros(10, np.float32)})
    with pytest.raises(CheckpointError, match="not a usable checkpoint"):  # (not a model: the sweep ran before)
        maskformer.from_pretrained(name)
    assert sorted(p.name for p in folder.iterdir()) == [".download.running"]


def test_what_killed_downloads_left_beside_a_cached_model_is_removed_too(tmp_path: Path, monkeypatch) -> None:
    """Leftovers of downloads killed before a later one completed stayed for good (474 MB): the sweep ran only when
    the model was not cached yet."""
    import maskformer.zoo as zoo
    from maskformer.engine.checkpoint import save_checkpoint

    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    config = _tiny_zoo_config(tmp_path, monkeypatch)
    folder = tmp_path / "cache" / "zoo" / R50
    folder.mkdir(parents=True)
    save_checkpoint(folder / "model.pt", cfg=maskformer.load_config(config),
                    model=maskformer.build_model(maskformer.load_config(config)))  # fmt: skip
    (folder / ".download.killed").mkdir()
    (folder / ".download.killed" / "model_final_d8dbeb.pkl").write_bytes(b"x" * 1000)
    old = time.time() - zoo._STALE_SECONDS - 60
    for p in [folder / ".download.killed", folder / ".download.killed" / "model_final_d8dbeb.pkl"]:
        os.utime(p, (old, old))
    assert maskformer.from_pretrained(R50).cfg.model.num_queries == 4
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]


def test_an_unwritable_cache_is_one_line_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformers folder needs its converted copy cached: a cache that cannot be written is a CheckpointError
    naming MASKFORMER_CACHE (an OSError with a traceback from the Python API before)."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "file" / "cache"))  # (root may write a read-only folder)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"^.*hf: the converted copy cannot be cached in .* set MASKFORMER_CACHE"):
        maskformer.from_pretrained(folder)


def test_a_cache_linked_to_a_missing_folder_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MASKFORMER_CACHE a symlink whose target is gone: the line said only "(File exists)"; now it names the link."""
    (tmp_path / "cache").symlink_to(tmp_path / "gone")
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    why = r"cache: a symbolic link to .*gone, which does not exist\): set MASKFORMER_CACHE"
    with pytest.raises(CheckpointError, match=why):
        maskformer.from_pretrained(folder)


def test_a_damaged_cached_conversion_of_a_local_pkl_is_made_again(tmp_path: Path, monkeypatch) -> None:
    config = _tiny_zoo_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    local = tmp_path / zoo_table()[R50].file_name
    save_pkl({"model": _original_layout(config)}, local)
    first = maskformer.from_pretrained(local).state_dict()
    [cached] = (tmp_path / "cache" / "local").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut, as a full disk or a kill during a copy leaves it
    again = maskformer.from_pretrained(local).state_dict()
    assert all(torch.equal(a, b) for a, b in zip(first.values(), again.values()))
    assert [p.name for p in (tmp_path / "cache" / "local").iterdir()] == [cached.name]


def test_a_local_pkl_rewritten_with_its_old_time_and_size_is_converted_again(tmp_path: Path, monkeypatch) -> None:
    """The cache key of a local .pkl was its modification time and size: new weights of the same architecture copied
    over it keeping the old time (`cp -p`, `rsync -a`) gave the old conversion, silently."""
    import os

    config = _tiny_zoo_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MASKFORMER_CACHE", str(tmp_path / "cache"))
    local = tmp_path / zoo_table()[R50].file_name
    save_pkl({"model": _original_layout(config)}, local)
    first = maskformer.from_pretrained(local).state_dict()
    before = local.stat()
    doubled = {k: v * 2 if v.dtype == np.float32 else v for k, v in _original_layout(config).items()}
    save_pkl({"model": doubled}, tmp_path / "new.pkl")
    assert (tmp_path / "new.pkl").stat().st_size == before.st_size
    local.write_bytes((tmp_path / "new.pkl").read_bytes())
    os.utime(local, ns=(before.st_atime_ns, before.st_mtime_ns))  # (as cp -p leaves it)
    again = maskformer.from_pretrained(local).state_dict()
    changed = [k for k in first if first[k].is_floating_point() and first[k].abs().sum() > 0]
    assert changed and all(torch.equal(again[k], 2 * first[k]) for k in changed)


def test_a_damaged_hub_conversion_is_made_again_and_bad_hub_weights_name_the_id(tmp_path: Path) -> None:
    """A damaged cached conversion of a Hub id said "delete it" though its snapshot was in the Hub cache (a local
    folder's is made again); weights the Hub gave that cannot be read were named only by their Hub-cache path."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    torch.manual_seed(0)
    hf = transformers.MaskFormerForInstanceSegmentation(_tiny_hf_config(transformers)).eval()
    revision = "0123456789abcdef0123456789abcdef01234567"
    for name in ("maskformer-tiny", "maskformer-cut"):
        repo = tmp_path / "hf" / "hub" / f"models--tiny-org--{name}"
        hf.save_pretrained(repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)
    weights = tmp_path / "hf" / "hub" / "models--tiny-org--maskformer-cut" / "snapshots" / revision
    weights = weights / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["MASKFORMER_CACHE"] = str(tmp_path / "c")
    code = "import maskformer, sys\nprint(maskformer.from_pretrained(sys.argv[1]).cfg.model.num_classes)\n"

    def load(repo_id: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, repo_id], env=env, capture_output=True, text=True)

    assert load("tiny-org/maskformer-tiny").stdout.strip() == "2"
    cached = tmp_path / "c" / "hub" / "tiny-org" / "maskformer-tiny" / "model.pt"
    cached.write_bytes(cached.read_bytes()[:1000])
    run = load("tiny-org/maskformer-tiny")
    assert run.returncode == 0 and run.stdout.strip() == "2", run.stderr
    run = load("tiny-org/maskformer-cut")
    assert run.returncode == 1 and "CheckpointError: tiny-org/maskformer-cut: " in run.stderr, run.stderr
    assert "model.safetensors" in run.stderr.strip().splitlines()[-1]
