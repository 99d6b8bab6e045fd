"""The devices this package runs on: one check shared by the Predictor and the checkpoint loader."""

from __future__ import annotations

import torch

from maskformer.errors import ConfigError

__all__ = ["check_device"]


def check_device(name: str | torch.device) -> torch.device:
    """The device ``name`` means, or one ``ConfigError`` line: not a device name, a device kind this package does
    not run on (it runs on cpu and cuda), or CUDA asked for where there is none. Worded for the command line's
    ``--device`` and the Python API's ``device=`` alike."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: this package runs on cpu or cuda, not {device.type}")
    if device.type == "cpu" and device.index not in (None, 0):
        raise ConfigError(f"device {name!r}: the CPU is one device: use cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine (use cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
