"""Plain per-epoch log lines for output nobody watches live.

A terminal gets rich's progress bar; a file does not (`widen train ... > log.txt`, sbatch, nohup, CI), so
when stdout is not a terminal every epoch also prints one greppable line there:

    epoch 3/20  train_loss 0.4100  train_acc 0.8800  test_loss 0.4500  test_acc 0.8600  2.10 s/epoch  eta 00:00:36

(val_loss and val_acc follow test_acc where the run holds data out; runs trained together as one batch
add `run <folder>`). An epoch longer than HEARTBEAT_SECONDS gets a line each time they pass,
`epoch 3/300  batch 120/390  612 s so far`. Sweep members run by the pool launcher write their lines to
their own run folder instead (results.LOG_FILE), after a line saying where they start; SLURM members
write theirs to stdout, which is their SLURM log.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from widen_cli import results

HEARTBEAT_SECONDS = 300.0  # an epoch longer than this gets a line each time it passes

_to_run_folders = False  # set in a pool member's process (member_logs)


@contextmanager
def member_logs():
    """Within: each run writes its lines to its own folder's log file, not to stdout."""
    global _to_run_folders
    before, _to_run_folders = _to_run_folders, True
    try:
        yield
    finally:
        _to_run_folders = before


def clock(seconds: float) -> str:
    """hh:mm:ss (hours grow past 99 for very long runs)."""
    s = max(0, round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def epoch_line(epoch: int, epochs: int, t, seconds: float, eta: float) -> str:
    """One epoch's line; `t` holds the epoch's totals (lifecycle.EpochTotals)."""
    parts = [f"epoch {epoch}/{epochs}", f"train_loss {t.train_loss:.4f}", f"train_acc {t.train_acc:.4f}",
             f"test_loss {t.test_loss:.4f}", f"test_acc {t.test_acc:.4f}"]
    if t.val_acc is not None:
        parts += [f"val_loss {t.val_loss:.4f}", f"val_acc {t.val_acc:.4f}"]
    return "  ".join([*parts, f"{seconds:.2f} s/epoch", f"eta {clock(eta)}"])


class EpochLog:
    """The log lines of the runs one epoch loop trains together (epochs.Epochs): to stdout when it is not a
    terminal, to each run's own log file in a member process, else nowhere. Only rank 0 writes."""

    def __init__(self, runs: list, epochs: int, progress=None, heartbeat: float = HEARTBEAT_SECONDS):
        self.epochs, self.progress = epochs, progress
        self.epoch_task = None  # the progress bar's task of the epochs (its other one is an epoch's batches)
        runs = [r for r in runs if r.main]
        if _to_run_folders:
            self.sinks = {r.dir: r.dir / results.LOG_FILE for r in runs}
        else:
            self.sinks = {r.dir: None for r in runs} if runs and not sys.stdout.isatty() else {}
        self.named = len(runs) > 1 and not _to_run_folders  # lines of several runs share stdout
        self.lock = threading.Lock()
        self.epoch, self.started, self.done, self.spent = None, 0.0, 0, 0.0  # epoch: the one in progress
        self.stop = threading.Event()
        self.thread = None
        if self.sinks:
            self.thread = threading.Thread(target=self._heartbeat, args=(heartbeat,), daemon=True)
            self.thread.start()

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()

    def _write(self, run_dir: Path, line: str, named: bool = True) -> None:
        if self.named and named:
            line = f"{line}  run {run_dir.name}"
        path = self.sinks[run_dir]
        with self.lock:
            try:
                if path is None:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                else:
                    with open(path, "a") as f:
                        f.write(line + "\n")
            except (OSError, ValueError):
                pass  # a log that cannot be written (disk full, closed pipe) must not stop training

    def start(self, run) -> None:
        """A member's log file starts each session with where it starts (the console says it elsewhere)."""
        if _to_run_folders and run.dir in self.sinks:
            import torch

            when, threads = time.strftime("%Y-%m-%d %H:%M:%S"), torch.get_num_threads()
            how = f"{threads} CPU thread{'s' if threads > 1 else ''}"
            self._write(run.dir, f"{when} resuming {run.dir} after epoch {run.saved} of {self.epochs} ({how})"
                        if run.state is not None else f"{when} training {run.dir} ({self.epochs} epochs, {how})")

    def begin(self, epoch: int) -> None:
        self.started = time.perf_counter()
        self.epoch = epoch  # after `started`: the heartbeat thread reads them in the other order

    def end(self, run, epoch: int, totals, seconds: float) -> None:
        """Run `run`'s line for `epoch`, which took `seconds` (all runs trained together); call once per
        run, then ended() once."""
        if run.dir in self.sinks:
            mean = (self.spent + seconds) / (self.done + 1)
            self._write(run.dir, epoch_line(epoch, self.epochs, totals, seconds, mean * (self.epochs - epoch)))

    def ended(self) -> None:
        self.spent += time.perf_counter() - self.started  # with the epoch's checkpoints: what the eta needs
        self.done += 1
        self.epoch = None

    def _heartbeat(self, interval: float) -> None:
        while not self.stop.wait(interval):
            epoch, started = self.epoch, self.started
            so_far = time.perf_counter() - started
            if epoch is None or so_far < interval:
                continue
            batches = self._batches()
            line = "  ".join([f"epoch {epoch}/{self.epochs}", *([batches] if batches else []),
                              f"{so_far:.0f} s so far"])
            for run_dir in list(self.sinks) if _to_run_folders else list(self.sinks)[:1]:
                self._write(run_dir, line, named=False)  # on stdout: once for the runs trained together

    def _batches(self) -> str | None:
        """`batch i/n` from the inner progress bar of the epoch, when it has one."""
        if self.progress is None:
            return None
        for task in list(self.progress.tasks):
            if task.id != self.epoch_task and task.total and not task.finished:
                return f"batch {int(task.completed)}/{int(task.total)}"
        return None
