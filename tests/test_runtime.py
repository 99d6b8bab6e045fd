"""maskformer.engine.runtime: process-wide allocator settings of the command line."""

from __future__ import annotations

import subprocess
import sys


def _run(env_extra: dict[str, str]) -> str:
    import os

    code = "from maskformer.engine.runtime import keep_freed_memory; print(keep_freed_memory())"
    env = {k: v for k, v in os.environ.items() if k != "MASKFORMER_DEFAULT_MALLOC"} | env_extra
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_keep_freed_memory_applies_on_linux_and_can_be_disabled():
    applied = _run({}).strip()
    assert applied == ("True" if sys.platform.startswith("linux") else "False")
    assert _run({"MASKFORMER_DEFAULT_MALLOC": "1"}).strip() == "False"
