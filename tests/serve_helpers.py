"""A trained checkpoint and a real `maskformer serve` process on 127.0.0.1 for the serve tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from conftest import CONFIGS
from maskformer.cli import main


def train_tiny(out: Path) -> Path:
    """`maskformer train configs/demo.yaml` for 2 iterations, as a user would: returns model_final.pt."""
    sets = ["train.max_iters=2", "train.eval_period=0", "train.batch_size=2", "data.synthetic_train_size=8"]
    assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out), "--quiet",
                 *[a for s in sets for a in ("--set", s)]]) == 0  # fmt: skip
    return out / "model_final.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(checkpoint: Path, *extra: str):
    """Start `maskformer serve CHECKPOINT` on a free port; yield its base URL; stop it. Waits for /health (bounded)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--port", str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not come up: {proc.communicate(timeout=5)}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
