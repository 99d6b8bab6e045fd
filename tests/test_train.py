"""Training engine: exact resume, atomic checkpoints, schedules, parameter groups, bad input at the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import maskformer
from conftest import CONFIGS
from maskformer.engine.checkpoint import load_checkpoint, load_model
from maskformer.engine.train import train
from maskformer.errors import ConfigError
from maskformer.optim import lr_factor, param_groups

TINY = [
    "train.batch_size=2",
    "train.log_period=1",
    "train.checkpoint_period=2",
    "train.eval_period=-1",
    "data.num_workers=0",
    "data.synthetic_image_size=64",
    "data.crop_size=[64,64]",
    "data.min_size_train=[48,64,80]",
    "data.color_aug_ssd=true",
    "model.dropout=0.1",
    "test.min_size=64",
]


def _losses(path) -> list[float]:
    return [json.loads(line)["loss"] for line in open(path) if '"loss"' in line]


def test_resume_is_exact(tmp_path):
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    train(cfg, output_dir=tmp_path / "a", progress=False)
    train(cfg, output_dir=tmp_path / "b", progress=False, stop_at=2)
    assert not (tmp_path / "b" / "model_final.pt").exists()
    assert load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["iteration"] == 2
    train(cfg, output_dir=tmp_path / "b", progress=False, resume=True)
    a, b = load_model(tmp_path / "a" / "model_final.pt"), load_model(tmp_path / "b" / "model_final.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert _losses(tmp_path / "a" / "metrics.jsonl") == _losses(tmp_path / "b" / "metrics.jsonl")
    assert len(_losses(tmp_path / "a" / "metrics.jsonl")) == 4


def test_an_evaluation_the_stop_cut_runs_again_on_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a mid-run evaluation: the checkpoint of that iteration is written before it, so the resumed run
    went on after it and metrics.jsonl never got that evaluation. It runs first now (and only when it is missing)."""
    import maskformer.engine.train as engine_train

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=6", "train.eval_period=2"])
    evaluate = engine_train._evaluate
    calls: list[int] = []

    def stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # (the evaluation at iteration 4)
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(engine_train, "_evaluate", stopped)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, output_dir=tmp_path, progress=False)
    monkeypatch.setattr(engine_train, "_evaluate", evaluate)
    capsys.readouterr()
    train(cfg, output_dir=tmp_path, progress=True, resume=True)
    assert "the evaluation at iteration 4 did not end before the run stopped: it runs now" in capsys.readouterr().err
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["iteration"] for r in lines if "eval" in r] == [2, 4, 6]
    # resumed again from 4 after that evaluation ended: it is not run twice
    train(cfg, output_dir=tmp_path / "b", progress=False, stop_at=4)
    capsys.readouterr()
    train(cfg, output_dir=tmp_path / "b", progress=True, resume=True)
    assert "runs now" not in capsys.readouterr().err
    lines = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["iteration"] for r in lines if "eval" in r] == [2, 4, 6]


def test_a_run_from_before_aspect_ratio_grouping_resumes(tmp_path, capsys):
    """A run an older version stopped (its config.yaml without data.aspect_ratio_grouping, its data stream saved
    ungrouped) was refused as "a damaged checkpoint_last.pt; start a new run", its path said twice: it resumes
    ungrouped, as it trained; the Python API, given grouping on, says how to resume it."""
    import yaml

    from maskformer.cli import main
    from maskformer.engine.checkpoint import atomic_torch_save
    from maskformer.errors import CheckpointError

    out = tmp_path / "old"
    plain = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4",
                                                             "data.aspect_ratio_grouping=false"])  # fmt: skip
    train(plain, output_dir=tmp_path / "whole", progress=False)  # (the old version's own whole run)
    train(plain, output_dir=out, progress=False, stop_at=2)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["data"]["aspect_ratio_grouping"]  # (the key did not exist then)
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    state = torch.load(out / "checkpoint_last.pt", weights_only=False)
    assert "grouped" not in state["data"]
    del state["config"]["data"]["aspect_ratio_grouping"]
    atomic_torch_save(state, out / "checkpoint_last.pt")
    grouped = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    with pytest.raises(CheckpointError, match="without aspect-ratio grouping: resume with --set data.aspect_ratio_"):
        train(grouped, output_dir=out, progress=False, resume=True)
    argv = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out), "--resume", "--quiet"]
    assert main([*argv, *[a for kv in TINY for a in ("--set", kv)]]) == 0, capsys.readouterr().err
    assert _losses(out / "metrics.jsonl") == _losses(tmp_path / "whole" / "metrics.jsonl")


def test_resume_with_max_iters_below_the_checkpoint_says_nothing_is_left(tmp_path, capsys):
    """Resuming a run stopped at iteration 2 with train.max_iters=1 only said the LR schedule now ended at 1, then
    wrote the iteration-2 model as final (exit 0): it now says no step is left and which model is final."""
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4", "train.eval_period=-1"])
    train(cfg, output_dir=tmp_path, progress=False, stop_at=2)
    capsys.readouterr()
    lower = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=1", "train.eval_period=-1"])
    train(lower, output_dir=tmp_path, progress=True, resume=True)
    err = capsys.readouterr().err
    assert "train.max_iters=1 (was 4) is not past the checkpoint's iteration 2: no step is left" in err, err
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 2


def test_resume_with_more_iterations_extends_the_schedule(tmp_path, capsys):
    """A finished 4-iteration run resumed with train.max_iters=6 trains 2 more steps whose LR follows the poly decay
    to iteration 6 (it used to raise a complex LR from the saved 4-iteration schedule); a checkpoint that does not
    fit the config (another model size, another dataset size) is one CheckpointError naming the file."""
    from maskformer.errors import CheckpointError

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    train(cfg, output_dir=tmp_path, progress=False)
    longer = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=6"])
    train(longer, output_dir=tmp_path, progress=True, resume=True)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if '"loss"' in line]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    s = cfg.solver
    decay = {"max_iters": 6, "power": s.poly_power, "warmup_iters": s.warmup_iters, "warmup_factor": s.warmup_factor}
    for r in rows[4:]:  # the LR logged at a step is the one it used: factor at iteration - 1 of the 6-step decay
        assert r["lr"] == pytest.approx(s.base_lr * lr_factor(r["iteration"] - 1, **decay), rel=1e-6)
    assert "now ends at train.max_iters=6 (was 4)" in capsys.readouterr().err
    bad = [
        ["model.hidden_dim=32"],  # a different transformer width: the weights do not fit
        ["data.synthetic_train_size=7"],  # another dataset size: the saved data stream does not fit
    ]
    for extra in bad:
        other = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=8", *extra])
        with pytest.raises(CheckpointError, match="checkpoint_last.pt") as e:
            train(other, output_dir=tmp_path, progress=False, resume=True)
        assert "\n" not in str(e.value), str(e.value)


