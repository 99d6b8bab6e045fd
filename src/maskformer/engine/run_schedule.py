"""Where a run's schedule starts and ends: resuming from ``checkpoint_last.pt`` (also with another
``train.max_iters``) and fitting the schedule to a time budget (``train.max_minutes``, the demo's ``--minutes``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from ..data.metadata import moved_class
from ..errors import CheckpointError, ConfigError
from ..optim import shorten_schedule
from . import distributed as dist
from .checkpoint import load_checkpoint, set_rng_state, weights_mismatch


def resume_from(
    last: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    loader,
    max_iters: int,
    classes: list[str] | None = None,
    solver: dict | None = None,
    max_minutes: float | None = None,
) -> tuple[int, str]:
    """Load ``checkpoint_last.pt`` into the run's parts; returns (iteration, a note or ""). The LR schedule decays to
    the config's ``train.max_iters`` also when it differs from the saved run's (training extended or cut short).
    ``classes``: the data's class names, which must be the run's (its checkpoint's meta); ``solver``: the config's
    solver section, which must be the run's (the optimizer and schedule state restore the run's values) apart from
    ``_APPLIED_ON_RESUME``; ``max_minutes``: the config's time budget (a finished time-limited run goes on only with
    another ``train.max_iters`` or ``train.max_minutes`` than its own)."""
    state = load_checkpoint(last)
    mismatch = weights_mismatch(model, state.get("model"))  # (before the solver: another model's run says so)
    if mismatch is not None:
        raise CheckpointError(f"{last}: does not fit this config ({mismatch}); resume with the run's config.yaml")
    if not all(key in state for key in ("optimizer", "scheduler")):  # (e.g. a model_final.pt copied over it)
        raise CheckpointError(f"{last}: holds a model but no training state (optimizer, schedule): it is not a run's "
                              f"checkpoint_last.pt; to train on from its weights, start a new run with --set "
                              f"model.weights={last}")  # fmt: skip
    done = state.get("iteration", 0)
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise CheckpointError(f"{last}: its iteration is {done!r}, not a count of steps (a damaged checkpoint_last.pt)")
    if done >= max_iters and (last.parent / "model_final.pt").is_file():  # (not a finished run's evaluation again)
        raise ConfigError(f"{last.parent} is a finished run (iteration {done} of train.max_iters={max_iters}): to "
                          f"train on, resume with --set train.max_iters=N for an N above {done}")  # fmt: skip
    ran = (state.get("config") or {}).get("solver")
    for key, value in (solver or {}).items() if isinstance(ran, dict) else ():
        if key in ran and ran[key] != value and key not in _APPLIED_ON_RESUME:
            raise ConfigError(f"solver.{key}={value} differs from the run's {ran[key]}: a resumed run continues "
                              "its saved optimizer and schedule; start a new run (another --output-dir) to change "
                              "it")  # fmt: skip
    table = (state.get("meta") or {}).get("classes")
    trained = [c.get("name") for c in table if isinstance(c, dict)] if isinstance(table, list) else None
    if classes is not None and trained and trained != list(classes):
        change = moved_class(trained, list(classes)) or _first_change(trained, list(classes))
        raise CheckpointError(f"{last}: the data's class table changed since the run started ({change}; an edited "
                              "classes.json?); resume with the run's classes, or start a new run")  # fmt: skip
    try:
        why = weights_mismatch(model, state.get("model"))
        if why is None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, AttributeError, TypeError) as e:
        why = " ".join(str(e).split())[:300] or type(e).__name__  # (torch's message spans lines)
    if why is not None:
        raise CheckpointError(f"{last}: does not fit this config ({why}); resume with the run's config.yaml") from None
    with _damaged(last, "scheduler"):
        scheduler.load_state_dict(state["scheduler"])  # (this restores the saved run's max_iters too)
    with _damaged(last, "per-process"):
        processes = state.get("processes") or [state]  # (a run of N processes keeps each one's data position, RNG)
        own = processes[dist.rank()] if len(processes) == dist.world_size() else state
    if getattr(loader, "grouped", None) is not None and isinstance(own.get("data"), dict) and (
        "grouped" not in own["data"]
    ):  # fmt: skip
        raise CheckpointError(f"{last}: the run trained without aspect-ratio grouping: resume with --set "
                              "data.aspect_ratio_grouping=false")  # fmt: skip
    try:
        with _damaged(last, "data stream"):
            loader.load_state_dict(own["data"])
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{last}: {e}; resume with the same data, train.seed and number of processes") from None
    with _damaged(last, "random number generator"):
        set_rng_state(own["rng"])
    note, saved = "", scheduler.lr_lambdas[0].kwargs["max_iters"]
    run = (state.get("config") or {}).get("train") or {}
    same = run.get("max_iters") == max_iters and (max_minutes is None or run.get("max_minutes") == max_minutes)
    if done >= saved and same and (last.parent / "model_final.pt").is_file():
        # a run that train.max_minutes ended: its schedule was fitted to `saved` iterations and has decayed
        raise ConfigError(f"{last.parent} is a finished run (train.max_minutes={run.get('max_minutes')} fitted its "
                          f"schedule to {done} of train.max_iters={max_iters} iterations): to train on, resume with "
                          "another --set train.max_minutes=M or train.max_iters=N")  # fmt: skip
    if saved != max_iters:
        shorten_schedule(scheduler, max_iters)
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)  # this iteration's LR on the new decay
        note = f"the LR schedule now ends at train.max_iters={max_iters} (was {saved})"
        if done >= max_iters:  # (lowered below the checkpoint: nothing left to train, which is worth saying)
            note = (f"train.max_iters={max_iters} (was {saved}) is not past the checkpoint's iteration {done}: no "
                    f"step is left, so the model of iteration {done} is the final one")  # fmt: skip
    return int(state["iteration"]), note


_APPLIED_ON_RESUME = {"clip_grad_norm"}  # read from the config at every step


@contextlib.contextmanager
def _damaged(last: Path, what: str) -> Iterator[None]:
    """A training state that does not restore (a damaged or hand-edited checkpoint) as one ``CheckpointError``."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, IndexError, RuntimeError, ValueError) as e:
        if isinstance(e, ValueError) and what == "data stream":  # (the loader's own: other data or seed, said above)
            raise
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{last}: its {what} state does not restore ({type(e).__name__}: {why}): a damaged "
                              "checkpoint_last.pt; start a new run (another --output-dir)") from None  # fmt: skip


