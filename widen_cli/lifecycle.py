"""A run's lifecycle: the one owner of a run folder's files and states.

Single (train.py) and batched (stacked_training.py) training call it, the same way for both:

    start   finished already? (read back, or refused if its settings differ) -> claim the folder
            (claims.py; wait while a live process elsewhere holds it) -> config.yaml -> checkpoint
            (discarded first when the job says restart)
    record  each epoch (through epochs.py, the loop's display and logs): its metrics row and
            metrics.parquet, the checkpoint, divergence (status diverged)
    finish  model.pt, then summary.parquet (which marks the run done); the checkpoint and claim go

Under torchrun every rank trains and only rank 0 writes, prints or claims.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml
from rich.console import Console

from widen_cli import checkpoint, claims, distributed, provenance, results
from widen_cli.errors import UserError
from widen_cli.identity import differences, identity_of, loads, run_name, to_yaml
from widen_cli.jobs import Job
from widen_cli.summary import summary_row

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
    mask_changed: float | None = None  # a mask that moves: the fraction of kept positions its updates changed


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

def start(job: Job, console: Console | None = None, wait: bool = True) -> Run:
    """Open `job`'s run folder: a Run, claimed, config.yaml written and its checkpoint loaded (none
    when the job says restart), to train; or, when it has finished already, one holding its `result`.
    A run claimed by a live process elsewhere is waited for (`wait=False`: a Run marked `busy`)."""
    main = distributed.is_main_process()
    console = (console or Console(stderr=True)) if main else Console(stderr=True, quiet=True)
    announced = False
    while True:
        done = finished(job)
        if done is not None:
            return Run(job, console, None, main, result=done)
        if not main:  # rank 0 holds the claim for every rank
            return Run(job, console, None, main).prepare()
        created = _missing(job.run_dir)
        try:
            claim = claims.acquire(job.run_dir)
        except OSError as e:
            raise UserError(f"cannot write to output folder {job.run_dir}: {e.strerror or e}") from None
        if isinstance(claim, claims.Claim):
            if (job.run_dir / results.SUMMARY_FILE).exists():  # it finished while we claimed it
                claim.release()
                continue
            return Run(job, console, claim, main, created).prepare()
        if not wait:
            return Run(job, console, None, main, busy=True)
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
    """A run folder opened by start: claimed to be trained, or with the `result` of a run that finished
    before, or `busy` (another process trains it). A context manager: leaving it releases the claim."""

    def __init__(self, job: Job, console: Console, claim: claims.Claim | None, main: bool,
                 created: list[Path] = (), result: RunResult | None = None, busy: bool = False):
        self.job, self.dir, self.console, self.claim, self.main = job, job.run_dir, console, claim, main
        self.result, self.busy = result, busy
        self.created = list(created)  # the folders this process made for the run (removed if it is refused)
        self.state: dict | None = None  # the checkpoint resumed from
        self.rows: list[dict] = []
        self.first, self.saved, self.elapsed = 1, 0, 0.0  # first epoch to train, last one saved, time so far
        self.status = "finished"
        self.announced = False
        self.started = provenance.now()  # when its first epoch began (a resumed run: in an earlier process)
        self.used: dict = {}  # the device and data sizes the trainer reports (uses)
        self.moving = None  # a mask that moves (follow): its Masks and MaskUpdater

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

    def prepare(self) -> Run:
        """config.yaml, and the checkpoint to resume from (the job's `restart`: discard it instead)."""
        try:
            return self._prepare(self.job.restart)
        except BaseException as e:
            self.__exit__(type(e), e, None)
            raise

    def _prepare(self, restart: bool) -> Run:
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

    def save_masks(self, masks, final: bool = False) -> None:
        """masks.pt, when the run starts. A resumed run goes on with its checkpoint's masks: masks.pt is
        checked against them and written again from them if it is damaged, missing or differs. A mask that
        moves while training (set, rigl) is written once, at the end (`final`): the masks the model ends
        with; until then the checkpoint holds the current ones."""
        if masks is None or not self.main:
            return
        path = self.dir / results.MASKS_FILE
        if self.state is not None and not final:
            if checkpoint.file_holds(path, masks.state(), exactly=True):
                return
            self.console.print(f"[yellow]warning:[/yellow] {path} was damaged or missing; written again from the "
                               f"checkpoint's masks", highlight=False, soft_wrap=True)
        masks.save(path)

    def follow(self, masks, updater) -> None:
        """A mask that moves while training (Method.updater): its update state goes into every checkpoint
        and is restored from the one resumed; when the run ends, masks.pt gets the final masks and the
        summary how far they moved (MaskUpdater.log)."""
        self.moving = (masks, updater)
        if self.state is not None:
            checkpoint.restore_updater(self.state, updater, self.dir / checkpoint.FILENAME)

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=results.METRICS_COLUMNS).assign(run=self.dir.name)

    def record(self, epoch: int, lr: float, t: EpochTotals, seconds: float, elapsed: float, state: dict) -> bool:
        """An epoch's row and checkpoint (state: its model, optimizer, scheduler and Masks or None).
        False when the training loss stopped being finite: the run is over, with status diverged."""
        self.rows.append(dict(epoch=epoch, lr=lr, train_loss=t.train_loss, train_acc=t.train_acc,
                              test_loss=t.test_loss, test_acc=t.test_acc, seconds=seconds, val_loss=t.val_loss,
                              val_acc=t.val_acc, mask_changed=t.mask_changed))
        diverged = not math.isfinite(t.train_loss)
        if self.main:
            results.write_table(self.metrics(), self.dir / results.METRICS_FILE, "metrics", self.check_claim)
            if not diverged:  # a diverged run is over: nothing to resume
                masks = None if state["masks"] is None else state["masks"].state()
                checkpoint.save(self.dir / checkpoint.FILENAME, identity=identity_of(self.job.run), epoch=epoch,
                                rows=self.rows, elapsed=self.elapsed + elapsed, **{**state, "masks": masks},
                                updater=self.moving[1].state_dict() if self.moving else None, check=self.check_claim)
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
        moved = self.moving[1].log() if self.moving else {}
        summary = {**summary_row(self.job, metrics, self.status, self.elapsed + elapsed, moved),
                   **self.produced_by(ended)}
        if self.main:
            if self.moving:
                self.save_masks(self.moving[0], final=True)
            results.atomic_write(self.dir / results.MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp),
                                 self.check_claim)
            self.write_config(ended)
            results.write_table(pd.DataFrame([summary]), self.dir / results.SUMMARY_FILE, "summary", self.check_claim)
            (self.dir / checkpoint.FILENAME).unlink(missing_ok=True)
        self.release()
        return RunResult(metrics, summary, model=model)