def test_killed_during_checkpoint_write_leaves_previous_loadable(tmp_path):
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(CONFIGS / "demo.yaml")
    model = maskformer.build_model(cfg)
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(path, cfg=cfg, model=model, iteration=1)
    script = (
        "import torch, maskformer, sys\n"
        "from maskformer.engine.checkpoint import save_checkpoint\n"
        f"cfg = maskformer.load_config({str(CONFIGS / 'demo.yaml')!r})\n"
        "m = maskformer.build_model(cfg)\n"
        "print('ready', flush=True)\n"
        "for i in range(1000):\n"
        f"    save_checkpoint({str(path)!r}, cfg=cfg, model=m, iteration=2, blob=torch.randn(30_000_000))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # well inside one of the ~120 MB writes
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(path)  # the previous or a complete new one, never a torn file
    assert state["iteration"] in (1, 2)
    load_model(path)


def test_poly_and_warmup_schedule_values():
    assert lr_factor(0, max_iters=100) == 1.0
    assert lr_factor(50, max_iters=100) == pytest.approx(0.5**0.9)
    assert lr_factor(0, max_iters=100, warmup_iters=10, warmup_factor=1e-6) == pytest.approx(1e-6)
    w = 1e-6 * (1 - 0.5) + 0.5
    assert lr_factor(5, max_iters=100, warmup_iters=10, warmup_factor=1e-6) == pytest.approx(w * (1 - 0.05) ** 0.9)
    steps = {"schedule": "multistep", "steps": (30, 60), "gamma": 0.1}
    assert [lr_factor(i, max_iters=100, **steps) for i in (29, 30, 60)] == pytest.approx([1.0, 0.1, 0.01])


def test_parameter_groups_follow_the_original():
    swin = ["type=swin", "embed_dim=16", "depths=[1,1,1,1]", "num_heads=[1,1,1,1]"]
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [f"model.backbone.{s}" for s in swin])
    model = maskformer.build_model(cfg)
    merged = param_groups(model, base_lr=1.0, weight_decay=0.5, backbone_multiplier=0.1)
    groups = {name: g for g in merged for name in g["names"]}
    assert len({(g["lr"], g["weight_decay"]) for g in merged}) == len(merged) == 4
    assert groups["backbone.patch_embed.proj.weight"]["lr"] == 0.1
    assert groups["predictor.class_embed.weight"]["lr"] == 1.0
    assert groups["backbone.layers.0.blocks.0.attn.relative_position_bias_table"]["weight_decay"] == 0.0
    assert groups["backbone.norm0.weight"]["weight_decay"] == 0.0  # LayerNorm
    assert groups["pixel_decoder.layer_1.norm.weight"]["weight_decay"] == 0.0  # GroupNorm
    assert groups["predictor.query_embed.weight"]["weight_decay"] == 0.0  # embedding
    assert groups["predictor.class_embed.bias"]["weight_decay"] == 0.5  # biases keep weight decay
    assert len(groups) == sum(1 for _ in model.parameters())


