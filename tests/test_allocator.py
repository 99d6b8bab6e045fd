"""maskformer/allocator.py: glibc keeps freed memory, so a re-allocated large tensor does not page-fault again.

Each case runs in a fresh interpreter (the setting is process-wide and cannot be undone)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import DEMO_YAML

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

# Allocates, fills and frees a 64 MB tensor 10 times; prints the setting's result and the minor page faults of the
# last 6 rounds (glibc's default: every round maps fresh pages, 16,384 faults each; tuned: the heap keeps the block,
# which small allocations in between can move once more).
_FAULTS = """
import json, resource, sys, torch
{setup}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # glibc settles the freed block's place in the heap over the first rounds (6-7 after a bare
    # `import torch`; ``import maskformer`` imported the whole package, after which it took fewer)
    torch.empty(16 * 2**20).fill_(1.0)
before = faults()
for _ in range(6):
    torch.empty(16 * 2**20).fill_(1.0)
print(json.dumps({{"on": on, "faults": faults() - before}}))
"""


def _run(setup: str, **env: str) -> dict:
    code = _FAULTS.format(setup=setup)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults() -> None:
    tuned = _run("from maskformer.allocator import reuse_freed_memory\non = reuse_freed_memory()")
    default = _run("on = False")
    assert tuned["on"] is True
    assert default["faults"] > 6 * 16_000  # glibc's default maps the 64 MB afresh every round
    assert tuned["faults"] < 18_000, tuned  # at most one of the 6 rounds


def test_opt_out_keeps_glibc_defaults() -> None:
    out = _run("from maskformer.allocator import reuse_freed_memory\non = reuse_freed_memory()", MASKFORMER_MALLOC="0")
    assert out["on"] is False and out["faults"] > 6 * 16_000


def test_the_optimised_predictor_turns_it_on() -> None:
    setup = f"""
from maskformer import Predictor
from maskformer.build import build_model
from maskformer.config import load_config
from maskformer.inference.accelerate import supported
model = build_model(load_config({str(DEMO_YAML)!r})).eval()
Predictor(model)
on = supported()[0]
"""
    out = _run(setup)
    if out["on"]:  # the accelerated path is active on this machine: the allocator setting came with it
        assert out["faults"] < 18_000, out
    else:  # pragma: no cover - another CPU / torch release
        assert out["faults"] > 6 * 16_000


def test_training_turns_it_on(tmp_path, monkeypatch) -> None:
    import maskformer
    import maskformer.engine.train as engine_train
    from test_train import TINY

    calls: list[bool] = []
    monkeypatch.setattr(engine_train, "reuse_freed_memory", lambda: calls.append(True) or True)
    cfg = maskformer.load_config(DEMO_YAML, [*TINY, "train.max_iters=1"])
    engine_train.train(cfg, output_dir=tmp_path / "run", progress=False)
    assert calls == [True]
