"""A run's lifecycle: the one owner of a run folder's files and states.

Single (train.py) and batched (family.py) training only compute each member's per-epoch totals; this
module does everything else, the same way for both:

    start   finished already? (read back, or refused if its settings differ) -> claim the folder
            (claims.py; wait while a live process elsewhere holds it) -> config.yaml -> checkpoint
    drive   the epoch loop: progress display, metrics rows and metrics.parquet, the per-epoch
            checkpoint, divergence (status diverged), the Ctrl-C message
    finish  model.pt, then summary.parquet (which marks the run done); the checkpoint and claim go

Under torchrun every rank drives the loop and only rank 0 writes, prints or claims.
"""
from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from widen_cli import checkpoint, claims, distributed, epochlog, provenance, results, tracking
from widen_cli.errors import Interrupted, UserError
from widen_cli.identity import differences, dumps, identity_of, loads, run_name, to_yaml
from widen_cli.jobs import Job, parent_run
from widen_cli.methods import method_of

POLL_SECONDS = 1.0  # how often a run claimed elsewhere is checked while waiting for it


@dataclass
class RunResult:
    metrics: pd.DataFrame
    summary: dict = field(default_factory=dict)
    skipped: bool = False  # already finished before this call
    model: torch.nn.Module | None = None  # the trained model (not when skipped)


@dataclass(frozen=True)
class EpochTotals:
    """One member's numbers for one epoch: all a trainer hands over."""

    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    val_loss: float | None = None  # on the held-out part of the training split (dataset.val_fraction)
    val_acc: float | None = None


# ---------------------------------------------------------------- finished runs

def finished(job: Job) -> RunResult | None:
    """The run's result read back if it has finished; refused if it finished with other settings, or
    if its summary or metrics cannot be read. What a kill right after the summary left is tidied."""
    path = job.run_dir / results.SUMMARY_FILE
    if not path.exists():
        return None
    summary = results.read_finished(path, "summary", job.run_dir).iloc[0].to_dict()
    stored = loads(summary.get("identity"))
    diffs = differences(identity_of(job.run), stored, job.run_dir) if stored is not None else []
    if diffs:
        raise UserError(f"{job.run_dir} holds a finished run with other settings ({'; '.join(diffs)}); "
                        f"choose another --name or --out, or delete the folder to retrain it")
    metrics = results.read_finished(job.run_dir / results.METRICS_FILE, "metrics", job.run_dir)
    if distributed.is_main_process():
        checkpoint.tidy_finished(job.run_dir)
    return RunResult(metrics, summary, skipped=True)


# ---------------------------------------------------------------- start

def start(job: Job, console: Console | None = None, restart: bool = False, wait: bool = True):
    """Open `job`'s run folder for training: a Run (claimed, config.yaml written, its checkpoint loaded
    unless `restart`), or a RunResult when it has finished already. A run claimed by a live process
    elsewhere is waited for (`wait=False`: None is returned instead)."""
    main = distributed.is_main_process()
    console = (console or Console(stderr=True)) if main else Console(stderr=True, quiet=True)
    announced = False
    while True:
        done = finished(job)
        if done is not None:
            return done
        if not main:  # rank 0 holds the claim for every rank
            return Run(job, console, None, main).prepare(restart)
        created = _missing(job.run_dir)
        try:
            claim = claims.acquire(job.run_dir)
        except OSError as e:
            raise UserError(f"cannot write to output folder {job.run_dir}: {e.strerror or e}") from None
        if isinstance(claim, claims.Claim):
            if (job.run_dir / results.SUMMARY_FILE).exists():  # it finished while we claimed it
                claim.release()
                continue
            return Run(job, console, claim, main, created).prepare(restart)
        if not wait:
            return None
        if not announced:
            console.print(f"waiting for {job.run_dir}: {claim} is training it", highlight=False, soft_wrap=True)
            announced = True
        _wait_while_claimed(job.run_dir)