def test_cli_bad_inputs_are_one_line(tmp_path, capsys, monkeypatch):
    """In process through ``cli.main`` (what the console script calls); one real process checks the exit code."""
    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    monkeypatch.chdir(tmp_path)
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["train.max_iters=1"])
    good = tmp_path / "good.pt"
    save_checkpoint(good, cfg=cfg, model=maskformer.build_model(cfg))
    cases = [
        ["train", str(CONFIGS / "ade20k-150/maskformer_R50_bs16_160k.yaml"), "--data-root", str(tmp_path / "nope")],
        ["train", str(CONFIGS / "demo.yaml"), "--set", "train.nope=1"],
        ["eval", str(bad_ckpt)],
        ["eval", str(tmp_path / "missing.pt")],
        ["predict", str(good), str(not_image), "--output-dir", str(tmp_path / "o")],
        ["predict", str(bad_ckpt), str(not_image), "--output-dir", str(tmp_path / "o")],
        ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path / "o"), "--resume"],
    ]
    for args in cases:
        assert main(args) == 2, args  # an exception other than the user errors would fail the test here
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"maskformer {args[0]}: error:"), (args, lines)
    assert not (tmp_path / "o").exists()  # (a --resume with nothing to resume wrote config.yaml there)
    for minutes in ("inf", "nan", "0"):  # inf and nan were refused as "config key 'train.max_minutes' ..."
        assert main(["demo", "--minutes", minutes, "--output-dir", str(tmp_path / "d")]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert lines == [f"maskformer demo: error: --minutes must be a positive number, got {float(minutes)}"], lines
    r = subprocess.run([sys.executable, "-m", "maskformer.cli", "eval", str(bad_ckpt)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "bad.pt" in r.stderr, r.stderr


def _all_commands() -> list[list[str]]:
    """Every command and sub-command of the CLI, as argv prefixes (``["convert", "to-hf"]``)."""
    import argparse

    from maskformer.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        found = [prefix] if prefix else []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found += walk(child, [*prefix, name])
        return found

    return walk(build_parser(), [])


def test_every_command_has_help_for_users(capsys):
    """``--help`` of every command and sub-command exits 0 with its usage, and reads as text for users: no reST
    markup (double backticks) and no module names of the source tree."""
    from maskformer.cli import main

    commands = _all_commands()
    assert len(commands) >= 17 and ["convert", "to-hf"] in commands and ["benchmark"] in commands
    for argv in commands:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: maskformer {' '.join(argv)}"), argv
        assert "``" not in out and "accelerate.fast_model" not in out, (argv, out)
    with pytest.raises(SystemExit) as e:  # (it answered "the following arguments are required: COMMAND")
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"maskformer {maskformer.__version__}\n"


def test_info_takes_a_trained_model_as_well_as_a_config(tmp_path, capsys):
    """``maskformer info MODEL`` counts the network the checkpoint's own config builds (here 7 queries and 3 classes,
    which no YAML in configs/ has); ``--set`` applies to that config; a bad key is one line."""
    import json

    from maskformer.build import build_meta
    from maskformer.cli import main
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["model.num_queries=7", "model.num_classes=3"])
    save_checkpoint(tmp_path / "m.pt", cfg=cfg, model=maskformer.build_model(cfg), iteration=5)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.pt"), "--no-flops", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    got = said["parameters"]
    assert got["total"] == sum(p.numel() for p in maskformer.build_model(cfg).parameters())
    # what the model is, from the checkpoint (info showed the counts alone)
    about = said["model"]
    assert about["queries"] == 7 and len(about["classes"]) == 3 and about["iteration"] == 5, about
    assert about["architecture"] == "MaskFormer" and about["dataset"] == cfg.data.dataset, about
    assert about["default_task"] == ("panoptic" if cfg.inference.panoptic_on else "semantic"), about
    assert about["things"] == [c for c, t in zip(about["classes"], build_meta(cfg).isthing) if t], about
    assert main(["info", str(tmp_path / "m.pt"), "--no-flops"]) == 0
    table = capsys.readouterr().out
    assert (
        "7 queries" in table and "classes     3 (" in table and "trained     5 iterations (train.max_iters " in table
    ), table
    assert main(["info", str(tmp_path / "m.pt"), "--no-flops", "--json", "--set", "model.num_queries=9"]) == 0
    nine = maskformer.build_model(
        maskformer.load_config(CONFIGS / "demo.yaml", ["model.num_queries=9", "model.num_classes=3"])
    )
    said = capsys.readouterr()
    assert json.loads(said.out)["parameters"]["total"] == sum(p.numel() for p in nine.parameters())
    assert "the network of the changed config is counted, not the one in" in said.err
    assert main(["info", str(tmp_path / "m.pt"), "--no-flops", "--set", "model.bogus=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.bogus" in err[0] and "m.pt" in err[0]
    # weights that do not fit the checkpoint's config are refused as predict refuses them (info printed the count of
    # a network the file does not hold)
    obj = torch.load(tmp_path / "m.pt", weights_only=False)
    obj["config"]["model"]["num_queries"] = 99
    torch.save(obj, tmp_path / "bad.pt")
    assert main(["info", str(tmp_path / "bad.pt"), "--no-flops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt: weights do not fit its config" in err[0], err


def test_info_lists_the_operators_under_the_graph_they_add_up_to(capsys):
    """The per-operator lines (of the original graph) were printed under the lean graph's line."""
    import re

    from maskformer.cli import main

    capsys.readouterr()
    assert main(["info", str(CONFIGS / "demo.yaml"), "--size", "64", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    graph = {k: i for i, line in enumerate(lines) for k in ("original", "lean") if line.strip().startswith(k)}
    total = lambda i: float(re.search(r"([\d.]+) G", lines[i])[1])  # noqa: E731
    operators = [total(i) for i in range(graph["original"] + 1, len(lines)) if i != graph["lean"]]
    assert graph["lean"] == len(lines) - 1 and len(operators) >= 3
    assert abs(sum(operators) - total(graph["original"])) <= 0.0005 * len(operators) + 0.01


def test_predictor_from_checkpoint_uses_the_checkpoint_config(tmp_path):
    import numpy as np

    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["test.min_size=96", "inference.object_mask_threshold=0.3"])
    model = maskformer.build_model(cfg)
    meta = {"classes": [f"c{i}" for i in range(8)], "isthing": [False] * 4 + [True] * 4}
    save_checkpoint(tmp_path / "m.pt", cfg=cfg, model=model, meta=meta)
    pred = maskformer.Predictor.from_checkpoint(tmp_path / "m.pt")
    assert pred.min_size == 96 and pred.object_mask_threshold == 0.3 and pred.thing_ids == {4, 5, 6, 7}
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    labels = pred(image, task="semantic")
    assert labels.shape == (50, 70) and int(labels.max()) < 8
    pan, segments = pred(image, task="panoptic")
    assert pan.shape == (50, 70) and all(s["id"] > 0 for s in segments)


def test_channels_last_and_bf16_training_follow_the_plain_run(tmp_path):
    """train.channels_last=true is the same arithmetic as NCHW up to kernel rounding; train.amp=bf16 follows the
    fp32 losses to bf16 precision. Checkpoints of a channels-last run load into a plain model."""
    base = [*TINY, "train.max_iters=3", "model.dropout=0.0"]
    runs = {
        "nchw": ["train.channels_last=false"],
        "nhwc": ["train.channels_last=true"],
        "bf16": ["train.channels_last=true", "train.amp=bf16"],
    }
    losses = {}
    for name, extra in runs.items():
        cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*base, *extra])
        train(cfg, output_dir=tmp_path / name, progress=False)
        losses[name] = _losses(tmp_path / name / "metrics.jsonl")
    assert len(losses["nchw"]) == 3 and losses["nchw"][0] > 0
    assert losses["nhwc"] == pytest.approx(losses["nchw"], rel=1e-3)
    assert losses["bf16"] == pytest.approx(losses["nchw"], rel=0.05)
    assert losses["bf16"] != losses["nchw"]  # bf16 really ran in reduced precision
    a, b = load_model(tmp_path / "nchw" / "model_final.pt"), load_model(tmp_path / "nhwc" / "model_final.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x)["pred_masks"], b.eval()(x)["pred_masks"], atol=1e-2, rtol=1e-2)


def test_channels_last_auto_follows_the_cpus_vector_width(monkeypatch) -> None:
    """train.channels_last=auto (the default): NHWC on AVX-512 CPUs and GPUs, NCHW on AVX2-only CPUs (where NCHW
    trained faster, docs/performance.md run 19); true and false are kept as given; other words are refused."""
    from maskformer.engine.runtime import channels_last

    assert maskformer.load_config(CONFIGS / "demo.yaml").train.channels_last == "auto"
    for capability, nhwc in (("AVX2", False), ("AVX512", True), ("DEFAULT", True)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert channels_last("auto", "cpu") is nhwc
        assert channels_last(True, "cpu") is True and channels_last(False, "cpu") is False
    assert channels_last("auto", "cuda") is True  # (no CUDA needed to answer)
    with pytest.raises(maskformer.ConfigError, match=r"train.channels_last: unknown 'nhwc' \(expected true, false or"):
        maskformer.load_config(CONFIGS / "demo.yaml", ["train.channels_last=nhwc"])


def test_shorten_schedule_refits_the_poly_decay() -> None:
    from maskformer.optim import build_scheduler, lr_factor, shorten_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, max_iters=100, schedule="poly", power=0.9)
    shorten_schedule(sched, 40)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_factor(10, max_iters=40, power=0.9))
    # resume: a fresh scheduler built from the config (max_iters=100) continues the shortened decay from its state
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = build_scheduler(opt2, max_iters=100, schedule="poly", power=0.9)
    resumed.load_state_dict(sched.state_dict())
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_factor(11, max_iters=40, power=0.9))


def test_batchnorm_on_a_single_value_per_channel_is_one_line(tmp_path, capsys):
    """BN backbone, one image of 32 px per step: res5 is 1x1, so torch's BatchNorm refuses to train on it."""
    from maskformer.cli import main

    overrides = [*TINY, "train.batch_size=1", "data.crop_size=[32,32]", "data.min_size_train=[32]",
                 "data.synthetic_image_size=32", "model.backbone.norm=BN", "train.max_iters=1"]  # fmt: skip
    args = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path / "run"), "--quiet"]
    code = main(args + [x for o in overrides for x in ("--set", o)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "train.batch_size" in err and "data.crop_size" in err and "Traceback" not in err


def test_a_folder_that_holds_a_run_is_not_trained_into_anew(tmp_path, capsys):
    """Training twice into one folder without --resume interleaved both runs' metrics.jsonl lines and replaced the
    first run's checkpoints without a word; now the second call is one line and changes nothing."""
    from maskformer.cli import main

    args = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path / "run"), "--quiet"]
    args += [x for o in [*TINY, "train.max_iters=2"] for x in ("--set", o)]
    assert main(args) == 0
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "holds a run already" in lines[0] and "--resume" in lines[0], lines
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files
    (tmp_path / "run" / "checkpoint_last.pt").unlink()  # a log without a checkpoint: --resume could not continue it
    assert main(args) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "without a checkpoint to resume from" in lines[0] and "--resume" not in lines[0]


_HOLDER = """
import sys, time
from pathlib import Path
from maskformer.engine.run_folder import hold_run_folder
out, stop = Path(sys.argv[1]), Path(sys.argv[2])
with hold_run_folder(out, create=True):
    print("held", flush=True)
    written = 0
    while not stop.exists():  # a live run writes into its folder all along
        (out / f"log{written}.txt").write_text("")
        written += 1
        time.sleep(0.05)
print(written, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="flock is POSIX")
@pytest.mark.parametrize(("existing", "nproc"), [(False, 1), (True, 1), (True, 2)])
def test_a_second_training_into_a_folder_in_use_stops_with_one_line(tmp_path, existing, nproc):
    """Two `maskformer train` runs started at once into one folder both passed the 'holds a run' check and wrote
    their config.yaml, metrics and checkpoints into it, mixed. Now the run holds its folder (flock) while it trains: a
    second one, new or --resume, with one process or --nproc 2, stops with the same one line and touches nothing (a
    refused --nproc launcher deleted what the other run wrote after it looked; --resume said the live run had
    stopped before its first checkpoint); once the first ends, the folder is free."""
    out, stop = tmp_path / "run", tmp_path / "stop"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    holder = subprocess.Popen(  # the first run, as far as the folder can tell: a process holding it and writing
        [sys.executable, "-c", _HOLDER, str(out), str(stop)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "RANK": "0"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        args = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out)]
        args += ["--quiet", "--nproc", str(nproc), *[x for o in [*TINY, "train.max_iters=2"] for x in ("--set", o)]]
        for extra in ([], ["--resume"]):
            done = subprocess.run(args + extra, capture_output=True, text=True, timeout=300)
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            assert done.returncode == 2 and len(lines) == 1, done.stderr
            assert "another maskformer train is writing into this folder" in lines[0] and str(out) in lines[0]
    finally:
        stop.touch()
        written = int(holder.stdout.readline())
        holder.wait(timeout=30)
    mine = ["notes.txt"] if existing else []
    assert sorted(p.name for p in out.iterdir()) == sorted(mine + [f"log{i}.txt" for i in range(written)])
    for p in out.glob("log*.txt"):
        p.unlink()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)  # free again: the training goes in
    assert done.returncode == 0, done.stderr
    assert (out / "model_final.pt").is_file() and (out / "notes.txt").exists() == existing


_FORKER = """
import os, sys, time
from pathlib import Path
from maskformer.engine.run_folder import hold_run_folder
with hold_run_folder(Path(sys.argv[1]), create=True):
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # a DataLoader worker, say: outlives the training process for a moment after kill -9
        os.write(started, b"x")  # (the fork handlers have run: a worker killed with its training is long past them)
        time.sleep(60)
        os._exit(0)
    os.read(ready, 1)  # (on a loaded machine the child could still be unscheduled, before its fork handler)
    print(child, flush=True)
    os._exit(0)  # (as killed: no cleanup runs)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="flock and fork are POSIX")
def test_the_lock_ends_with_the_training_process_not_with_its_forked_workers(tmp_path):
    """After `kill -9` of a training, its DataLoader workers (forked, sharing the lock's open file) lived on a moment,
    and a --resume right then was told the folder was in use."""
    from maskformer.engine.run_folder import hold_run_folder

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _FORKER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RANK": "0"})  # fmt: skip
    child = int(proc.stdout.readline())  # (the child keeps the pipe open: read its line only)
    assert proc.wait(timeout=60) == 0
    try:
        os.kill(child, 0)  # (still alive)
        with hold_run_folder(out, create=False):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_resume_into_a_folder_in_use_is_refused_and_changes_nothing(tmp_path):
    """--resume of a run whose folder another training holds (with a checkpoint to resume from) is one ConfigError."""
    import fcntl

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    out = tmp_path / "run"
    train(cfg, output_dir=out, progress=False, stop_at=2)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # (another open file: conflicts with the training's own flock)
        with pytest.raises(ConfigError, match="another maskformer train is writing into this folder"):
            train(cfg, output_dir=out, progress=False, resume=True)
    finally:
        os.close(fd)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
    train(cfg, output_dir=out, progress=False, resume=True)  # free again
    assert load_checkpoint(out / "model_final.pt")["iteration"] == 4


def test_resume_from_the_cli_keeps_the_runs_own_config(tmp_path, capsys):
    """`train CONFIG --set ... ; train CONFIG --resume`: the resumed run trains with the run's config.yaml (its
    --set values: batch, crop, ...), not with CONFIG's (it silently went back to them), plus the new --set values,
    and says which of CONFIG's values it did not take."""
    from maskformer.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet", *sets,
                 "--set", "train.max_iters=2"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--resume",
                 "--set", "train.max_iters=3"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "--resume keeps the values of" in err and "data.crop_size=[64, 64] (there [128, 128])" in err, err
    saved = maskformer.load_config(run / "config.yaml")
    assert saved.data.crop_size == [64, 64] and saved.train.batch_size == 2 and saved.train.max_iters == 3
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if '"loss"' in line]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert load_checkpoint(run / "checkpoint_last.pt")["iteration"] == 3


def test_a_run_of_an_older_version_resumes_on_the_arithmetic_it_trained_with(tmp_path, capsys):
    """A config.yaml written before train.winograd existed: --resume keeps the direct convolutions that run trained
    with (Winograd is on by default for new runs)."""
    import yaml

    from maskformer.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet", *sets,
                 "--set", "train.max_iters=1"]) == 0  # fmt: skip
    fresh = maskformer.load_config(run / "config.yaml")
    assert fresh.train.winograd
    older = yaml.safe_load((run / "config.yaml").read_text())
    del older["train"]["winograd"]
    (run / "config.yaml").write_text(yaml.safe_dump(older))
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--resume", "--quiet",
                 "--set", "train.max_iters=2"]) == 0  # fmt: skip
    resumed = maskformer.load_config(run / "config.yaml")
    assert not resumed.train.winograd and resumed.train.max_iters == 2


