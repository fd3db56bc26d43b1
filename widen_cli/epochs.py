"""The epoch loop's bookkeeping, a helper the trainers call (train.py for one run, stacked_training.py for
the members of one stacked model): the progress display, each epoch's log lines (epochlog.py) and
trackers (tracking.py), handing each run its epoch to record (lifecycle.Run.record: metrics, checkpoint,
divergence), finishing runs, and the Ctrl-C message. A trainer reads

    with Epochs(runs, title) as loop:
        for epoch in loop:
            ... train, evaluate ...
            loop.end_epoch(lr, totals, states)  # the run records it: metrics, checkpoint
    return loop.finish(models)

Under torchrun every rank runs the loop and only rank 0 writes, prints or claims (lifecycle.py).
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from typing import Iterable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from widen_cli import checkpoint, epochlog, tracking
from widen_cli.errors import Interrupted
from widen_cli.lifecycle import EpochTotals, Run, RunResult

COLUMNS = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
           TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn())


class Epochs:
    """Runs that start at the same epoch, trained together (one run, or the members of a stacked model).
    Iterating gives the epochs to train; end_epoch records one for every run still training; finish
    finishes the others. Times (seconds, wall_seconds) are the batch's divided by its number of runs. A
    run that diverges finishes there; the others go on. `until`: stop after that epoch's checkpoint,
    before the last epoch; runs left unfinished then are None in finish's results."""

    def __init__(self, runs: list[Run], title: str, until: int | None = None):
        self.runs, self.title = runs, title
        self.first, self.epochs = runs[0].first, runs[0].job.epochs
        self.last = self.epochs if until is None else min(until, self.epochs)
        assert all(r.first == self.first for r in runs), "runs trained together start at the same epoch"
        self.out: list[RunResult | None] = [None] * len(runs)
        self.progress: Progress | None = None  # for a trainer's per-batch bar
        self.epoch, self.t0 = None, 0.0

    def __enter__(self) -> Epochs:
        for run in self.runs:
            run.announce()
        self.start = time.perf_counter()
        self._held = ExitStack()
        try:
            self.progress = self._held.enter_context(Progress(*COLUMNS, console=self.runs[0].console, transient=False))
            self.log = self._held.enter_context(epochlog.EpochLog(self.runs, self.epochs, self.progress))
            self.trackers = self._held.enter_context(tracking.Trackers(self.runs))
            self.task = self.log.epoch_task = self.progress.add_task(self.title, total=self.epochs,
                                                                     completed=self.first - 1, status="")
            for run in self.runs:
                self.log.start(run)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            self._held.__exit__(kind, error, tb)
        except KeyboardInterrupt:
            kind = KeyboardInterrupt
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            unfinished = [r for r, o in zip(self.runs, self.out) if o is None]
            raise Interrupted(interrupted(unfinished)) from None

    def __iter__(self):
        for epoch in range(self.first, self.last + 1):
            self.epoch, self.t0 = epoch, time.perf_counter()
            self.log.begin(epoch)
            yield epoch
            if all(o is not None for o in self.out):
                return

    def elapsed(self) -> float:
        return (time.perf_counter() - self.start) / len(self.runs)

    def end_epoch(self, lr: float, totals: list[EpochTotals], states: Iterable[dict]) -> None:
        """Each run still training records the epoch: its totals and its checkpoint state (model,
        optimizer, scheduler, Masks or None), one per run in order (a generator makes each as its run
        records, out of the epoch's time); one that diverged finishes with the model of its state."""
        wall = time.perf_counter() - self.t0
        with _interrupts_deferred():
            for i, (run, state) in enumerate(zip(self.runs, states)):
                if self.out[i] is None:
                    recorded = run.record(self.epoch, lr, totals[i], wall / len(self.runs), self.elapsed(), state)
                    self.log.end(run, self.epoch, totals[i], wall)
                    self.trackers.log(run)
                    if not recorded:
                        self.out[i] = run.finish(state["model"], self.elapsed())
            self.log.ended()
        self.progress.update(self.task, advance=1, status=_status(self.runs, totals, self.out))

    def finish(self, models: list[torch.nn.Module]) -> list[RunResult | None]:
        """Every run's result: finished with its trained model from `models` unless it finished before
        (diverged); None for each when the loop stopped at `until`."""
        if self.last < self.epochs:
            return self.out
        return [o if o is not None else run.finish(m, self.elapsed()) for run, o, m in zip(self.runs, self.out, models)]


@contextmanager
def _interrupts_deferred():
    """Ctrl-C or SIGTERM while an epoch is being recorded takes effect once every run has recorded it,
    so that the checkpoints and the interrupt message agree on what is saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])  # now handled as it would have been


def _status(runs: list[Run], totals: list[EpochTotals], out: list) -> str:
    best = max(r["test_acc"] for run in runs for r in run.rows)
    if len(runs) == 1:
        t = totals[0]
        return f"train {t.train_acc:.1%}  test {t.test_acc:.1%}  best {best:.1%}  loss {t.train_loss:.3f}"
    return f"{sum(o is None for o in out)}/{len(runs)} members  best test {best:.1%}"


def interrupted(runs: list[Run]) -> str:
    """The Ctrl-C message: the epochs each unfinished run really has in its checkpoint."""
    again = "run the same command again to resume"
    if not runs:
        return f"interrupted; {again}"
    epochs = runs[0].job.epochs
    if len(runs) == 1:
        run = runs[0]
        if not run.saved:
            return "interrupted before the first epoch ended; run the same command again to start"
        return f"interrupted: epochs 1-{run.saved} of {epochs} are saved in {run.dir / checkpoint.FILENAME}; {again}"
    by_saved: dict[int, list[str]] = {}
    for run in runs:
        by_saved.setdefault(run.saved, []).append(run.dir.name)
    parts = []
    for saved, names in sorted(by_saved.items(), reverse=True):
        who = f"each of the {len(names)} members" if len(by_saved) == 1 else ", ".join(names)
        parts.append(f"epochs 1-{saved} of {epochs} are saved for {who}" if saved else f"no epoch is saved for {who}")
    return f"interrupted: {'; '.join(parts)} (in {runs[0].dir.parent}); {again}"
