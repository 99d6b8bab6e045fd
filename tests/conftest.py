from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIGS = ROOT / "configs"

# One intra-op thread: tests are small, and on a busy 2-core machine two OpenMP threads per process spin-wait
# each other into multi-x slowdowns.
torch.set_num_threads(1)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real-data and parity tests need ../shared beside the repo")
    return SHARED
