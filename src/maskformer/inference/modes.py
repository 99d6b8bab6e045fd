"""Eval mode for one call, without changing the caller's model: a ``Predictor`` built on a model that is training
(a validation pass inside a training loop) must not leave it in eval mode, where dropout and BatchNorm statistics
would silently stop training."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> the lock its calls take turns on
_GUARD = threading.Lock()


def _lock_of(model: nn.Module) -> threading.RLock:
    with _GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every module has the training flag it had (a fine-tuning
    loop may keep some modules, e.g. BatchNorms, in eval mode while the rest trains).

    Calls on one model from several threads take turns: a second thread saw the first one's eval mode as the
    model's own, and the first one's restore put the model in training mode under the second one's forward, whose
    BatchNorms then updated the user's running statistics."""
    with _lock_of(model):
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
