"""README's Python snippets run as written, from another directory: the zoo name is served from a pre-populated cache
(no network), and the image they read is put where they read it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maskformer
from conftest import ROOT
from maskformer.engine.checkpoint import save_checkpoint


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.slow  # ~30 s: each snippet is a fresh process loading a full R50; `make bench`
def test_readme_python_snippets_run_as_written(tmp_path: Path) -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2
    names = set(re.findall(r'from_pretrained\("([^"]+)"\)', "".join(blocks)))
    cache = tmp_path / "cache"
    for name in names:  # what the first download would leave in the cache (random weights: no network here)
        if "/" in name and (ROOT / "configs" / f"{name}.yaml").is_file():
            cfg = maskformer.load_config(ROOT / "configs" / f"{name}.yaml")
            torch.manual_seed(0)
            save_checkpoint(cache / "zoo" / name / "model.pt", cfg=cfg, model=maskformer.build_model(cfg),
                            meta=None)  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    for file in set(re.findall(r'"([\w.-]+\.(?:jpg|png))"', "".join(blocks))):
        Image.fromarray(image).save(work / file)
    env = {**os.environ, "MASKFORMER_CACHE": str(cache), "MASKFORMER_ZOO_URL": "http://127.0.0.1:9/unreachable"}
    for block in blocks:
        run = subprocess.run([sys.executable, "-c", block], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert run.returncode == 0, f"README snippet failed:\n{block}\n{run.stderr[-2000:]}"
    if not names:
        pytest.fail("README's snippets no longer show from_pretrained")
    # the checkpoint the Python API section saves is one the commands read (its config, its weights)
    saved = maskformer.load_model(work / "mine.pt")
    assert saved.cfg.model.backbone.type == "resnet" and sum(p.numel() for p in saved.parameters()) > 10**7


def _synopsis() -> dict[str, str]:
    """README's "Command line" block: command (``convert to-hf``) -> its line and continuation lines."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Command line") :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    found: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        if line.startswith("maskformer "):
            words = [w for w in line.split()[1:3] if re.fullmatch(r"[a-z0-9-]+", w)]
            name = " ".join(words)
            found[name] = line
        elif name:
            found[name] += " " + line
    return found


def test_readme_command_synopsis_names_every_option_of_help() -> None:
    """Every command's options (``--help``) appear on its line of README's synopsis, and no option that --help lacks."""
    import argparse

    from maskformer.cli import build_parser

    synopsis = _synopsis()

    def options(parser: argparse.ArgumentParser) -> set[str]:
        return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if prefix and not subs:
            key = " ".join(prefix)
            # `export` takes its format as a positional choice: its line is `maskformer export onnx ...`
            line = next((v for k, v in synopsis.items() if k == key or k.startswith(key + " ")), None)
            assert line is not None, f"README's command synopsis has no line for `maskformer {key}`"
            written = set(re.findall(r"--[a-z0-9-]+", line))
            assert options(parser) <= written, (key, options(parser) - written)
            assert written <= options(parser), (key, written - options(parser))
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*prefix, name])

    walk(build_parser(), [])
