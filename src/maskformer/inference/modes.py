"""Eval mode for one call, without changing the caller's model: a ``Predictor`` built on a model that is training
(a validation pass inside a training loop) must not leave it in eval mode, where dropout and BatchNorm statistics
would silently stop training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every module has the training flag it had (a fine-tuning
    loop may keep some modules, e.g. BatchNorms, in eval mode while the rest trains)."""
    modes = [m.training for m in model.modules()]
    if not any(modes):  # (the optimised copy: always in eval mode)
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
