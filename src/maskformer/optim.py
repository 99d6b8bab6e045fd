"""AdamW with the original's parameter groups, and its learning-rate schedules (OFFICIAL_SPEC §10 items 11-12)."""

from __future__ import annotations

import bisect

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_multiplier: float = 1.0,
) -> list[dict]:
    """The original's per-parameter rules: backbone LR x multiplier; norm layers, embeddings and Swin's
    relative-position tables get their own weight decay (0 by default); biases keep the normal decay.

    Parameters with equal (lr, weight decay) share one group (``"names"`` lists them): the update is the same as
    one group per parameter, and the optimizer can use its multi-tensor path.
    """
    groups: dict[tuple[float, float], dict] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = base_lr, weight_decay
            full = f"{module_name}.{name}" if module_name else name
            if full.startswith("backbone.") or ".backbone." in full:
                lr = base_lr * backbone_multiplier
            if isinstance(module, NORM_TYPES):
                wd = weight_decay_norm
            elif isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            elif name in NO_DECAY_NAMES:
                wd = 0.0
            group = groups.setdefault((lr, wd), {"params": [], "lr": lr, "weight_decay": wd, "names": []})
            group["params"].append(p)
            group["names"].append(full)
    return list(groups.values())


def build_optimizer(model: nn.Module, *, name: str, base_lr: float, **group_kwargs: float) -> torch.optim.Optimizer:
    groups = param_groups(model, base_lr=base_lr, **group_kwargs)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=0.9, foreach=True)
    raise ValueError(f"unknown optimizer '{name}' (expected adamw or sgd)")


def lr_factor(
    it: int,
    *,
    max_iters: int,
    schedule: str = "poly",
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
    steps: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base LR at iteration ``it`` (detectron2's WarmupPolyLR / WarmupMultiStepLR, linear warm-up)."""
    warm = 1.0
    if it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    if schedule == "poly":
        return warm * max(0.0, 1.0 - it / max_iters) ** power  # (0 past the end, not a complex number)
    if schedule == "multistep":
        return warm * gamma ** bisect.bisect_right(sorted(steps), it)
    raise ValueError(f"unknown lr schedule '{schedule}' (expected poly or multistep)")


class LRSchedule:
    """``lr_factor`` with fixed keyword arguments; ``max_iters`` may be shortened once training has started (the
    time-budgeted demo fits the poly decay into the time it has)."""

    def __init__(self, **factor_kwargs) -> None:
        self.kwargs = factor_kwargs

    def __call__(self, it: int) -> float:
        return lr_factor(it, **self.kwargs)

    def set_max_iters(self, max_iters: int) -> None:
        self.kwargs["max_iters"] = int(max_iters)


def build_scheduler(optimizer: torch.optim.Optimizer, **factor_kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration; each group keeps its own base LR (backbone multiplier)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(**factor_kwargs))


def shorten_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, max_iters: int) -> None:
    """Fit the decay of a ``build_scheduler`` schedule into ``max_iters`` iterations (time-budgeted training, and a
    resumed run whose train.max_iters differs from the saved one's)."""
    for schedule in scheduler.lr_lambdas:
        schedule.set_max_iters(max_iters)
