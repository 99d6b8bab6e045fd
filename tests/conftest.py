from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIGS = ROOT / "configs"
DEMO_YAML = ROOT / "src" / "maskformer" / "resources" / "demo.yaml"
# The demo config with a tiny Swin backbone (4 stages, window 7): the shape every Swin code path sees, in seconds.
TINY_SWIN = [
    "model.backbone.type=swin",
    "model.backbone.embed_dim=16",
    "model.backbone.depths=[2,2,2,2]",
    "model.backbone.num_heads=[1,2,2,4]",
    "model.backbone.window_size=7",
    "model.num_queries=8",
    "model.dec_layers=2",
]


def _native_bf16() -> bool:
    from maskformer.inference.accelerate.onednn import native_bf16

    return native_bf16()


# The optimised bf16 path needs the CPU's own bf16 instructions; elsewhere it is refused (tests/test_accelerate_door.py)
NEEDS_BF16 = pytest.mark.skipif(
    not _native_bf16(),
    reason="this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX): the optimised bf16 path is refused here",
)

# One intra-op thread: tests are small, and on a busy 2-core machine two OpenMP threads per process spin-wait
# each other into multi-x slowdowns.
torch.set_num_threads(1)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real-data and parity tests need ../shared beside the repo")
    return SHARED


class SwallowsASigterm:
    """Sends this process a SIGTERM (or ``signum``) from inside ``__del__``, where Python ignores the
    KeyboardInterrupt its handler raises (as it does in logging's fork hook while DataLoader workers start)."""

    def __init__(self, signum: int | None = None) -> None:
        import signal

        self.signum = signal.SIGTERM if signum is None else signum

    def __del__(self) -> None:
        import os
        import time

        os.kill(os.getpid(), self.signum)
        time.sleep(0.01)  # (the handler runs here)


def swallow_a_sigterm_after(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[int]:
    """Make each call of ``owner.name`` end with a swallowed SIGTERM; returns the list that counts the calls."""
    calls: list[int] = []
    plain = getattr(owner, name)

    def then_swallow(self, *args, **kwargs):
        calls.append(1)
        result = plain(self, *args, **kwargs)
        SwallowsASigterm()
        return result

    monkeypatch.setattr(owner, name, then_swallow)
    return calls
