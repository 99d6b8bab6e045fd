"""maskformer.engine.runtime: process-wide allocator settings of the command line, checked by their effect."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import os, numpy as np
from maskformer.engine.runtime import keep_freed_memory
applied = keep_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MB, touched
del block
print(applied, (rss() - before) >> 20)
"""


def _run(env_extra: dict[str, str]) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "MASKFORMER_DEFAULT_MALLOC"} | env_extra
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout
    applied, kept_mb = out.split()
    return applied == "True", int(kept_mb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_freed_memory_is_kept_for_reuse_unless_disabled():
    applied, kept = _run({})
    assert applied and kept >= 48  # the freed 64 MB stayed in the heap for the next forward pass
    applied, kept = _run({"MASKFORMER_DEFAULT_MALLOC": "1"})
    assert not applied and kept < 16  # glibc's default: a large block goes back to the kernel when freed


@pytest.mark.parametrize("argv", [["predict", "m.pt", "a.jpg", "--output-dir", "o", "--bogus"],
                                  ["convert", "to-hf", "m.pt", "out", "--bogus"]])  # fmt: skip
def test_an_unknown_flag_is_answered_with_the_commands_own_usage(argv, capsys) -> None:
    """An unknown flag after a command printed the list of commands ("usage: maskformer [-h] [--version] COMMAND")."""
    from maskformer.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    command = " ".join(argv[:2]) if argv[0] == "convert" else argv[0]
    assert stop.value.code == 2 and f"usage: maskformer {command} " in err, err
    assert f"maskformer {command}: error: unrecognized arguments: --bogus" in err


def test_an_unknown_flag_before_the_command_is_named(capsys) -> None:
    """`maskformer --bogus predict` dropped --bogus and asked for predict's arguments instead."""
    from maskformer.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--bogus", "predict"])
    assert stop.value.code == 2 and "maskformer: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("maskformer ")
