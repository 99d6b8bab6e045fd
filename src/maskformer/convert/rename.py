"""Rename tables: ordered ``(regex, replacement)`` rules applied to every source key; each key must end up in the
target state dict with the same shape, or be explicitly dropped. Anything else is an error listing the keys."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import torch

from ..errors import CheckpointError

DROP = None  # replacement meaning "consumed on purpose, not loaded"


def rename_keys(keys: Iterable[str], rules: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """Map each source key through the first matching rule (``re.fullmatch``); unmatched keys map to themselves."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, str | None] = {}
    for key in keys:
        for pattern, repl in compiled:
            match = pattern.fullmatch(key)
            if match:
                out[key] = None if repl is None else match.expand(repl)
                break
        else:
            out[key] = key
    return out


def convert_state(
    source: dict[str, np.ndarray | torch.Tensor],
    rules: list[tuple[str, str | None]],
    target: dict[str, torch.Tensor],
    *,
    source_name: str,
    allow_missing: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``source`` into ``target``'s keys. Raises CheckpointError listing unconsumed source keys, unfilled
    target keys (except those matching an ``allow_missing`` regex) and shape mismatches."""
    mapping = rename_keys(source.keys(), rules)
    out: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for src, dst in mapping.items():
        if dst is None:
            continue
        if dst not in target:
            unexpected.append(src)
            continue
        value = source[src]
        # np.asarray, not np.ascontiguousarray: a 0-d array (BatchNorm's num_batches_tracked) must stay 0-d
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value, order="C"))
        if tuple(tensor.shape) != tuple(target[dst].shape):
            mismatched.append(f"{src} {tuple(tensor.shape)} -> {dst} {tuple(target[dst].shape)}")
            continue
        out[dst] = tensor.to(target[dst].dtype)
    allow = [re.compile(p) for p in allow_missing]
    missing = [k for k in target if k not in out and not any(a.fullmatch(k) for a in allow)]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} source keys not consumed: {_short(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} model keys not filled: {_short(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_short(mismatched)}")
    if problems:
        raise CheckpointError(f"{source_name}: " + "; ".join(problems))
    return out


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
