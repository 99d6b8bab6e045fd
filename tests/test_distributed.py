"""torchrun on CPU (gloo) with two processes: criterion normalisation, DDP gradients, and the train command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS
from maskformer.engine.checkpoint import load_checkpoint

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return env


@pytest.fixture(autouse=True, scope="module")
def _torchrun_temp_inside_the_test_folders(tmp_path_factory):
    """torchrun makes a /tmp/torchelastic_* folder per run and leaves it: the runs of these tests make theirs in a
    temporary folder of pytest's (TMPDIR, which every process started here inherits)."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmpdir"))
    yield
    if before is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in the workers' output, also when two ranks' lines ran together."""
    decoder, objects = json.JSONDecoder(), []
    for line in text.splitlines():
        pos = line.find("{")
        while pos != -1:
            obj, end = decoder.raw_decode(line, pos)
            objects.append(obj)
            pos = line.find("{", end)
    return objects


@pytest.mark.slow  # ~10 s; test_torchrun_train_command is the fast smoke test of the same path
@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX shell environment")
def test_two_processes_match_one(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    r = subprocess.run([*TORCHRUN, str(worker)], capture_output=True, text=True, env=_env(), timeout=300)
    lines = _json_objects(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert sorted(x["rank"] for x in lines) == [0, 1]
    for x in lines:
        assert x["num_masks"] and x["grad_rel_err"] and x["params_equal"], x


def test_torchrun_train_command(tmp_path):
    args = [
        *TORCHRUN, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(tmp_path),
        "--quiet", "--set", "train.max_iters=3", "--set", "train.batch_size=4", "--set", "data.num_workers=0",
        "--set", "data.synthetic_image_size=64", "--set", "data.crop_size=[64,64]", "--set", "data.min_size_train=[64]",
        "--set", "train.eval_period=0", "--set", "data.synthetic_val_size=4", "--set", "test.min_size=64",
    ]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "model_final.pt").is_file()
    lines = [json.loads(ln) for ln in open(tmp_path / "metrics.jsonl")]
    assert [ln["iteration"] for ln in lines if "loss" in ln][-1] == 3
    [final] = [ln["eval"] for ln in lines if "eval" in ln]
    assert final["images"] == 4  # both ranks' shards counted once
    # the run's evaluation is the saved model's (every process scores its shard with rank 0's BatchNorm statistics)
    r = subprocess.run([sys.executable, "-m", "maskformer.cli", "eval", str(tmp_path / "model_final.pt"), "--json"],
                       capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    alone = json.loads(r.stdout)
    keys = [k for k, v in final.items() if isinstance(v, float)]
    assert keys and all(abs(final[k] - alone[k]) < 1e-9 for k in keys), (final, alone)


def test_every_process_evaluates_with_the_buffers_rank_0_saves(tmp_path):
    """BatchNorm's running statistics differ between processes after the last step's forward (DDP broadcasts them at
    the next one): the end-of-run evaluation scored rank 1's shard with its own, not those of model_final.pt."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, sys, torch, torch.distributed as dist\n"
        "import maskformer.engine.evaluate as evaluate, maskformer.engine.train as train\n"
        "dist.init_process_group('gloo')\n"
        "model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))\n"
        "model[0].running_mean.fill_(dist.get_rank() + 1.0)\n"
        "evaluate.evaluate_model = lambda cfg, m, device: {'mean': float(m[0].running_mean[0])}\n"
        "seen = train._evaluate(None, model, torch.device('cpu'))\n"
        "sys.stdout.write(json.dumps({'rank': dist.get_rank(), **seen}) + '\\n')\n"
        "dist.destroy_process_group()\n"
    )
    r = subprocess.run([*TORCHRUN, str(script)], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted((x["rank"], x["mean"]) for x in _json_objects(r.stdout)) == [(0, 1.0), (1, 1.0)]


def test_torchrun_errors_are_said_once_and_a_stopped_peer_says_why(tmp_path):
    """A config error was printed by each process; a bad label met by one process left its peer with a gloo
    traceback ("Connection closed by peer"); a finished run printed its metrics once per process. (torchrun adds its
    own failure summary after the workers' lines: that part is the launcher's.)"""
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    (root / "classes.json").parent.mkdir(parents=True)
    (root / "classes.json").write_text('{"classes": ["bg", "a"]}')
    for split in ("train", "val"):
        for i in range(4):
            for sub, array in (
                ("images", np.full((40, 48, 3), 60 * i, np.uint8)),
                ("labels", np.zeros((40, 48), np.uint8)),
            ):
                (root / sub / split).mkdir(parents=True, exist_ok=True)
                if sub == "labels" and split == "train":
                    array[0, 0] = 7  # no such class: every training image is bad, whichever process draws it
                Image.fromarray(array).save(root / sub / split / f"{i}.png")
    base = [*TORCHRUN, "-m", "maskformer.cli", "train", str(CONFIGS / "folder" / "small.yaml"), "--data-root",
            str(root), "--set", "train.max_iters=2", "--set", "data.num_workers=0", "--set", "data.crop_size=[32,32]",
            "--set", "data.min_size_train=[40]"]  # fmt: skip
    r = subprocess.run([*base, "--output-dir", str(tmp_path / "a"), "--set", "train.batch_size=3"],
                       capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert r.returncode != 0
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("maskformer train: error:")]
    assert said == ["maskformer train: error: train.batch_size (3) must be divisible by processes x grad_accum (2 x 1)"]
    r = subprocess.run([*base, "--output-dir", str(tmp_path / "b"), "--set", "train.batch_size=2"],
                       capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert r.returncode != 0
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("maskformer train: error:")]
    assert said and all("label value 7 is not a class id" in ln or "another process of this run failed" in ln
                        for ln in said), r.stderr[-3000:]  # fmt: skip
    assert "[rank" not in r.stderr and "Connection closed" not in r.stderr


def _folder_data(root: Path, bad: set[int], count: int = 4) -> Path:
    """``count`` train + 4 val images of 40x48 with two classes; the train labels numbered in ``bad`` hold value 7."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    (root / "classes.json").write_text('{"classes": ["bg", "a"]}')
    for split in ("train", "val"):
        for i in range(count if split == "train" else 4):
            labels = np.zeros((40, 48), np.uint8)
            labels[10:30, 5:20] = 1
            if split == "train" and i in bad:
                labels[0, 0] = 7
            for sub, array in (("images", np.full((40, 48, 3), 60 * i, np.uint8)), ("labels", labels)):
                (root / sub / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / sub / split / f"{i}.png")
    return root


def test_train_nproc_runs_the_processes_itself_and_says_errors_in_one_line(tmp_path):
    """``maskformer train --nproc 2``: the same run as torchrun's (two processes, DDP over gloo), without the
    launcher's warnings or its traceback when a process fails; a bad file is said once, with the exit code 2."""
    root = _folder_data(tmp_path / "data", bad=set())
    base = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "folder" / "small.yaml"), "--data-root",
            str(root), "--quiet", "--nproc", "2", "--set", "train.max_iters=2", "--set", "data.num_workers=0",
            "--set", "data.crop_size=[32,32]", "--set", "data.min_size_train=[40]", "--set", "train.batch_size=4",
            "--set", "test.min_size=40"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WORLD_SIZE", "RANK")}
    r = subprocess.run([*base, "--output-dir", str(tmp_path / "ok")], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "OMP_NUM_THREADS" not in r.stderr, r.stderr[-3000:]
    lines = [json.loads(ln) for ln in open(tmp_path / "ok" / "metrics.jsonl")]
    assert [ln["iteration"] for ln in lines if "loss" in ln][-1] == 2
    assert any("eval" in ln and ln["eval"]["images"] == 4 for ln in lines)  # both processes' shards, counted once

    for index in (2, 1):  # one bad file, in the share of process 0, then of process 1 (process 0 is stopped)
        bad = _folder_data(tmp_path / f"bad{index}", bad={index})
        r = subprocess.run([*base, "--data-root", str(bad), "--output-dir", str(tmp_path / f"b{index}")],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        said = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() and "another process of this run" not in ln]
        assert r.returncode == 2 and len(said) == 1, r.stderr[-3000:]
        assert f"labels/train/{index}.png: label value 7" in said[0], r.stderr[-3000:]
        assert len(r.stderr.splitlines()) <= 3, r.stderr  # the note on num_classes, the error, maybe the peer's stop
        assert "Traceback" not in r.stderr and not (tmp_path / f"b{index}").exists()  # a failed start leaves nothing

    r = subprocess.run([*base, "--nproc", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "maskformer train: error: --nproc must be at least 1, got 0"
    ]

    # a training split of one picture for two processes: a traceback from the sampler of process 1 (exit code 1)
    one = _folder_data(tmp_path / "one", bad=set(), count=1)
    r = subprocess.run([*base, "--data-root", str(one), "--output-dir", str(tmp_path / "o1")], capture_output=True,
                       text=True, env=env, timeout=300)  # fmt: skip
    said = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert said == ["maskformer train: error: data.train_split=train has 1 sample(s), fewer than the 2 training "
                    "processes: give it more samples, or train with fewer processes"], r.stderr[-3000:]  # fmt: skip


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_train_nproc_stops_on_ctrl_c_without_a_traceback(tmp_path, signum):
    """Ctrl-C or SIGTERM (``kill``, ``timeout``) to the launching process stops every process: exit code 130 / 143, one
    "interrupted" line and, once a checkpoint is written, which iteration it holds (SIGTERM said nothing before) and
    the command that resumes it."""
    import signal
    import time

    args = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir",
            str(tmp_path / "o"), "--quiet", "--nproc", "2", "--set", "train.max_iters=100000", "--set",
            "train.batch_size=4", "--set", "data.num_workers=0", "--set", "data.synthetic_image_size=64", "--set",
            "data.crop_size=[64,64]", "--set", "data.min_size_train=[64]", "--set", "train.eval_period=-1",
            "--set", "train.checkpoint_period=1"]  # fmt: skip
    unset = ("OMP_NUM_THREADS", "WORLD_SIZE", "RANK", "MASKFORMER_NPROC")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        last = tmp_path / "o" / "checkpoint_last.pt"
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the processes are training now
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + getattr(signal, signum), err[-3000:]
    said = err.strip().splitlines()
    assert "Traceback" not in err and said[-1] == "maskformer train: interrupted", err[-3000:]
    assert len(said) == 2 and f"{last} holds iteration" in said[0], err[-3000:]
    # with as many processes (it said `... --resume`, which refused the checkpoint's 2 data streams)
    assert said[0].endswith("--resume --nproc 2` goes on from it"), said[0]


@pytest.mark.parametrize("ready", ["metrics.jsonl", "checkpoint_last.pt"])
def test_sigterm_to_torchrun_stops_the_processes_as_ctrl_c_does(tmp_path, ready):
    """torchrun passes a SIGTERM (``kill``, ``timeout``, a scheduler) on to its processes, which ended without a word:
    the run folder stayed behind without a checkpoint (refusing a new start), and a checkpoint's iteration went
    unsaid. Now rank 0 says it as for Ctrl-C, and a run without a checkpoint leaves nothing."""
    import signal
    import time

    run = tmp_path / "o"
    period = "1" if ready == "checkpoint_last.pt" else "100000"
    args = [*TORCHRUN, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(run),
            "--quiet", "--set", "train.max_iters=100000", "--set", "train.batch_size=4", "--set", "data.num_workers=0",
            "--set", "data.synthetic_image_size=64", "--set", "data.crop_size=[64,64]", "--set",
            "data.min_size_train=[64]", "--set", "train.eval_period=-1", "--set",
            f"train.checkpoint_period={period}"]  # fmt: skip
    env = {k: v for k, v in _env().items() if k not in ("WORLD_SIZE", "RANK", "MASKFORMER_NPROC")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run / ready).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # training
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    ours = [line for line in err.splitlines() if line.startswith("maskformer train")]
    assert ours and ours[-1] == "maskformer train: interrupted", err[-3000:]
    package = str(Path(load_checkpoint.__code__.co_filename).parents[1])  # (src/maskformer)
    assert package not in err, err[-3000:]  # no traceback of ours (torchrun prints one of its own, in torch's files)
    if ready == "metrics.jsonl":
        assert not run.exists(), err[-3000:]
    else:
        held = load_checkpoint(run / "checkpoint_last.pt")["iteration"]
        assert len(ours) == 2 and f"holds iteration {held} " in ours[0] and "--resume" in ours[0], err[-3000:]


def test_two_processes_resume_bit_for_bit_with_aspect_ratio_grouping(tmp_path):
    """Each process keeps its own pending aspect-ratio buckets; the checkpoint held rank 0's alone, so a resumed run
    of 2 processes gave rank 1 rank 0's batches (losses 25.6692 vs 25.6572 after resuming)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "classes.json").write_text('{"classes": ["bg", "a", "b"]}')
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = (40, 64) if i % 3 else (64, 40)  # landscape and portrait: two buckets
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / "train" / f"{i}.png")
        label = np.zeros((h, w), dtype=np.uint8)
        label[h // 4 : h // 2, : w // 2], label[h // 2 :, w // 2 :] = 1, 2
        Image.fromarray(label).save(root / "labels" / "train" / f"{i}.png")
    worker = Path(__file__).with_name("ddp_resume_worker.py")
    for out, how in (("a", "straight"), ("b", "stop"), ("b", "resume")):
        r = subprocess.run([*TORCHRUN, str(worker), str(root), str(tmp_path / out), how], capture_output=True,
                           text=True, env=_env(), timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]

    def losses(run: str) -> list[float]:
        return [json.loads(ln)["loss"] for ln in open(tmp_path / run / "metrics.jsonl") if '"loss"' in ln]

    assert len(losses("a")) == 6 and losses("a") == losses("b")


def test_the_launcher_keeps_the_rendezvous_threads_join_error_quiet(monkeypatch):
    """Stopping `train --nproc` printed, now and then, "Exception ignored in: <finalize object ...> RuntimeError:
    cannot join current thread" (torch's rendezvous stopping its keep-alive thread from that thread) before its
    "interrupted" lines. Other unraisable errors still reach the hook."""
    import sys
    import threading
    import weakref

    import torch.distributed.launcher.api as api

    from maskformer.engine import distributed as dist

    class Stop(Exception):
        pass

    def launch(*args, **kwargs):
        raise Stop

    reached = []
    for name in ("OMP_NUM_THREADS", "MASKFORMER_NPROC"):  # (launch_local sets them for its processes: restored)
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(sys, "unraisablehook", lambda info: reached.append(info.exc_type))
    monkeypatch.setattr(api, "elastic_launch", launch)
    with pytest.raises(Stop):
        dist.launch_local(2, ["info"])
    for func in (lambda: threading.current_thread().join(), lambda: 1 / 0):
        owner = type("Owner", (), {})()
        weakref.finalize(owner, func)
        del owner
    assert reached == [ZeroDivisionError]


def _processes_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line holds ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_processes_of_train_nproc_end_with_their_launcher_even_after_kill_9(tmp_path):
    """torch's launcher starts each process in a session of its own: after `kill -9` of `maskformer train --nproc 2`
    its two processes trained on, into a folder the dead launcher no longer held, so a second run went in beside
    them. Now they get SIGTERM when the launcher dies and stop; the folder is free again."""
    import signal
    import time

    from maskformer.engine.run_folder import hold_run_folder

    out = tmp_path / "run"
    args = [sys.executable, "-m", "maskformer.cli", "train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out),
            "--quiet", "--nproc", "2", "--set", "train.max_iters=100000", "--set", "train.log_period=1",
            "--set", "data.num_workers=0", "--set", "train.eval_period=-1", "--set", "train.batch_size=2",
            "--set", "data.synthetic_image_size=64", "--set", "data.crop_size=[64,64]",
            "--set", "data.min_size_train=[64]"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WORLD_SIZE", "RANK")}
    launcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(600):  # (until the processes train: a logged step; at most ~2 minutes)
            if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 1:
                break
            assert launcher.poll() is None, "the run ended before it was killed"
            time.sleep(0.2)
        workers = [pid for pid in _processes_naming(str(out)) if pid != launcher.pid]
        assert len(workers) == 2, workers
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        for _ in range(300):  # (the processes stop as after a SIGTERM; at most ~60 s)
            if not _processes_naming(str(out)):
                break
            time.sleep(0.2)
        assert not _processes_naming(str(out)), "the processes of the killed launcher train on"
        with hold_run_folder(out, create=False):  # free again
            pass
    finally:
        for pid in _processes_naming(str(out)):
            os.kill(pid, signal.SIGKILL)