def _missing(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first."""
    out = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        out.append(p)
    return out


def _wait_while_claimed(run_dir: Path) -> None:
    """Until the run has finished, or its claim is released or stale."""
    while not (run_dir / results.SUMMARY_FILE).exists():
        holder = claims.read(run_dir / results.CLAIM_FILE)
        if holder is None or holder.stale:
            return
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------- one run

class Run:
    """A claimed run folder being trained. A context manager: leaving it releases the claim."""

    def __init__(self, job: Job, console: Console, claim: claims.Claim | None, main: bool,
                 created: list[Path] = ()):
        self.job, self.dir, self.console, self.claim, self.main = job, job.run_dir, console, claim, main
        self.created = list(created)  # the folders this process made for the run (removed if it is refused)
        self.state: dict | None = None  # the checkpoint resumed from
        self.rows: list[dict] = []
        self.first, self.saved, self.elapsed = 1, 0, 0.0  # first epoch to train, last one saved, time so far
        self.status = "finished"
        self.announced = False
        self.started = provenance.now()  # when its first epoch began (a resumed run: in an earlier process)
        self.used: dict = {}  # the device and data sizes the trainer reports (uses)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if isinstance(error, UserError) and not self.rows and self.state is None:
            self.discard()  # refused before its first epoch (its data, say): leave no folder behind
        self.release()

    def discard(self) -> None:
        """Remove the folders this process created for the run, with what it wrote there; the claim goes
        last, so that no other process starts writing in between."""
        if not self.created or not self.main or not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            if p.name == results.CLAIM_FILE:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.release()
        for d in self.created:
            try:
                d.rmdir()
            except OSError:  # not empty: another process is using it
                break

    def release(self) -> None:
        if self.claim is not None:
            self.claim.release()

    def check_claim(self) -> None:
        """Before each write (and again just before its rename): stop (ClaimLost) if another process took
        the run over meanwhile (this one was paused past the stale time)."""
        if self.claim is not None:
            self.claim.check()

    def prepare(self, restart: bool) -> Run:
        """config.yaml, and the checkpoint to resume from (`restart`: discard it instead)."""
        try:
            return self._prepare(restart)
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise

    def _prepare(self, restart: bool) -> Run:
        run = self.job.run
        if self.main:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                if restart:
                    checkpoint.discard(self.dir)
                checkpoint.remove_stale_temporaries(self.dir)
                if (self.dir / checkpoint.FILENAME).exists():  # resuming: it started when its config was written
                    self.started = provenance.started(self.dir / results.CONFIG_FILE) or self.started
                self.write_config()
            except OSError as e:
                raise UserError(f"cannot write to output folder {self.dir}: {e.strerror or e}") from None
        return self if restart else self.reload()

    def write_config(self, ended=None) -> None:
        """config.yaml: the run's settings, then what produced it (`provenance:`, not read back as settings)."""
        record = provenance.to_yaml(self.produced_by(ended))
        results.write_text(to_yaml(self.job.run) + yaml.safe_dump({"provenance": record}, sort_keys=False),
                           self.dir / results.CONFIG_FILE)

    def produced_by(self, ended=None) -> dict:
        """The run's provenance columns: what is known so far (ended: when it finished)."""
        return {**dict.fromkeys(results.PROVENANCE_COLUMNS), **provenance.environment(), **self.used,
                "started_at": self.started, "ended_at": ended}

    def uses(self, device: torch.device, train, test, val=None) -> None:
        """What the trainer runs on: the resolved device and the data loaders (their sizes are recorded)."""
        self.used = {**provenance.device(device), **provenance.samples(train, test, val)}

    def reload(self) -> Run:
        """The checkpoint, if any, as what training goes on from (refused if its settings differ)."""
        run, path = self.job.run, self.dir / checkpoint.FILENAME
        self.state = checkpoint.load(path)
        if self.state is None:
            return self
        diffs = differences(identity_of(run), loads(self.state["identity"]), path)
        if diffs:
            raise UserError(f"checkpoint {path} was written by a run with a different config ({'; '.join(diffs)}); "
                            f"pass --restart to discard it and start the run over (or choose another --name)")
        checkpoint.check_epoch(self.state, self.job.epochs, path)
        self.rows, self.elapsed = list(self.state["rows"]), self.state["elapsed"]
        self.saved = self.state["epoch"]
        self.first = self.saved + 1
        return self

    def announce(self) -> None:
        """One line as training starts (what a log of several processes is checked against); once."""
        if self.announced:
            return
        self.announced = True
        epochs = self.job.epochs
        self.console.print(f"resuming {self.dir} after epoch {self.saved} of {epochs}" if self.state is not None
                           else f"training {self.dir} ({epochs} epochs)", highlight=False, soft_wrap=True)

    def save_masks(self, masks) -> None:
        """masks.pt, when the run starts. A resumed run goes on with its checkpoint's masks: masks.pt is
        checked against them and written again from them if it is damaged, missing or differs."""
        if masks is None or not self.main:
            return
        path = self.dir / results.MASKS_FILE
        if self.state is not None:
            if checkpoint.file_holds(path, masks.state(), exactly=True):
                return
            self.console.print(f"[yellow]warning:[/yellow] {path} was damaged or missing; written again from the "
                               f"checkpoint's masks", highlight=False, soft_wrap=True)
        masks.save(path)

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=results.METRICS_COLUMNS).assign(run=self.dir.name)

    def record(self, epoch: int, lr: float, t: EpochTotals, seconds: float, elapsed: float,
               snapshot: Callable[[], dict]) -> bool:
        """An epoch's row and checkpoint (snapshot(): its model, optimizer, scheduler and masks state).
        False when the training loss stopped being finite: the run is over, with status diverged."""
        self.rows.append(dict(epoch=epoch, lr=lr, train_loss=t.train_loss, train_acc=t.train_acc,
                              test_loss=t.test_loss, test_acc=t.test_acc, seconds=seconds, val_loss=t.val_loss,
                              val_acc=t.val_acc))
        diverged = not math.isfinite(t.train_loss)
        if self.main:
            results.write_table(self.metrics(), self.dir / results.METRICS_FILE, "metrics", self.check_claim)
            if not diverged:  # a diverged run is over: nothing to resume
                checkpoint.save(self.dir / checkpoint.FILENAME, identity=identity_of(self.job.run), epoch=epoch,
                                rows=self.rows, elapsed=self.elapsed + elapsed, **snapshot(), check=self.check_claim)
        if diverged:
            self.status = "diverged"
            self.console.print(f"[red]{run_name(self.job.run)}: training loss is {t.train_loss} in epoch {epoch}: "
                               f"stopping this run (status diverged)[/red]", soft_wrap=True)
            return False
        self.saved = epoch
        return True

    def finish(self, model: torch.nn.Module, elapsed: float) -> RunResult:
        """model.pt, then summary.parquet, which marks the run as done; then the checkpoint and claim go."""
        metrics = self.metrics()
        ended = provenance.now()
        summary = {**summary_row(self.job, metrics, self.status, self.elapsed + elapsed), **self.produced_by(ended)}
        if self.main:
            results.atomic_write(self.dir / results.MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp),
                                 self.check_claim)
            self.write_config(ended)
            results.write_table(pd.DataFrame([summary]), self.dir / results.SUMMARY_FILE, "summary", self.check_claim)
            (self.dir / checkpoint.FILENAME).unlink(missing_ok=True)
        self.release()
        return RunResult(metrics, summary, model=model)


