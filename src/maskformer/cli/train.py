"""``maskformer train CONFIG``: train on one process, or many under torchrun (DDP)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a config",
        description="Train from a YAML config, in one process or, with --nproc N, in N processes of one run on this"
        " machine (DDP: gloo on CPU, NCCL on GPUs; train.batch_size is the total). Many machines: torchrun --nnodes ..."
        " -m maskformer.cli train CONFIG. Writes OUTPUT_DIR/checkpoint_last.pt (resumable), model_final.pt,"
        " metrics.jsonl and config.yaml.",
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_iters=1000 (repeatable)",
    )
    p.add_argument("--output-dir", default="output", help="where checkpoints and logs go (default: output)")
    p.add_argument("--data-root", help="shortcut for --set data.root=DIR")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/checkpoint_last.pt with the run's config.yaml (plus this command's --set)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output (metrics.jsonl is still written)")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train as N processes on this machine (like torchrun --standalone --nproc_per_node N; default 1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    from pathlib import Path

    import maskformer
    from maskformer.build import check_dataset_name, fit_classes
    from maskformer.build.datasets import sets_num_classes
    from maskformer.engine import distributed as dist
    from maskformer.engine.run_folder import (
        HELD_BY_LAUNCHER,
        check_not_held,
        check_resumable,
        hold_run_folder,
        remove_new,
    )
    from maskformer.engine.train import train
    from maskformer.errors import note_signal, one_line
    from maskformer.fileio import json_text
    from maskformer.zoo import config_file

    # (an absolute data root: the run's config.yaml then works from any folder, for eval and --resume)
    overrides = list(args.overrides) + ([f"data.root={os.path.abspath(args.data_root)}"] if args.data_root else [])
    if args.nproc < 1:
        raise maskformer.ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    dist.follow_launcher()  # (a process of `--nproc N`: it ends with the launcher, even after kill -9)
    check_not_held(Path(args.output_dir))  # (another training writing there: said first, and only that)
    if args.resume:  # (before the config's data root is checked: a mistyped run folder is named as such)
        check_resumable(Path(args.output_dir))
    if args.nproc > 1:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise maskformer.ConfigError("--nproc under torchrun: torchrun already started the processes")
        maskformer.load_config(config_file(args.config), overrides)  # a bad config or key: said once, first
        out = Path(args.output_dir)
        # the launcher holds the folder for its processes as long as they run (a refused start changes nothing)
        with hold_run_folder(out, create=not args.resume) as made:
            before = None if made or not out.is_dir() else set(out.iterdir())
            os.environ[HELD_BY_LAUNCHER] = str(out.resolve())
            try:
                code = dist.launch_local(args.nproc, [*args.argv, "--nproc", "1"])  # (the last --nproc counts)
            finally:
                del os.environ[HELD_BY_LAUNCHER]
            if code and not args.resume and not (out / "checkpoint_last.pt").exists():
                remove_new(out, before)  # a stopped process may not have cleaned up: a failed start leaves nothing
        if code == 128 + signal.SIGTERM:  # the launcher stopped the processes, which had no time to say it
            _say_how_to_resume(out, args.config, _held_iteration(out / "checkpoint_last.pt"), nproc=args.nproc)
            note_signal(signal.SIGTERM)
            raise KeyboardInterrupt  # ("interrupted", exit code 143, as one process says it)
        return code
    explicit = sets_num_classes(overrides)
    cfg = maskformer.load_config(config_file(args.config), overrides)
    saved = Path(args.output_dir) / "config.yaml"
    if args.resume and not saved.is_file():  # (it went back to CONFIG's values without a word)
        saved = _config_of_checkpoint(Path(args.output_dir))
    if args.resume and saved.is_file():  # the run's own values, not CONFIG's: an earlier --set stays in force
        given, cfg = cfg, maskformer.load_config(saved, [*_older_run_defaults(saved), *overrides])
    check_dataset_name(cfg)
    if cfg.data.dataset == "synthetic" and args.data_root:  # (it trained on the generated scenes, with no word)
        raise maskformer.ConfigError(f"--data-root {args.data_root}: data.dataset=synthetic generates its scenes "
                                     "and reads no folder: leave --data-root out, or set data.dataset")  # fmt: skip
    if cfg.data.dataset not in ("synthetic",) and not Path(cfg.data.root).exists():
        raise maskformer.ConfigError(f"data.root: {cfg.data.root} does not exist (pass --data-root DIR)")
    cfg = fit_classes(cfg, explicit=explicit)
    if args.resume and saved.is_file() and not args.quiet and os.environ.get("RANK", "0") == "0":
        _say_kept_values(saved, args.config, given, cfg)
    try:
        metrics = train(cfg, output_dir=args.output_dir, resume=args.resume, progress=not args.quiet)
        main_process = dist.is_main()  # (after cleanup every process would count as the main one)
    except KeyboardInterrupt as e:
        if dist.is_main():
            out = Path(args.output_dir)
            # (an interrupt that came while another unwound carries no iteration: the file on disk says it, unless
            # the run had finished)
            held = getattr(e, "checkpoint_iteration", None)
            if held is None:
                held = -1 if (out / "model_final.pt").exists() else _held_iteration(out / "checkpoint_last.pt")
            _say_how_to_resume(out, args.config, held, finished=getattr(e, "training_finished", False))
        raise
    except maskformer.DataError as e:  # a bad file met after a checkpoint: the run goes on once it is fixed
        held = getattr(e, "checkpoint_iteration", -1)
        if held < 0:
            raise
        note = _resume_note(Path(args.output_dir), args.config, held, ": once the file is fixed, ")
        raise maskformer.DataError(f"{one_line(e)}; {note}") from None
    except OSError as e:  # a full disk after a checkpoint: said as every OSError (exit 1), with what it holds
        held = getattr(e, "checkpoint_iteration", -1)
        if held < 0 or not dist.is_main():
            raise
        note = _resume_note(Path(args.output_dir), args.config, held, ": once that is mended, ")
        raise OSError(e.errno, f"{e.strerror or e}; {note}", e.filename) from None
    finally:
        dist.cleanup()
    if metrics and main_process and not args.quiet:
        print(json_text({k: v for k, v in metrics.items() if isinstance(v, int | float)}, indent=1))
    return 0


def _config_of_checkpoint(out: Path) -> Path:
    """A run folder without config.yaml: the config stored in its checkpoint_last.pt, written back as config.yaml
    (a note says so)."""
    import os
    import sys

    from maskformer.config import config_from_dict, save_config
    from maskformer.engine.checkpoint import load_checkpoint
    from maskformer.errors import CheckpointError

    stored = load_checkpoint(out / "checkpoint_last.pt").get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{out}: no config.yaml, and checkpoint_last.pt holds no config to resume with")
    save_config(config_from_dict(stored), out / "config.yaml")
    if os.environ.get("RANK", "0") == "0":
        print(f"note: {out}/config.yaml was missing: written again from checkpoint_last.pt", file=sys.stderr)
    return out / "config.yaml"


def _older_run_defaults(saved: Path) -> list[str]:
    """Overrides that keep a run saved by an older version on what it trained with, for keys its config.yaml does not
    have: train.winograd off (the arithmetic), data.aspect_ratio_grouping off (the data stream its checkpoint holds)."""
    import yaml

    try:
        run = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        sections = {name: run.get(name) or {} for name in ("train", "data")}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return []  # (load_config names what is wrong with the file)
    added = {("train", "winograd"): "train.winograd=false", ("data", "aspect_ratio_grouping"):
             "data.aspect_ratio_grouping=false"}  # fmt: skip
    return [kv for (section, key), kv in added.items()
            if isinstance(sections[section], dict) and key not in sections[section]]  # fmt: skip


def _say_how_to_resume(out: Path, config: str, iteration: int, *, nproc: int = 0, finished: bool = False) -> None:
    """After Ctrl-C or SIGTERM: which checkpoint is kept (the steps after it are lost) and how to go on from it; or,
    ``finished`` (stopped in the final evaluation, after model_final.pt was written), how to run that evaluation."""
    import shlex
    import sys

    if finished:  # (--resume would refuse a finished run)
        final = out / "model_final.pt"
        print(f"maskformer train: training finished ({final}, iteration {iteration}); its final evaluation was "
              f"stopped: `maskformer eval {shlex.quote(str(final))}` runs it", file=sys.stderr)  # fmt: skip
        return
    if iteration < 0 or not (out / "checkpoint_last.pt").is_file():
        return
    note = _resume_note(out, config, iteration, " (the steps after it are lost); ", nproc=nproc)
    print(f"maskformer train: {note}", file=sys.stderr)


def _resume_note(out: Path, config: str, iteration: int, between: str, *, nproc: int = 0) -> str:
    """Which iteration the run's checkpoint holds and the command that goes on from it: with as many processes as
    the run had (its saved data stream is one per process). ``nproc``: the --nproc launcher's count (in the parent),
    else read from the environment torchrun or the launcher set."""
    import os
    import shlex

    line, where = f"{shlex.quote(str(config))} --output-dir {shlex.quote(str(out))} --resume", ""
    world = nproc or int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and (nproc or os.environ.get("MASKFORMER_NPROC")):  # (started by --nproc)
        command = f"maskformer train {line} --nproc {world}"
    elif world > 1:  # torchrun
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
        where = "" if local == world else f" on each of the run's {world // local} nodes"
        command = f"torchrun --nproc_per_node {local} -m maskformer.cli train {line}"
    else:
        command = f"maskformer train {line}"
    return f"{out / 'checkpoint_last.pt'} holds iteration {iteration}{between}`{command}`{where} goes on from it"


def _held_iteration(path: Path) -> int:
    """The iteration a run's checkpoint_last.pt holds (-1 when there is none or it cannot be read)."""
    import torch

    try:  # (memory-mapped: only the one number is read)
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["iteration"])
    except Exception:  # noqa: BLE001 - no number to tell: the note is left out
        return -1


def _say_kept_values(saved, config: str, given, cfg) -> None:
    """One note on stderr naming the values where CONFIG (with this command's --set) differs from the run's
    config.yaml, which ``--resume`` keeps."""
    import sys

    from maskformer.config import config_to_dict

    def flat(data: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    ours, theirs = flat(config_to_dict(cfg)), flat(config_to_dict(given))
    differ = [k for k in ours if ours[k] != theirs.get(k) and k != "model.num_classes"]  # (fitted to the data)
    if differ:
        shown = ", ".join(f"{k}={ours[k]} (there {theirs.get(k)})" for k in differ[:5])
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        print(
            f"note: --resume keeps the values of {saved} where {config} differs: {shown}{more};"
            " --set KEY=VALUE changes a value",
            file=sys.stderr,
        )