def test_a_resumed_run_removes_the_half_written_checkpoints_a_kill_left(tmp_path):
    """`kill -9` during a checkpoint write leaves `.checkpoint_last.pt.XXXXXXXX.tmp` (tens of MB); ten kills and a
    finished resume left ~94 MB of them. Files of that shape that no run writes are kept."""
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=3"])
    out = tmp_path / "b"
    train(cfg, output_dir=out, progress=False, stop_at=2)
    left = [out / ".checkpoint_last.pt.k2j_9xqa.tmp", out / ".model_final.pt.abcdefgh.tmp"]
    kept = [out / ".mine.pt.abcdefgh.tmp", out / "checkpoint_last.pt.abcdefgh.tmp", out / ".metrics.json.abc.tmp"]
    for path in left + kept:
        path.write_bytes(b"half a checkpoint")
    train(cfg, output_dir=out, progress=False, resume=True)
    assert not any(path.exists() for path in left) and all(path.exists() for path in kept)


def test_resuming_from_a_model_file_or_another_models_checkpoint_says_which(tmp_path):
    """A model_final.pt copied over checkpoint_last.pt was "does not fit this config ('optimizer')"; another model's
    run checkpoint was "solver.base_lr=... differs from the run's ...", a value the user never set."""
    import shutil

    from maskformer.errors import CheckpointError

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=2"])
    train(cfg, output_dir=tmp_path / "done", progress=False)
    train(cfg, output_dir=tmp_path / "b", progress=False, stop_at=2)
    last = tmp_path / "b" / "checkpoint_last.pt"
    shutil.copy(tmp_path / "done" / "model_final.pt", last)
    longer = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    for config in (longer, cfg):  # (cfg: its iteration 2 of 2 was said to be a finished run first)
        with pytest.raises(CheckpointError) as e:
            train(config, output_dir=tmp_path / "b", progress=False, resume=True)
        assert str(e.value).startswith(f"{last}: holds a model but no training state (optimizer, schedule)")
        assert f"--set model.weights={last}" in str(e.value)
    other = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=2", "model.hidden_dim=32",
                                                           "solver.base_lr=0.5"])  # fmt: skip
    train(other, output_dir=tmp_path / "c", progress=False, stop_at=2)
    shutil.copy(tmp_path / "c" / "checkpoint_last.pt", last)
    with pytest.raises(CheckpointError) as e:
        train(longer, output_dir=tmp_path / "b", progress=False, resume=True)
    assert str(e.value).startswith(f"{last}: does not fit this config (") and "base_lr" not in str(e.value)


def test_a_resumed_run_logs_each_iteration_once(tmp_path):
    """A run killed after logging iterations past its last checkpoint logs them again when resumed: the lines after
    the checkpoint are dropped first (the file listed 1..7, 6, 7, 8..)."""
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=5"])
    train(cfg, output_dir=tmp_path / "b", progress=False, stop_at=2)
    log = tmp_path / "b" / "metrics.jsonl"
    with open(log, "a") as f:  # what a kill at iteration 3, after its log line and before a checkpoint, leaves
        f.write(json.dumps({"iteration": 3, "loss": 1.0, "lr": 0.1, "time": 0.1}) + "\n")
    train(cfg, output_dir=tmp_path / "b", progress=False, resume=True)
    iterations = [json.loads(line)["iteration"] for line in open(log) if '"loss"' in line]
    assert iterations == [1, 2, 3, 4, 5]


