"""Checkpoints that cannot be used are refused in one line that says why (QA walk of 2026-12-05)."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch

import maskformer
from conftest import CONFIGS
from maskformer.engine.checkpoint import load_checkpoint, load_model, save_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = maskformer.load_config(CONFIGS / "demo.yaml")
    model = maskformer.build_model(cfg)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    save_checkpoint(path, cfg=cfg, model=model, iteration=1)
    return path


def _rewrite(saved, tmp_path, change) -> str:
    state = torch.load(saved, weights_only=True)
    change(state)
    path = tmp_path / "changed.pt"
    torch.save(state, path)
    return str(path)


def test_non_finite_weights_are_refused_naming_a_tensor(saved, tmp_path):
    """A diverged run's weights predicted an all-zero label map with exit 0."""

    def poison(state):
        for v in state["model"].values():
            if v.is_floating_point():
                v.mul_(float("nan"))

    path = _rewrite(saved, tmp_path, poison)
    with pytest.raises(maskformer.CheckpointError, match=r"weights \S+ \(and \d+ more tensors\) hold NaN or infinite"):
        load_model(path)


def test_weights_that_do_not_fit_name_the_key_and_shapes(saved, tmp_path):
    """torch's message was cut to its first line, which names no key ("Error(s) in loading state_dict for ...:")."""
    first = next(iter(torch.load(saved, weights_only=True)["model"]))
    path = _rewrite(saved, tmp_path, lambda s: s["model"].pop(first))
    with pytest.raises(maskformer.CheckpointError, match=f"missing {first}"):
        load_model(path)
    path = _rewrite(saved, tmp_path, lambda s: s["model"].update(extra=torch.zeros(1)))
    with pytest.raises(maskformer.CheckpointError, match="unexpected extra"):
        load_model(path)

    def widen(state):
        state["model"][first] = torch.zeros(*[n + 1 for n in state["model"][first].shape])

    path = _rewrite(saved, tmp_path, widen)
    with pytest.raises(maskformer.CheckpointError, match=rf"{first} is \[.*\] in the file, \[.*\] in the model"):
        load_model(path)


def test_files_that_are_not_checkpoints_are_named_for_what_they_are(saved, tmp_path):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(b % 255 + 1 for b in os.urandom(4096)))  # binary without a zero byte
    with pytest.raises(maskformer.CheckpointError, match="not a torch checkpoint file"):
        load_checkpoint(noise)
    text = tmp_path / "notes.pt"
    text.write_text("weights: see the other folder\n" * 40)
    with pytest.raises(maskformer.CheckpointError, match="a text file"):
        load_checkpoint(text)
    path = _rewrite(saved, tmp_path, lambda s: s.pop("config"))
    with pytest.raises(maskformer.CheckpointError, match="holds no config"):
        load_model(path)
    code = tmp_path / "code.pt"
    with open(code, "wb") as f:  # a legacy pickle whose loading would call a function
        pickle.dump({"format": "x", "x": os.getcwd}, f, protocol=2)
    with pytest.raises(maskformer.CheckpointError, match="could run code") as err:
        load_checkpoint(code)
    assert "\n" not in str(err.value)
    with open(code, "wb") as f:  # pickle's default protocol: torch warned about it before the error (3 lines)
        pickle.dump({"format": "x", "x": os.getcwd}, f)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(maskformer.CheckpointError, match="could run code"):
            load_checkpoint(code)
    assert not said, [str(w.message) for w in said]


def test_eval_refuses_settings_that_would_not_reach_the_network(saved, tmp_path, capsys):
    """`eval --set model.num_queries=20` gave the unchanged model's metrics while model.cfg said 20 queries."""
    from maskformer.cli import main

    for key in ("model.num_queries=20", "solver.base_lr=0.1"):
        assert main(["eval", str(saved), "--set", key, "--output-dir", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--set {key.split('=')[0]}" in err[0] and "test." in err[0]
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_a_checkpoint_of_a_newer_format_is_refused(saved, tmp_path):
    """`version: 999` loaded as if it were this format."""
    path = _rewrite(saved, tmp_path, lambda s: s.update(version=999))
    with pytest.raises(maskformer.CheckpointError, match="format version 999, newer than this maskformer reads"):
        load_checkpoint(path)
    assert load_checkpoint(saved)["version"] == 1


def test_converters_refuse_non_finite_weights_and_write_nothing(tmp_path, capsys):
    """Every converter copied NaN weights with exit 0; the copy failed only where it was loaded, named as that copy
    (for a transformers folder: a file in the cache) and blamed on training."""
    from maskformer.cli import main

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["model.transformer_in_feature=res5"])  # (transformers' own)
    saved = tmp_path / "model.pt"
    save_checkpoint(saved, cfg=cfg, model=maskformer.build_model(cfg))
    good = tmp_path / "good"
    assert main(["convert", "to-hf", str(saved), str(good)]) == 0
    assert main(["convert", "to-detectron2", str(saved), str(tmp_path / "good.pkl")]) == 0

    def poison(state):
        state["model"]["predictor.class_embed.weight"][0, 0] = float("inf")

    bad = _rewrite(saved, tmp_path, poison)
    from safetensors.torch import load_file, save_file

    weights = load_file(good / "model.safetensors")
    name = next(k for k in weights if k.endswith("class_predictor.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, good / "model.safetensors", metadata={"format": "pt"})
    from maskformer.convert.pickle_io import load_pkl, save_pkl

    pkl = load_pkl(tmp_path / "good.pkl")
    next(v for k, v in pkl["model"].items() if k.endswith("class_embed.weight"))[0, 0] = float("nan")
    save_pkl(pkl, tmp_path / "bad.pkl")
    capsys.readouterr()
    runs = {
        str(good): ["convert", "hf", str(good), str(tmp_path / "a.pt")],
        bad: ["convert", "to-hf", bad, str(tmp_path / "b")],
        f"{bad}:": ["convert", "to-detectron2", bad, str(tmp_path / "c.pkl")],
        str(tmp_path / "bad.pkl"): ["convert", "detectron2", str(tmp_path / "bad.pkl"), str(tmp_path / "d.pt"),
                                    "--config", str(CONFIGS / "demo.yaml"), "--set",
                                    "model.transformer_in_feature=res5"],
    }  # fmt: skip
    for source, args in runs.items():
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"maskformer convert: error: {source.rstrip(':')}: weights ") and "NaN or inf" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pkl", "changed.pt", "good", "good.pkl", "model.pt"]


def test_a_checkpoint_with_a_changed_byte_is_refused_by_its_checksum(saved, tmp_path):
    """Bytes overwritten inside the weights (a bad copy, a disk error) loaded as other weights with exit 0: the
    archive's CRC-32 of each member is now checked."""
    import zipfile

    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        member = max(archive.infolist(), key=lambda m: m.file_size)  # the largest weight tensor
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    for i in range(start + 100, start + 116):  # (inside its data: the local header's extra may differ; aim deep)
        data[i] ^= 0x5A
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(maskformer.CheckpointError, match=r"flipped.pt: the file is damaged \(.* fails its checksum\)"):
        load_checkpoint(tmp_path / "flipped.pt")
