"""Checkpoints that cannot be used are refused in one line that says why (QA walk of 2026-12-05)."""

from __future__ import annotations

import os
import pickle

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