def test_the_demo_runs_again_into_its_own_folder(tmp_path, capsys):
    """`make demo` twice: the second demo replaces the first demo's run (a folder holding a run refuses `train`)."""
    from maskformer.cli import main

    args = ["demo", "--output-dir", str(tmp_path / "demo"), "--set", "train.max_iters=2",
            "--set", "data.synthetic_val_size=2", "--set", "data.num_workers=0"]  # fmt: skip
    assert main([*args, "--pictures", "2"]) == 0
    (tmp_path / "demo" / "pictures" / "mine.txt").write_text("the user's")  # (kept: not the demo's)
    assert main([*args, "--pictures", "1"]) == 0
    assert (tmp_path / "demo" / "pictures" / "mine.txt").read_text() == "the user's"
    (tmp_path / "demo" / "pictures" / "mine.txt").unlink()
    assert "replacing the earlier demo run" in capsys.readouterr().err
    pictures = sorted(p.name for p in (tmp_path / "demo" / "pictures").iterdir())
    assert pictures == ["val_000.png"], pictures  # (the first demo's val_001.png stayed among the new ones)
    assert main([*args, "--pictures", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "maskformer demo: error: --pictures must be 0 or more, got -1"
    log = tmp_path / "demo" / "metrics.jsonl"
    assert [json.loads(line)["iteration"] for line in open(log) if '"loss"' in line] == [2]  # one run's lines
    assert (tmp_path / "demo" / "model_final.pt").is_file() and (tmp_path / "demo" / "metrics.json").is_file()


def test_a_second_demo_stopped_before_its_first_checkpoint_puts_the_first_one_back(tmp_path, capsys, monkeypatch):
    """Ctrl-C in a second demo into the same folder deleted the finished first demo before training, and left an
    empty pictures/ folder."""
    import maskformer.engine.train as engine_train
    from maskformer.cli import main

    out = tmp_path / "demo"
    args = ["demo", "--output-dir", str(out), "--set", "train.max_iters=2", "--set", "data.synthetic_val_size=2",
            "--set", "data.num_workers=0", "--pictures", "1"]  # fmt: skip
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def stopped(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "train", stopped)
    assert main(args) == 130
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and Path("pictures/val_000.png") in after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # (nothing kept aside is left)
    # a second demo killed (kill -9) before its first checkpoint leaves the first one aside, as it moved it there,
    # and its own half-started files in the folder: the next demo puts the first one back before it starts
    aside = tmp_path / ".demo.previous-k1ll3d00"
    aside.mkdir()
    for path in before:
        (out / path).rename(aside / str(path).replace("/", "__"))
    (out / "config.yaml").write_text("half started")
    (out / "metrics.jsonl").write_text("")
    assert main(args) == 130
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_the_demo_never_replaces_a_run_that_is_not_a_demo(tmp_path, capsys):
    """`maskformer demo --output-dir runs/mine` deleted the CamVid run there and trained the demo in its place."""
    from maskformer.cli import main

    run = tmp_path / "mine"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  dataset: camvid\n")
    (run / "model_final.pt").write_bytes(b"weights of a real run")
    capsys.readouterr()
    assert main(["demo", "--output-dir", str(run), "--set", "train.max_iters=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a demo run" in err[0] and str(run) in err[0]
    assert (run / "model_final.pt").read_bytes() == b"weights of a real run"


def test_the_demo_never_replaces_files_that_are_not_a_demos(tmp_path, capsys):
    """`maskformer demo --output-dir results` deleted eval's metrics.json, the user's config.yaml and tb/ there
    ("replacing the earlier demo run") when the folder held no checkpoint."""
    from maskformer.cli import main

    out = tmp_path / "results"
    (out / "tb").mkdir(parents=True)
    (out / "metrics.json").write_text('{"mIoU": 41.0}')
    (out / "config.yaml").write_text("my: notes\n")
    capsys.readouterr()
    assert main(["demo", "--output-dir", str(out), "--set", "train.max_iters=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    words = "not a demo run's file, and the demo would replace it: pass another --output-dir"
    assert err == [f"maskformer demo: error: {out / 'config.yaml'}: {words}"], err
    assert (out / "metrics.json").read_text() == '{"mIoU": 41.0}' and (out / "tb").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "tb"]


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    """A run interrupted before its first checkpoint left config.yaml and metrics.jsonl: --resume had nothing to
    resume and a new start was refused (the folder "holds an earlier run")."""
    import maskformer.engine.train as engine_train

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["data.num_workers=0", "train.eval_period=-1"])

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "build_criterion", interrupt)  # (config.yaml is written by then)
    with pytest.raises(KeyboardInterrupt):
        engine_train.train(cfg, output_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_stop_in_the_final_evaluation_says_to_run_eval_not_resume(tmp_path, monkeypatch, capsys):
    """SIGTERM during the final evaluation said "checkpoint_last.pt holds iteration 2; `... --resume` goes on from it",
    and --resume then refused the run as finished: the line now says that training finished and how to evaluate."""
    import maskformer.engine.train as engine_train
    from maskformer.cli import main

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "_evaluate", interrupt)
    out = tmp_path / "run"
    argv = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out), "--quiet", "--set", "train.max_iters=2",
            "--set", "data.num_workers=0", "--set", "train.eval_period=0", "--set", "data.synthetic_image_size=64",
            "--set", "data.crop_size=[64,64]", "--set", "data.min_size_train=[64]"]  # fmt: skip
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"training finished ({out / 'model_final.pt'}, iteration 2); its final evaluation was stopped" in err, err
    assert f"`maskformer eval {out / 'model_final.pt'}` runs it" in err and "--resume" not in err
    assert (out / "model_final.pt").is_file()
    demo = tmp_path / "demo"  # the demo likewise (it said only "interrupted")
    assert main(["demo", "--output-dir", str(demo), *argv[5:]]) == 130
    err = capsys.readouterr().err
    assert f"maskformer demo: training finished ({demo / 'model_final.pt'}); its final evaluation was stopped" in err


def test_bf16_training_on_a_cpu_without_bf16_instructions_says_it_is_emulated(tmp_path, monkeypatch, capsys):
    """train.amp=bf16 on an AVX2-only CPU ran about twice as slow as fp32 (torch emulates bf16 there) without a word,
    where predict / eval / serve refuse bf16."""
    import maskformer.engine.train as engine_train
    from maskformer.cli import main

    monkeypatch.setattr(engine_train, "emulated_bf16", lambda device: True)
    argv = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path / "run"), "--set", "train.max_iters=1",
            "--set", "data.num_workers=0", "--set", "train.eval_period=-1", "--set", "data.synthetic_image_size=64",
            "--set", "data.crop_size=[64,64]", "--set", "data.min_size_train=[64]",
            "--set", "train.amp=bf16"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "train.amp=bf16: this CPU has no bfloat16 instructions" in captured.out + captured.err


