"""Training logs: a progress bar with loss and ETA on a terminal, plain lines otherwise, JSONL metrics, and
TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from maskformer.fileio import atomic_write_text, json_text


def _open_log(path: Path, start: int):
    """``metrics.jsonl`` for appending after iteration ``start`` (unbuffered bytes, see ``_append``): a new run starts
    an empty file; a resumed one drops the lines logged after its checkpoint (iterations > start), which the resumed
    run logs again, and a last line without its newline (cut by a crash). Also returns the iterations of the
    evaluations the kept lines hold."""
    if start <= 0 or not path.exists():
        return open(path, "wb", buffering=0), set()
    text = path.read_text()
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]
    kept, evaluated = [], set()
    for line in lines:
        try:
            record = json.loads(line)
            if int(record.get("iteration", 0)) > start:
                continue
            if "eval" in record:
                evaluated.add(int(record["iteration"]))
        except (ValueError, TypeError, AttributeError):
            pass  # not a metrics line: kept as it is
        kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
    return open(path, "ab", buffering=0), evaluated


def _append(file, record: dict) -> None:
    """One line onto the metrics file, whole or not at all: a write that fails (a full disk) is taken back and
    raised naming the file."""
    data = memoryview((json_text(record) + "\n").encode())
    end = file.tell()
    try:
        while data:  # (a raw write may take part of it)
            data = data[file.write(data) :]
    except OSError as e:
        try:
            file.truncate(end)
        except OSError:
            pass
        raise OSError(e.errno, e.strerror, str(file.name)) from None


class MetricLogger:
    """Writes ``metrics.jsonl`` lines ``{"iteration", "loss", <terms>, "lr", "time"}`` every ``period`` iterations
    and on evaluation ``{"iteration", "eval": {...}}``. Only the main process logs (``enabled=True``)."""

    def __init__(
        self,
        output_dir: Path,
        *,
        total: int,
        start: int = 0,
        enabled: bool = True,
        console: bool = True,
        period: int = 20,
    ) -> None:
        self.show = enabled
        self.console = enabled and console
        self.period = period
        self.total = total
        self.file, self._evaluated = _open_log(Path(output_dir) / "metrics.jsonl", start) if enabled else (None, set())
        self.bar = None
        if self.console and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(output_dir) / "tb"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None
        self.t0 = time.monotonic()
        self.start = start
        self._acc: dict[str, float] = {}
        self._n = 0
        self.train_seconds = 0.0  # summed step times of this run (evaluation excluded)
        self.deadline = math.inf  # time.monotonic() at which a time budget (train.max_minutes) ends training

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar:
            self.bar.total = total
            self.bar.refresh()

    def note(self, text: str) -> None:
        if self.console:
            (self.bar.write if self.bar else lambda s: print(s, file=sys.stderr, flush=True))(f"[maskformer] {text}")

    def step(self, iteration: int, terms: dict[str, float], *, lr: float, seconds: float) -> None:
        for k, v in terms.items():
            self._acc[k] = self._acc.get(k, 0.0) + v
        self._n += 1
        self.train_seconds += seconds
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{lr:.2e}")
        if iteration % self.period and iteration != self.total:
            return
        avg = {k: v / self._n for k, v in self._acc.items()}
        self._acc, self._n = {}, 0
        record = {
            "iteration": iteration,
            **{k: round(v, 6) for k, v in avg.items()},
            "lr": lr,
            "time": round(seconds, 4),
        }
        if self.show and self.file:
            _append(self.file, record)
        if self.tb:
            for k, v in avg.items():
                self.tb.add_scalar(f"train/{k}", v, iteration)
            self.tb.add_scalar("train/lr", lr, iteration)
        if self.console and not self.bar:
            done = iteration - self.start
            now = time.monotonic()
            eta = min((now - self.t0) / max(done, 1) * (self.total - iteration), max(0.0, self.deadline - now))
            print(f"[maskformer] iter {iteration}/{self.total} loss {avg['loss']:.4f} lr {lr:.2e} "
                  f"eta {eta / 60:.1f} min", file=sys.stderr, flush=True)  # fmt: skip

    def log_eval(self, iteration: int, metrics: dict) -> None:
        if not self.show:
            return
        if self.file:
            record = {"iteration": iteration, "train_seconds": round(self.train_seconds, 2), "eval": metrics}
            _append(self.file, record)
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if self.tb:
            for k, v in flat.items():
                self.tb.add_scalar(f"eval/{k}", v, iteration)
        shown = (f"{k} {v}" if isinstance(v, int) else f"{k} {v:.2f}" for k, v in flat.items())  # (counts as ints)
        self.note(f"eval at {iteration}: " + ", ".join(shown))

    def evaluated(self, iteration: int) -> bool:
        """Whether metrics.jsonl holds an evaluation at ``iteration`` (a run stopped during that evaluation has
        none). True where this process logs nothing."""
        return not self.file or iteration in self._evaluated

    def close(self) -> None:
        """Close the bar, the metrics file and TensorBoard's writer (again: nothing)."""
        if self.bar:
            self.bar.close()
            self.bar = None
        if self.file:
            self.file.close()
            self.file = None
        if self.tb:
            self.tb.close()
            self.tb = None