def summary_row(job: Job, metrics: pd.DataFrame, status: str, wall_seconds: float) -> dict:
    run, member = job.run, job.member
    method = method_of(run)
    fields = method.summary_fields(run, len(metrics))  # variant, total_epochs, last_layer_connectivity
    return dict(
        dataset=run.dataset.name, model=run.model.name, method=run.method.name, width=run.width,
        base_width=run.base_width, n_weights=member.n_weights, n_weights_dense=member.n_weights_dense,
        connectivity=member.connectivity, seed=run.seed, epochs=len(metrics), status=status,
        best_test_acc=float(metrics.test_acc.max()), final_test_acc=float(metrics.test_acc.iloc[-1]),
        best_train_acc=float(metrics.train_acc.max()), final_train_acc=float(metrics.train_acc.iloc[-1]),
        wall_seconds=wall_seconds, variant=fields["variant"],
        parent_run=run_name(parent_run(run)) if method.has_parent else None,
        total_epochs=fields["total_epochs"], activation=run.model.activation,
        distribution=member.distribution, within=member.within,
        last_layer_connectivity=fields["last_layer_connectivity"],
        identity=dumps(identity_of(run)), budget=member.budget,
        val_acc=_last(metrics, "val_acc"), run=job.run_dir.name,
    )


def _last(metrics: pd.DataFrame, column: str) -> float | None:
    """The last epoch's value; None where it was not recorded (no holdout, or metrics from before)."""
    if column not in metrics or metrics[column].isna().all():
        return None
    return float(metrics[column].iloc[-1])


# ---------------------------------------------------------------- the epoch loop

COLUMNS = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
           TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn())


def drive(runs: list[Run], title: str, step: Callable[[int, Progress], tuple[float, list[EpochTotals]]],
          snapshot: Callable[[int], dict], model_of: Callable[[int], torch.nn.Module],
          until: int | None = None) -> list[RunResult | None]:
    """Train runs that start at the same epoch together: step(epoch, progress) trains one epoch of all
    of them and returns the learning rate and each run's totals; snapshot(i) is run i's checkpoint
    state and model_of(i) its trained model. Times (seconds, wall_seconds) are the batch's divided
    by its number of runs. A run that diverges finishes there; the others go on. `until`: stop after
    that epoch's checkpoint, before the last epoch; runs left unfinished then are None."""
    first, epochs = runs[0].first, runs[0].job.epochs
    last = epochs if until is None else min(until, epochs)
    assert all(r.first == first for r in runs), "runs driven together start at the same epoch"
    n, out = len(runs), [None] * len(runs)
    for run in runs:
        run.announce()
    start = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - start) / n

    try:
        with Progress(*COLUMNS, console=runs[0].console, transient=False) as progress, \
                epochlog.EpochLog(runs, epochs, progress) as log, tracking.Trackers(runs) as trackers:
            task = log.epoch_task = progress.add_task(title, total=epochs, completed=first - 1, status="")
            for run in runs:
                log.start(run)
            for epoch in range(first, last + 1):
                t0 = time.perf_counter()
                log.begin(epoch)
                lr, totals = step(epoch, progress)
                wall = time.perf_counter() - t0
                seconds = wall / n
                with _interrupts_deferred():
                    for i, run in enumerate(runs):
                        if out[i] is None:
                            recorded = run.record(epoch, lr, totals[i], seconds, elapsed(), lambda: snapshot(i))
                            log.end(run, epoch, totals[i], wall)
                            trackers.log(run)
                            if not recorded:
                                out[i] = run.finish(model_of(i), elapsed())
                    log.ended()
                progress.update(task, advance=1, status=_status(runs, totals, out))
                if all(o is not None for o in out):
                    break
    except KeyboardInterrupt:
        raise Interrupted(interrupted([r for r, o in zip(runs, out) if o is None])) from None
    if last < epochs:
        return out
    return [o if o is not None else run.finish(model_of(i), elapsed()) for i, (run, o) in enumerate(zip(runs, out))]


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