def test_resnet_blocks_other_than_four_stages_are_one_line(capsys):
    from maskformer.cli import main

    assert (
        main(["info", str(CONFIGS / "folder" / "small.yaml"), "--set", "model.backbone.blocks=[2,2]", "--no-flops"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.backbone.blocks" in err[0]


def test_a_frozenbn_resnet_from_scratch_is_noted() -> None:
    """configs/folder/maskformer_R50.yaml without ImageNet weights trained a ResNet whose FrozenBN layers are fixed
    identities, without a word (only a comment in the YAML said so)."""
    from maskformer.engine.initial_weights import load_initial_weights

    cfg = maskformer.load_config(
        CONFIGS / "folder" / "maskformer_R50.yaml", overrides=["model.backbone.blocks=[1,1,1,1]"]
    )
    note = load_initial_weights(cfg, maskformer.build_model(cfg))
    assert note.startswith("random initialisation") and "model.backbone.norm=BN" in note
    cfg.model.backbone.norm = "BN"
    assert load_initial_weights(cfg, maskformer.build_model(cfg)) == "random initialisation"


def test_a_time_budget_is_used_when_the_first_steps_are_slow(monkeypatch) -> None:
    """The schedule was fitted once, on the first steps' pace; their start-up cost made the demo stop at 43-78 % of
    --minutes. Simulated clock: 5 steps of 2 s, then 0.5 s per step, a 60 s budget: the run must end in the last
    tenth of it, and never after it."""
    from types import SimpleNamespace

    from maskformer.engine import run_schedule

    clock = [0.0]
    monkeypatch.setattr(run_schedule.time, "monotonic", lambda: clock[0])
    totals: list[int] = []
    schedule = SimpleNamespace(set_max_iters=lambda n: totals.append(n))
    scheduler = SimpleNamespace(lr_lambdas=[schedule])
    logger = SimpleNamespace(set_total=lambda n: None, note=lambda text: None)
    t = SimpleNamespace(max_iters=100_000, max_minutes=1.0)
    max_iters, fit_at, mark, iteration = t.max_iters, 5, (0, 0.0, True), 0
    while iteration < max_iters and clock[0] <= 60.0:
        clock[0] += 2.0 if iteration < 5 else 0.5
        iteration += 1
        if iteration == fit_at:
            max_iters, fit_at, mark = run_schedule.fit_to_deadline(iteration, mark, 60.0, max_iters, t, scheduler,
                                                                   logger)  # fmt: skip
    assert 54.0 <= clock[0] <= 60.0 and iteration == max_iters, (clock[0], iteration, totals)
    assert totals[-1] == max_iters and len(totals) >= 2  # the LR decay ends where training does


def test_a_layout_that_serves_train_and_val_from_the_same_images_is_noted(tmp_path, capsys):
    """A flat ADE20K folder (images/ + annotations/, no training/validation subfolders) is read for every split:
    the run says its evaluation measures training images instead of leaving the user to find out."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "ade"
    for sub in ("images", "annotations"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        Image.fromarray(rng.integers(0, 151, (64, 80), dtype=np.uint8)).save(root / "annotations" / f"{name}.png")
    sets = [*TINY, "train.max_iters=1", "train.eval_period=0", "data.dataset=ade20k_150", f"data.root={root}",
            "model.num_classes=150", "data.mapper=semantic", "inference.panoptic_on=false"]  # fmt: skip
    train(maskformer.load_config(CONFIGS / "demo.yaml", sets), output_dir=tmp_path / "run", progress=True)
    assert "the train and val splits are the same (2 images): the evaluation measures" in capsys.readouterr().err
    (root / "annotations").rename(root / "labels")  # a flat folder dataset: the split "all" for both
    (root / "classes.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(151)]}))
    sets = [*TINY, "train.max_iters=1", "train.eval_period=0", "data.dataset=folder", f"data.root={root}",
            "model.num_classes=151", "data.mapper=semantic", "inference.panoptic_on=false", "data.train_split=all",
            "data.val_split=all"]  # fmt: skip
    train(maskformer.load_config(CONFIGS / "demo.yaml", sets), output_dir=tmp_path / "all", progress=True)
    assert "data.train_split and data.val_split are both 'all' (2 images)" in capsys.readouterr().err  # (was
    # "the all and all splits")
    train(maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=1", "train.eval_period=0"]),
          output_dir=tmp_path / "synthetic", progress=True)  # fmt: skip
    assert "same" not in capsys.readouterr().err


def _train_until(tmp_path, run, ready, extra: list[str], group: bool = False) -> subprocess.CompletedProcess:
    """`maskformer train` of the demo config in a process of its own, sent SIGTERM once ``ready(run)`` holds (with
    ``group``, to its whole process group, DataLoader workers included, as `timeout` and schedulers do)."""
    args = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run),
            "--quiet", *[a for kv in TINY + ["train.max_iters=100000", *extra] for a in ("--set", kv)]]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=group)
    deadline = time.monotonic() + 120
    while not ready(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # (never left running for the tests after this one)
        proc.kill()
        _, err = proc.communicate()
        err += "\n[test: still running 60 s after SIGTERM, killed]"
    return subprocess.CompletedProcess(args, proc.returncode, "", err)


def test_sigterm_is_handled_as_ctrl_c_and_says_how_to_resume(tmp_path):
    """`kill` / `timeout` / a job scheduler stop training with SIGTERM: before the first checkpoint it left
    config.yaml and metrics.jsonl behind (blocking a new start); after one, nothing said what was kept."""
    early = _train_until(tmp_path, tmp_path / "early", lambda run: (run / "metrics.jsonl").is_file(),
                         ["train.checkpoint_period=100000"])  # fmt: skip
    assert early.returncode == 143 and "Traceback" not in early.stderr, early.stderr
    assert early.stderr.strip().splitlines()[-1] == "maskformer train: interrupted", early.stderr
    assert not (tmp_path / "early").exists(), early.stderr
    late = _train_until(tmp_path, tmp_path / "late", lambda run: (run / "checkpoint_last.pt").is_file(), [])
    assert late.returncode == 143 and "Traceback" not in late.stderr, late.stderr
    note = late.stderr.strip().splitlines()[-2]
    iteration = load_checkpoint(tmp_path / "late" / "checkpoint_last.pt")["iteration"]
    assert f"holds iteration {iteration}" in note and "--resume" in note and str(tmp_path / "late") in note, late.stderr
    # the whole group, with loader workers (their end surfaced as "DataLoader worker ... killed by signal" within
    # the interrupt: a traceback, the run folder left behind, "holds iteration ?")
    for name, ready, extra in (
        ("group_early", lambda run: (run / "metrics.jsonl").is_file(), ["train.checkpoint_period=100000"]),
        ("group_late", lambda run: (run / "checkpoint_last.pt").is_file(), ["train.checkpoint_period=1"]),
    ):
        stopped = _train_until(tmp_path, tmp_path / name, ready, [*extra, "data.num_workers=2"], group=True)
        assert stopped.returncode == 143 and "Traceback" not in stopped.stderr, stopped.stderr
        assert stopped.stderr.strip().splitlines()[-1] == "maskformer train: interrupted", stopped.stderr
        if name == "group_early":
            assert not (tmp_path / name).exists(), stopped.stderr
        else:
            held = load_checkpoint(tmp_path / name / "checkpoint_last.pt")["iteration"]
            assert f"holds iteration {held} " in stopped.stderr, stopped.stderr


def test_the_end_of_loader_workers_within_an_interrupt_is_the_interrupt() -> None:
    from maskformer.errors import is_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ") from None
    except RuntimeError as e:
        assert is_interrupt(e)  # (raised while the interrupt unwound)
    assert is_interrupt(RuntimeError("DataLoader worker (pid(s) 26139) is killed by signal: Terminated. "))
    assert not is_interrupt(RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. "))  # (e.g. OOM)
    assert not is_interrupt(ValueError("bad label"))


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # (not a process, or gone meanwhile)
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the loader workers through /proc")
def test_a_loader_worker_killed_by_the_system_ends_training_in_one_line(tmp_path):
    """The out-of-memory killer's SIGKILL to a DataLoader worker: a traceback from the loader's SIGCHLD handler
    ("DataLoader worker (pid N) is killed by signal: Killed.") in the middle of the backward."""
    run = tmp_path / "run"
    settings = [a for kv in TINY + ["train.max_iters=100000", "data.num_workers=2"] for a in ("--set", kv)]
    args = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run),
            "--quiet", *settings]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (workers := _children(proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # (into the loop that reads from them)
        assert proc.poll() is None and workers, "training ended or started no loader worker"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    # (the loader says "killed by signal: Killed" or, when it notices first on a queue timeout, "exited unexpectedly")
    assert last.startswith("maskformer train: error: a data-loading worker process "), err
    assert "was killed (signal: Killed)" in last or "exited unexpectedly" in last, err
    assert "data.num_workers" in last, err


def test_diverging_training_stops_with_one_line_and_writes_no_broken_model(tmp_path, monkeypatch):
    """A learning rate that blows the weights up: the matcher raised on NaN costs (a traceback) before the loss
    check, and a run that ended right after the step saved a model full of NaN without a word."""
    from maskformer.engine.train import TrainingError

    tiny = [*TINY, "train.eval_period=-1", "solver.clip_grad_norm=0.0", "solver.warmup_iters=0"]
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*tiny, "solver.base_lr=1e30", "train.max_iters=4"])
    with pytest.raises(TrainingError, match="non-finite predictions at iteration 2; no checkpoint was saved"):
        train(cfg, output_dir=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    import maskformer.engine.train as engine_train

    build_optimizer = engine_train.build_optimizer

    def overflowing(cfg, model):  # an update that overflows, in the last step, where no later loss would show it
        optimizer = build_optimizer(cfg, model)
        optimizer.register_step_post_hook(lambda *_: next(model.parameters()).data.mul_(float("inf")))
        return optimizer

    monkeypatch.setattr(engine_train, "build_optimizer", overflowing)
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*tiny, "train.max_iters=1"])
    with pytest.raises(TrainingError, match="the weights became non-finite in iteration 1"):
        train(cfg, output_dir=tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "model_final.pt").exists()
    for bad in ("nan", "inf", "-.inf"):
        with pytest.raises(maskformer.ConfigError, match="solver.base_lr' must be a finite number"):
            maskformer.load_config(CONFIGS / "demo.yaml", [f"solver.base_lr={bad}"])


def test_the_eta_stays_within_a_time_budget(tmp_path, capsys, monkeypatch):
    """The demo's first ETAs came from train.max_iters before the run was fitted to its minutes (eta 183 min in a
    0.4-minute run)."""
    from maskformer.engine.logging import MetricLogger

    logger = MetricLogger(tmp_path, total=100_000, period=1)
    clock = [logger.t0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    logger.deadline = logger.t0 + 60  # one minute of budget
    clock[0] += 1.0  # one second per step: 99,999 more steps would be 27 hours
    logger.step(1, {"loss": 1.0}, lr=0.1, seconds=1.0)
    logger.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("eta 1.0 min"), line


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_sigterm_swallowed_where_python_ignores_exceptions_still_stops_training(signum, monkeypatch) -> None:
    """The KeyboardInterrupt of a SIGTERM (or Ctrl-C) that lands in a fork hook or a __del__ is "ignored" by Python:
    a group SIGTERM while DataLoader workers started left training running (1 run in 6 hung), and Python printed
    "Exception ignored in: <function _releaseLock ...> Traceback ..." above the one "interrupted" line."""
    from conftest import SwallowsASigterm
    from maskformer.errors import raise_if_terminated, terminate_as_interrupt

    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(info.exc_value))
    with terminate_as_interrupt():
        SwallowsASigterm(signum)
        with pytest.raises(KeyboardInterrupt):
            raise_if_terminated()
    raise_if_terminated()  # (cleared with the handler)
    assert printed == []  # (nothing said by Python's hook: the flag raises the interrupt again)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _StoppedWorkersIterator:
    def __init__(self, text: str) -> None:
        self.text = text

    def __del__(self) -> None:  # (as a DataLoader iterator's __del__ meets workers the same SIGTERM stopped)
        raise RuntimeError(self.text)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_loader_freed_after_a_sigterm_prints_nothing_about_its_stopped_workers(monkeypatch) -> None:
    """1 SIGTERM in 16 to `train` with loader workers printed "Exception ignored in: <function
    _MultiProcessingDataLoaderIter.__del__> ... DataLoader worker (pid N) is killed by signal: Terminated"."""
    from conftest import SwallowsASigterm
    from maskformer.errors import terminate_as_interrupt

    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(info.exc_value))
    with terminate_as_interrupt():
        SwallowsASigterm()
        _StoppedWorkersIterator("DataLoader worker (pid 8154) is killed by signal: Terminated. ")
        _StoppedWorkersIterator("some other failure")  # (still said)
    assert [str(e) for e in printed] == ["some other failure"]


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="POSIX signals")
def test_a_workers_end_after_the_interrupt_does_not_replace_it() -> None:
    """A SIGTERM to the group also ends the DataLoader's workers; their SIGCHLD, handled while the interrupt
    unwound, replaced its KeyboardInterrupt by "DataLoader worker ... killed" (a CI run once lost the "holds
    iteration N" note that way). Held signals are given back with the interrupt first."""
    from maskformer.errors import interrupts_held, terminate_as_interrupt

    def loader_handler(signum: int, frame: object) -> None:
        raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. ")

    before = signal.signal(signal.SIGCHLD, loader_handler)
    try:
        with terminate_as_interrupt():
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGCHLD)  # (nothing: the interrupt already stops the run)
        assert signal.getsignal(signal.SIGCHLD) is loader_handler  # (back after the command)
        with terminate_as_interrupt():
            with pytest.raises(KeyboardInterrupt):
                with interrupts_held():  # (a worker's end noticed before the interrupt itself)
                    signal.raise_signal(signal.SIGCHLD)
                    signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGCHLD, before)


