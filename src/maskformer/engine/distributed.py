"""Process-group set-up from torchrun's environment (gloo on CPU, NCCL on GPU) and small helpers."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "auto") -> torch.device:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1); returns the device.

    Multi-node works through torchrun's own rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing extra here.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    if use_cuda:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(value: object) -> list[object]:
    """Every process's ``value`` in rank order, on every process (``[value]`` in one process)."""
    if not is_distributed():
        return [value]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of scalars over processes (for logging)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world_size() for k, v in zip(keys, t.tolist())}


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) in every process's ``model``."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, 0)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``python -m maskformer.cli *argv`` as ``nproc`` processes of one run on this machine (what ``torchrun
    --standalone --nproc_per_node nproc`` does, through the same launcher API), and return their exit code: 0, or the
    first failed process's code. Each process prints its own errors (one line each); the launcher's failure report
    and log lines are kept quiet. Each process gets ``OMP_NUM_THREADS`` = CPU cores // nproc unless it is set."""
    import logging
    import shutil
    import sys
    import tempfile
    import uuid

    from torch.distributed.elastic import multiprocessing as elastic_mp
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # (torchrun sets 1 and warns; the children inherit the environment)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    os.environ["MASKFORMER_NPROC"] = str(nproc)  # (the processes say `--nproc N`, not torchrun, in a resume hint)
    os.environ[_LAUNCHER] = str(os.getpid())  # (`follow_launcher` in each process)
    for name in list(logging.root.manager.loggerDict):  # the launcher's loggers set their own level: quiet each one
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    previous_hook = sys.unraisablehook  # (installed once per process, however often it launches)

    def quiet_rendezvous(info: sys.UnraisableHookArgs) -> None:
        # torch's rendezvous stops its keep-alive thread from a weakref finalizer, which can run on that very thread
        # when the launcher is stopped: "Exception ignored in: <finalize object ...> RuntimeError: cannot join
        # current thread" among the interrupt's lines. Only that is kept quiet (for the rest of this process).
        if not (isinstance(info.exc_value, RuntimeError) and "cannot join current thread" in str(info.exc_value)):
            previous_hook(info)

    if getattr(previous_hook, "__name__", "") != "quiet_rendezvous":
        sys.unraisablehook = quiet_rendezvous
    logs = tempfile.mkdtemp(prefix="maskformer_launch_")  # (the launcher's own is never removed: one per run)
    # (torch >= 2.3 takes the folder; an older one makes its own /tmp/torchelastic_* as before)
    takes_folder = "logs_specs" in LaunchConfig.__dataclass_fields__
    where = {"logs_specs": elastic_mp.DefaultLogsSpecs(log_dir=logs)} if takes_folder else {}
    config = LaunchConfig(
        **where,
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port on this machine only
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "maskformer.cli", *argv)
    except ChildFailedError as e:
        codes = [f.exitcode for _, f in sorted(e.failures.items()) if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    except SignalException as e:  # Ctrl-C / SIGTERM: the launcher stopped the processes, which said "interrupted"
        return 128 + int(e.sigval)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return 0


_LAUNCHER = "MASKFORMER_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def follow_launcher() -> None:
    """In a process that ``launch_local`` started: get SIGTERM when the launcher dies, also by ``kill -9``, and stop
    as after a SIGTERM of the launcher. torch's launcher starts each process in a session of its own, so nothing else
    stops them: they went on training into a run folder that the dead launcher no longer held for them. Linux only
    (``prctl``); elsewhere, or when the parent is not that launcher, nothing."""
    launcher = os.environ.get(_LAUNCHER, "")
    if sys.platform != "linux" or not launcher.isdigit() or os.getppid() != int(launcher):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(launcher):  # (it died before the setting took hold)
        os.kill(os.getpid(), signal.SIGTERM)