def _first_change(trained: list[str], data: list[str]) -> str:
    if len(trained) != len(data):
        return f"{len(trained)} classes in the run, {len(data)} in the data"
    i = next(i for i, (a, b) in enumerate(zip(trained, data)) if a != b)
    return f"class {i} is {data[i]!r} here, {trained[i]!r} in the run"


def fit_to_deadline(iteration: int, mark: tuple[int, float, bool], deadline: float, max_iters: int, t, scheduler,
                     logger) -> tuple[int, int, tuple[int, float, bool]]:  # fmt: skip
    """Size the schedule so that training ends at ``deadline`` (``train.max_minutes``), at most ``train.max_iters``,
    from the pace since ``mark`` = (iteration, time, is the run's start). Refitted after each quarter of what is
    left, from the pace after the first fit: the first steps are slower (start-up), and fitting once on them ended the
    demo at half its time. Returns (max_iters, the next fit's iteration or -1, the mark for the next fit)."""
    now = time.monotonic()
    per_iter = (now - mark[1]) / max(1, iteration - mark[0])
    fitted = min(t.max_iters, max(iteration + 1, iteration + int(0.97 * (deadline - now) / per_iter)))
    if abs(fitted - max_iters) > 0.02 * max_iters:
        shorten_schedule(scheduler, fitted)
        logger.set_total(fitted)
        logger.note(f"{per_iter:.2f} s/iteration: the schedule is fitted to {fitted} iterations "
                    f"(train.max_minutes={t.max_minutes})")  # fmt: skip
        max_iters = fitted
    next_fit = iteration + max(5, (max_iters - iteration) // 4)
    return max_iters, next_fit if next_fit < max_iters else -1, (iteration, now, False) if mark[2] else mark