def test_an_interrupt_without_its_iteration_still_says_what_the_run_kept(tmp_path, capsys, monkeypatch) -> None:
    """An interrupt raised while another unwound carries no checkpoint iteration: the note came from it alone, so
    "holds iteration N ... --resume" was missing. The file on disk says it now (and nothing after a finished run)."""
    import maskformer.engine.train as engine_train
    from maskformer.cli import main

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", [*TINY, "train.max_iters=4"])
    out = tmp_path / "run"
    train(cfg, output_dir=out, progress=False, stop_at=2)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_train, "train", stopped)
    argv = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out), "--resume", "--quiet"]
    argv += [a for kv in [*TINY, "train.max_iters=4"] for a in ("--set", kv)]
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint_last.pt'} holds iteration 2 (the steps after it are lost)" in err, err
    (out / "model_final.pt").write_bytes((out / "checkpoint_last.pt").read_bytes())
    assert main(argv) == 130
    assert "holds iteration" not in capsys.readouterr().err


def test_resume_from_a_mistyped_run_folder_names_the_folder_not_the_data(tmp_path, capsys):
    """``--resume`` into a folder that does not exist said "data.root: mydata does not exist (pass --data-root)"."""
    from maskformer.cli import main

    argv = ["train", str(CONFIGS / "folder" / "small.yaml"), "--output-dir", str(tmp_path / "typo"), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"maskformer train: error: --output-dir {tmp_path / 'typo'}: no such folder, so nothing to resume "
                   "from (check the path, or run without --resume to start)")  # fmt: skip
    assert not (tmp_path / "typo").exists()


def test_info_on_a_per_pixel_baseline_speaks_of_no_decoder_layers(tmp_path, capsys):
    from maskformer.cli import main

    config = tmp_path / "per_pixel.yaml"
    config.write_text(f"_base_: {CONFIGS / 'demo.yaml'}\nmodel: {{meta_arch: per_pixel}}\n")
    assert main(["info", str(config), "--size", "64", "64"]) == 0
    graphs = [ln for ln in capsys.readouterr().out.splitlines() if "graph" in ln]
    assert len(graphs) == 2 and not any("decoder layer" in ln for ln in graphs), graphs


def test_missing_imagenet_weights_say_the_whole_from_scratch_fix():
    """The zoo's R50 configs without R-50.pkl said to pass only model.backbone.weights='': FrozenBN then stays
    identity, which the README's from-scratch line (also norm=BN) avoids."""
    from maskformer.engine.initial_weights import load_initial_weights

    for config, says_norm in (("coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml", True),
                              ("ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml", False)):  # fmt: skip
        cfg = maskformer.load_config(CONFIGS / config, overrides=["model.backbone.weights=/nonexistent/x.pkl"])
        with pytest.raises(ConfigError) as e:
            load_initial_weights(cfg, None)
        assert "/nonexistent/x.pkl not found" in str(e.value)
        assert ("--set model.backbone.weights='' --set model.backbone.norm=BN to train" in str(e.value)) == says_norm


