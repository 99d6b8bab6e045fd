"""The training loop: iteration-based, one process or many (torchrun / DDP), resumable exactly.

Per iteration: ``grad_accum`` micro-batches (forward, criterion, backward), a non-finite check, full-model gradient
clipping, an optimizer step and a per-iteration LR step. Every ``checkpoint_period`` iterations rank 0 writes
``checkpoint_last.pt`` (weights, optimizer, scheduler, iteration, RNG states, data-stream position) atomically; at the
end ``model_final.pt``. Metrics go to ``metrics.jsonl`` (and TensorBoard when installed).
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import nn

from ..allocator import reuse_freed_memory
from ..build import build_criterion, build_dataset, build_meta, build_model, build_optimizer, build_scheduler
from ..config import Config, config_to_dict, save_config
from ..errors import ConfigError, DataError, UserError, interrupts_held, is_interrupt, raise_if_terminated
from ..modeling.layers import set_winograd
from . import distributed as dist
from .checkpoint import rng_state, save_checkpoint, unwrap
from .initial_weights import load_initial_weights
from .logging import MetricLogger
from .run_folder import check_no_run, check_resumable, hold_run_folder, remove_new
from .run_schedule import fit_to_deadline, resume_from
from .runtime import channels_last, emulated_bf16, set_tf32
from .step import autocast, finite_outputs, targets_to, to_float

# training splits of up to this many samples are read once before the first step (a bad file is named at once;
# larger ones are checked as steps read them); the validation split is always read first
CHECK_FIRST = 2000


class TrainingError(UserError):
    """Training cannot go on (e.g. a non-finite loss); the message says where the last good checkpoint is."""


def train(
    cfg: Config, *, output_dir: str | Path, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> dict:
    """Train ``cfg`` and return the final metrics (``{}`` when ``train.eval_period`` < 0). Writes into ``output_dir``.

    ``stop_at``: leave after this iteration as if interrupted (checkpoint written, no final model); for tests.
    Any failure (bad data, config or checkpoint, a killed loader worker) or Ctrl-C before this call saved a checkpoint
    removes what it wrote (config.yaml, metrics.jsonl, tb/ and the folder itself when it made it): a run that stops on
    a bad label at step 3 leaves nothing behind (a config.yaml that was in the folder gets its content back), one that
    stops after its first checkpoint keeps it for ``--resume``.
    """
    out = Path(output_dir)
    with hold_run_folder(out, create=not resume) as made:
        return _train_in(cfg, out, made, resume=resume, progress=progress, stop_at=stop_at)


def _train_in(cfg: Config, out: Path, made: bool, *, resume: bool, progress: bool, stop_at: int | None) -> dict:
    """:func:`train` while the run folder is held (``made``: that call made the folder)."""
    if not resume:
        check_no_run(out)
    before = None if made or not out.is_dir() else set(out.iterdir())
    kept = (out / "config.yaml").read_bytes() if (out / "config.yaml").is_file() else None
    steps = [0, 0, -1, 0]
    try:
        with ExitStack() as cleanup:  # (the metrics file and TensorBoard are closed also when training fails)
            return _train(cfg, out, resume=resume, progress=progress, stop_at=stop_at, steps=steps, cleanup=cleanup)
    except BaseException as e:  # (Ctrl-C, SIGTERM, a full disk or any failure before the first checkpoint: anew)
        interrupted = is_interrupt(e)
        if not (interrupted or isinstance(e, Exception)):
            raise
        if interrupted and hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
            # the DataLoader's handler would raise again for each worker the same signal stopped, up to the exit
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        saved = steps[1] > 0 and (out / "checkpoint_last.pt").is_file()  # (not when the disk filled up writing it)
        if not saved and not resume and dist.is_main():
            remove_new(out, before)
            if kept is not None:  # a config.yaml that was there (yours: a failed start leaves nothing behind)
                (out / "config.yaml").write_bytes(kept)
        elif not saved and resume and kept is not None and dist.is_main():
            (out / "config.yaml").write_bytes(kept)  # a refused or failed resume keeps the run's own config
        if interrupted and not isinstance(e, KeyboardInterrupt):  # (the workers' end, raised within the interrupt)
            stop = KeyboardInterrupt()
            stop.checkpoint_iteration = steps[2]  # type: ignore[attr-defined]
            stop.training_finished = bool(steps[3])  # type: ignore[attr-defined]
            raise stop from None
        held = steps[2] >= 0 and (out / "checkpoint_last.pt").is_file()  # (a full disk: resumable once there is room)
        if interrupted or (saved and isinstance(e, DataError)) or (held and isinstance(e, OSError)):
            e.checkpoint_iteration = steps[2]  # type: ignore[attr-defined]
            e.training_finished = bool(steps[3])  # type: ignore[attr-defined]
        raise


def _train(cfg: Config, out: Path, *, resume: bool, progress: bool, stop_at: int | None, steps: list[int],
           cleanup: ExitStack) -> dict:  # fmt: skip
    """The body of :func:`train`; ``steps``: the completed steps, the checkpoints saved by this call, the iteration
    checkpoint_last.pt holds (-1: none yet) and 1 once model_final.pt is written (only the final evaluation is left)."""
    from ..data import InfiniteSampler, build_train_loader, collate, seed_everything
    from ..data.loader import usable_workers

    device = dist.init_from_env()
    rank, world = dist.rank(), dist.world_size()
    t = cfg.train
    if t.batch_size % (world * t.grad_accum):
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be divisible by processes x grad_accum ({world} x {t.grad_accum})"
        )
    per_step = t.batch_size // (world * t.grad_accum)
    last = out / "checkpoint_last.pt"
    if resume:  # before anything is written into the folder
        check_resumable(out)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    seed_everything(t.seed + rank)
    set_tf32(t.tf32)
    reuse_freed_memory()  # each step frees and reallocates the same large tensors (maskformer/allocator.py)

    meta = build_meta(cfg)
    model = build_model(cfg)
    init_note = load_initial_weights(cfg, model)
    model.to(device).train()
    nhwc = channels_last(t.channels_last, device)  # ("auto": by the CPU's vector width)
    if nhwc:
        model.to(memory_format=torch.channels_last)
    set_winograd(model, t.winograd)
    criterion = build_criterion(cfg, ignore_label=meta.ignore_label).to(device)
    dataset = build_dataset(cfg, split=cfg.data.train_split, train=True)

    def check_first(data, split: str) -> None:  # every sample read once now, not when (or if) a step draws it
        if not data.skip_bad_samples:  # (each process of a run reads its share: a bad file is said once)
            bar = f"checking {split}" if progress and dist.is_main() else ""
            data.check_all(raise_first=True, progress=bar, threads=usable_workers(2), share=(rank, world))

    if len(dataset) <= CHECK_FIRST:
        check_first(dataset, cfg.data.train_split)
        if world == 1 and 0 < len(dataset) == getattr(dataset, "unlabelled", 0):
            raise DataError(f"every label of data.train_split={cfg.data.train_split} holds only the ignore label: "
                            "nothing to learn (is ignore_label the value of a class?)")  # fmt: skip
    same_split = False
    if t.eval_period >= 0:  # the evaluation split is always read now: a bad file there fails before training
        try:
            val = build_dataset(cfg, split=cfg.data.val_split, train=False)
            files = [[e.get("file_name") for e in getattr(d, "entries", [])] for d in (dataset, val)]
            same_split = bool(files[0]) and files[0] == files[1]
            check_first(val, cfg.data.val_split)
        except DataError as e:
            raise DataError(f"{e} (data.val_split={cfg.data.val_split} is evaluated during and after training; "
                            "--set train.eval_period=-1 trains without evaluation)") from None  # fmt: skip
    if len(dataset) < world:  # (each process trains on its own share of every epoch)
        raise ConfigError(f"data.train_split={cfg.data.train_split} has {len(dataset)} sample(s), fewer than the "
                        f"{world} training processes: give it more samples, or train with fewer processes")  # fmt: skip
    sampler = InfiniteSampler(len(dataset), seed=t.seed, rank=rank, world_size=world, tag_with_seed=True)
    collate_fn = functools.partial(
        collate,
        size_divisibility=cfg.model.size_divisibility,
        pixel_mean=cfg.model.pixel_mean,
        pixel_std=cfg.model.pixel_std,
    )
    loader = build_train_loader(
        dataset, batch_size_per_process=per_step, sampler=sampler, num_workers=cfg.data.num_workers,
        collate_fn=collate_fn, seed=t.seed,
        group_of=dataset.aspect_group if cfg.data.aspect_ratio_grouping and per_step > 1 else None,
    )  # fmt: skip
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)

    start = 0
    resume_note = ""
    if resume:
        start, resume_note = resume_from(
            last,
            model,
            optimizer,
            scheduler,
            loader,
            t.max_iters,
            meta.classes,
            config_to_dict(cfg)["solver"],
            max_minutes=t.max_minutes,
        )
        steps[2] = start
        init_note = f"resumed from {last} at iteration {start}"
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def save_last(iteration: int) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            logger.close()
            raise TrainingError(
                f"the weights became non-finite in iteration {iteration}; {_last_good(last)}"
                " (lower solver.base_lr or set solver.clip_grad_norm)"
            )
        steps[1] += 1
        # each process's data position (its aspect-ratio buckets differ) and random state, so a resumed run of
        # N processes goes on bit for bit: ``processes`` [rank] (``data`` and ``rng`` are rank 0's)
        own = {"data": loader.state_dict(), "rng": rng_state()}
        every = {"processes": dist.all_gather_objects(own)} if world > 1 else {}
        with interrupts_held():  # (a signal meanwhile waits until the file is written and its iteration noted)
            if dist.is_main():
                save_checkpoint(
                    last, cfg=cfg, model=model, meta=meta.to_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), iteration=iteration, **own, **every,
                )  # fmt: skip
            steps[2] = iteration  # (the iteration checkpoint_last.pt holds)

    logger = MetricLogger(
        out, total=t.max_iters, start=start, enabled=dist.is_main(), console=progress, period=t.log_period
    )
    cleanup.callback(logger.close)
    logger.note(f"{init_note}; {sum(p.numel() for p in model.parameters()):,} parameters; {world} process(es); "
                f"batch {t.batch_size} = {world} x {t.grad_accum} x {per_step}")  # fmt: skip
    if resume_note:
        logger.note(resume_note)
    if same_split:  # (e.g. a flat images/ + annotations/ folder, which serves every split)
        splits = (f"data.train_split and data.val_split are both {cfg.data.train_split!r}"
                  if cfg.data.train_split == cfg.data.val_split
                  else f"the {cfg.data.train_split} and {cfg.data.val_split} splits are the same")  # fmt: skip
        logger.note(f"data: {splits} ({len(dataset)} images): the evaluation measures training images")
    if t.amp == "bf16" and emulated_bf16(str(device)):  # (it ran about twice as slow as fp32 without a word)
        logger.note("train.amp=bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), where torch emulates "
                    "it, slower than fp32 (train.amp=none is faster here)")  # fmt: skip
    if loader.num_workers < cfg.data.num_workers:
        logger.note(f"data.num_workers={cfg.data.num_workers}: {loader.num_workers} loader workers, one per CPU here")
    if start and t.eval_period > 0 and start % t.eval_period == 0 and start < t.max_iters:
        # a run stopped during this evaluation (its checkpoint is written before it): it is run again
        if not dist.all_gather_objects(logger.evaluated(start))[0]:
            logger.note(f"the evaluation at iteration {start} did not end before the run stopped: it runs now")
            logger.log_eval(start, _evaluate(cfg, model, device))
            model.train()
    deadline = time.monotonic() + 60 * t.max_minutes if t.max_minutes > 0 else math.inf
    logger.deadline = deadline  # (the first ETAs, before the iterations are fitted to the budget, stay within it)
    max_iters = t.max_iters
    fit_at = start + max(5, min(30, t.max_iters // 20))  # when a time budget is set, size the schedule after this
    mark = (start, time.monotonic(), True)  # (iteration, time, is the start) the pace is measured from
    batches = iter(loader)
    iteration = start
    while iteration < max_iters:
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        terms: dict[str, float] = {}
        for _ in range(t.grad_accum):
            images, targets, records = next(batches)
            images = images.to(device, non_blocking=True)
            if nhwc:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets_to(targets, records, images.shape[-2:], meta.ignore_label, device)
            with autocast(t.amp, device):
                try:
                    outputs = ddp(images)
                except ValueError as e:  # torch's BatchNorm on a 1x1 map of a single image
                    if "more than 1 value per channel" not in str(e):
                        raise
                    raise ConfigError(
                        f"a BatchNorm layer saw one value per channel ({per_step} image(s) per step of "
                        f"{tuple(images.shape[-2:])} px): raise train.batch_size or data.crop_size"
                    ) from None
            if not finite_outputs(outputs):  # (before the matcher, which cannot match non-finite costs)
                logger.close()
                raise TrainingError(
                    f"non-finite predictions at iteration {iteration + 1}; {_last_good(last)}"
                    " (lower solver.base_lr or check the data)"
                )
            losses = criterion(to_float(outputs), targets)
            (losses["loss"] / t.grad_accum).backward()
            for k, v in losses.items():
                terms[k] = terms.get(k, 0.0) + v.item() / t.grad_accum
        raise_if_terminated()  # (a SIGTERM whose KeyboardInterrupt Python swallowed, e.g. in a fork hook)
        terms = dist.all_reduce_mean(terms)  # the whole batch's loss (every process's share), logged and checked
        if not math.isfinite(terms["loss"]):
            logger.close()
            raise TrainingError(
                f"non-finite loss at iteration {iteration + 1} ({terms['loss']}); {_last_good(last)}"
                " (lower solver.base_lr or check the data)"
            )
        if cfg.solver.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.solver.clip_grad_norm)
        optimizer.step()
        lr = max(g["lr"] for g in optimizer.param_groups)
        scheduler.step()
        iteration += 1
        steps[0] += 1
        logger.step(iteration, terms, lr=lr, seconds=time.perf_counter() - tic)
        if t.checkpoint_period and iteration % t.checkpoint_period == 0:
            save_last(iteration)
        if t.eval_period > 0 and iteration % t.eval_period == 0 and iteration < max_iters:
            logger.log_eval(iteration, _evaluate(cfg, model, device))
            model.train()
        if stop_at is not None and iteration >= stop_at:
            save_last(iteration)
            logger.close()
            return {}
        if iteration == fit_at and deadline < math.inf:
            max_iters, fit_at, mark = fit_to_deadline(iteration, mark, deadline, max_iters, t, scheduler, logger)
        if time.monotonic() > deadline:
            logger.note(f"time limit train.max_minutes={t.max_minutes} reached at iteration {iteration}")
            break
    save_last(iteration)
    if dist.is_main():
        save_checkpoint(out / "model_final.pt", cfg=cfg, model=model, meta=meta.to_dict(), iteration=iteration)
    steps[3] = 1
    bad = getattr(loader, "bad_samples", [])
    if bad:
        logger.note(f"skipped {len(bad)} bad samples, e.g. {bad[0][0]}: {bad[0][1]}")
    metrics = _evaluate(cfg, model, device) if t.eval_period >= 0 else {}
    if metrics:
        logger.log_eval(iteration, metrics)
    logger.close()
    return metrics


def _last_good(last: Path) -> str:
    return f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved before"


def _evaluate(cfg: Config, model: nn.Module, device: torch.device) -> dict:
    """The evaluation of the model rank 0 saves: every process scores its shard with rank 0's buffers (BatchNorm's
    running statistics drift apart in the last step's forward, which DDP broadcasts only at the next one)."""
    from .evaluate import evaluate_model

    dist.broadcast_buffers(unwrap(model))
    return evaluate_model(cfg, unwrap(model), device=device)