def test_info_on_a_folder_config_counts_the_classes_training_would(tmp_path, capsys):
    """`info configs/folder/small.yaml --set data.root=mydata` counted the config's 150 classes where training takes
    the 3 of mydata/classes.json (other parameter totals); without the folder, a note says which count is shown."""
    import json

    from maskformer.cli import main

    data = tmp_path / "mydata"
    data.mkdir()
    (data / "classes.json").write_text('{"classes": ["road", "car", "sky"]}')
    config = CONFIGS / "folder" / "small.yaml"
    capsys.readouterr()
    assert main(["info", str(config), "--no-flops", "--json", "--data-root", str(data)]) == 0
    got = json.loads(capsys.readouterr().out)["parameters"]["total"]
    three = maskformer.build_model(maskformer.load_config(config, ["model.num_classes=3"]))
    assert got == sum(p.numel() for p in three.parameters())
    assert main(["info", str(config), "--no-flops", "--json", "--set", f"data.root={tmp_path / 'absent'}"]) == 0
    captured = capsys.readouterr()
    shown = maskformer.load_config(config).model.num_classes
    assert f"note: {shown} classes, as the config says" in captured.err
    assert main(["info", str(config), "--no-flops", "--data-root", str(tmp_path / "absent")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"maskformer info: error: --data-root {tmp_path / 'absent'}: no such folder"
    )


def test_the_resume_command_quotes_paths_with_spaces(monkeypatch) -> None:
    """`maskformer train conv/my cfg.yaml --output-dir runs/my run --resume` (pasted) failed with "unrecognized
    arguments: cfg.yaml run"; under torchrun the command is torchrun's."""
    from pathlib import Path

    from maskformer.cli.train import _resume_note

    for name in ("WORLD_SIZE", "MASKFORMER_NPROC", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    note = _resume_note(Path("runs/my run"), "conv/my cfg.yaml", 8, "; ")
    assert note.endswith("; `maskformer train 'conv/my cfg.yaml' --output-dir 'runs/my run' --resume` goes on from it")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    note = _resume_note(Path("runs/a"), "c.yaml", 8, "; ")
    assert note.endswith("`torchrun --nproc_per_node 2 -m maskformer.cli train c.yaml --output-dir runs/a --resume` "
                         "on each of the run's 2 nodes goes on from it")  # fmt: skip


def test_resume_refuses_a_changed_solver_keeps_the_runs_config_and_finds_a_lost_one(tmp_path, capsys):
    """--resume --set solver.weight_decay=0.5 was ignored while config.yaml recorded it (solver.optimizer=sgd was a
    traceback); a refused resume wrote its values into config.yaml, so every later --resume failed; a run without
    config.yaml resumed with CONFIG's values; a run saved before train.winograd existed resumed with it on."""
    from maskformer.cli import main

    sets = [a for s in TINY for a in ("--set", s)]
    run = tmp_path / "run"
    base = ["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet"]
    assert main([*base, *sets, "--set", "train.max_iters=2"]) == 0
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    for change in ("solver.weight_decay=0.5", "solver.optimizer=sgd"):
        assert main([*base, "--resume", "--set", "train.max_iters=3", "--set", change]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if not line.startswith("note:")]
        assert len(errors) == 1 and f"{change} differs from the run's" in errors[0], err
        assert "start a new run" in errors[0] and (run / "config.yaml").read_text() == before
    (run / "config.yaml").unlink()
    assert main([*base, "--resume", "--set", "train.max_iters=3"]) == 0
    assert "config.yaml was missing: written again from checkpoint_last.pt" in capsys.readouterr().err
    saved = maskformer.load_config(run / "config.yaml")
    assert saved.data.crop_size == [64, 64] and saved.train.max_iters == 3  # the run's values, not demo.yaml's
    assert saved.train.winograd
    text = (run / "config.yaml").read_text().replace("  winograd: true\n", "")  # as an older version wrote it
    (run / "config.yaml").write_text(text)
    assert main([*base, "--resume", "--set", "train.max_iters=4"]) == 0
    assert not maskformer.load_config(run / "config.yaml").train.winograd


def test_resume_in_a_folder_whose_run_stopped_before_its_first_checkpoint_says_to_start_anew(tmp_path, capsys):
    """--resume said "run without --resume to start", and that said the folder holds an earlier run."""
    from maskformer.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the run stopped before its first checkpoint: start anew in another --output-dir" in err, err


def test_an_exiting_interrupted_command_prints_no_thread_errors() -> None:
    """After "interrupted", the console command exits: a DataLoader queue's feeder thread still closing its pipe then
    printed "Exception in thread QueueFeederThread: Traceback" (about once in 60 SIGTERMs to a training's group)."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from maskformer.cli import _interrupted\n"
        "assert _interrupted('train', exiting=True) == 130\n"
        "def closing():\n"
        "    raise OSError(9, 'Bad file descriptor')\n"
        "thread = threading.Thread(target=closing, name='QueueFeederThread', daemon=True)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "maskformer train: interrupted\n", done.stderr


def test_a_worker_that_exited_unexpectedly_after_a_signal_is_the_interrupt(monkeypatch) -> None:
    """A SIGTERM to the group whose KeyboardInterrupt Python swallowed in this process: the loader's next call found
    its worker gone ("exited unexpectedly"), and train printed that traceback with exit 1 (once in a CI run)."""
    from maskformer import errors

    gone = RuntimeError("DataLoader worker (pid(s) 27130) exited unexpectedly")
    monkeypatch.setattr(errors, "_last_signal", [0])
    assert not errors.is_interrupt(gone)  # (no signal: a worker that crashed, e.g. out of memory)
    monkeypatch.setattr(errors, "_last_signal", [15])
    assert errors.is_interrupt(gone)


def test_a_data_root_for_generated_scenes_is_refused_before_training(tmp_path, capsys) -> None:
    """``train configs/demo.yaml --data-root mydata`` trained on the generated scenes without a word."""
    from conftest import DEMO_YAML
    from maskformer.cli import main

    out = tmp_path / "run"
    assert main(["train", str(DEMO_YAML), "--data-root", str(tmp_path), "--output-dir", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data-root {tmp_path}: data.dataset=synthetic" in err, err
    assert not out.exists()


def test_a_full_disk_after_a_checkpoint_says_what_it_holds_and_a_cut_log_line_goes(tmp_path, monkeypatch, capsys):
    """The disk filling up after the first checkpoint ended in "...: No space left on device" alone (which iteration
    checkpoint_last.pt holds and the --resume command were not said, as after Ctrl-C); a metrics line cut by the full
    disk stayed in metrics.jsonl for good, and its error named no file."""
    import errno

    import maskformer.engine.logging as logging_module
    from maskformer.cli import main

    run = tmp_path / "run"
    sets = [a for s in [*TINY, "train.max_iters=6"] for a in ("--set", s)]
    real = logging_module._append

    def fill_up(file, record):  # iteration 3's line: half of it written, then the disk is full
        if record.get("iteration") != 3:
            return real(file, record)
        file.write(b'{"iteration": 3, ')
        raise OSError(errno.ENOSPC, "No space left on device", file.name)

    monkeypatch.setattr(logging_module, "_append", fill_up)
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet", *sets]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / 'metrics.jsonl'}: No space left on device; " in err[0], err
    assert f"{run / 'checkpoint_last.pt'} holds iteration 2" in err[0] and "--resume" in err[0], err
    # a crash can cut a line as well: the resumed run drops it
    monkeypatch.setattr(logging_module, "_append", real)
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run), "--quiet", "--resume"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # every line parses
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_metrics_line_the_disk_cannot_take_is_taken_back(tmp_path) -> None:
    import errno

    from maskformer.engine.logging import _append

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n')

    class Full(io.FileIO):
        def write(self, data):  # takes 5 bytes, then the disk is full
            if getattr(self, "taken", False):
                raise OSError(errno.ENOSPC, "No space left on device")
            self.taken = True
            return super().write(bytes(data[:5]))

    with Full(path, "ab") as f, pytest.raises(OSError) as info:
        _append(f, {"iteration": 2})
    assert info.value.filename == str(path) and path.read_text() == '{"iteration": 1}\n'
