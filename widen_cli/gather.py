"""A sweep's results.parquet, gathered from its members' own run folders: each finished member's
summary row as its run wrote it (summary.py), a row built by the same producer for each member without
one, and which learning rate is selected for each member and seed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from widen_cli import checkpoint, results
from widen_cli.errors import UserError
from widen_cli.identity import dumps, identity_of, without_lr
from widen_cli.jobs import Job
from widen_cli.summary import planned, total_epochs, unfinished_row


def gather(jobs: list[Job], sweep_dir: Path, errors: dict[Path, str] | None = None,
           select_on: str = "test", interrupted: bool = False) -> pd.DataFrame:
    """results.parquet: one row per member, learning rate and seed, from the members' own summary files;
    a member without one is a `failed` row with its planned identity and its error, or, when the sweep
    was `interrupted` and it did not fail, an `interrupted` row (its checkpoint resumes it). `selected`
    marks the learning rate chosen for each member and seed (select)."""
    rows = []
    for job in jobs:
        path = job.run_dir / results.SUMMARY_FILE
        error = (errors or {}).get(job.run_dir, "did not finish (no summary.parquet)")
        row = damaged = None
        if path.exists():
            try:  # a damaged summary fails this member, not the gather
                row = results.read_finished(path, "summary", job.run_dir).iloc[0].to_dict()
            except UserError as e:
                error = damaged = str(e)
        if row is not None:  # as the run wrote it; columns an older summary lacks from its plan
            row = {**planned(job), **row}
            row.setdefault("status", "finished")  # summaries from before statuses were recorded
            row.setdefault("total_epochs", total_epochs(job, row["epochs"], complete=False))
            row["error"] = None
            checkpoint.tidy_finished(job.run_dir)
        else:
            epochs = _epochs_done(job.run_dir)
            stopped = interrupted and damaged is None and job.run_dir not in (errors or {})
            if stopped:
                error = (f"interrupted after epoch {epochs} of {job.epochs}" if epochs else "interrupted before "
                         "its first epoch ended") + "; run the same command again to resume"
            row = unfinished_row(job, epochs, "interrupted" if stopped else "failed", error)
        row.update(widening_factor=job.member.widening_factor, lr=job.run.optim.lr)  # results.parquet's own
        rows.append(row)
    df = pd.DataFrame(rows, columns=results.RESULTS_COLUMNS)
    df["selected"] = select(df, [_untuned(job) for job in jobs], select_on)
    results.write_table(df, sweep_dir / results.RESULTS_FILE, "results")
    return df


def _epochs_done(run_dir: Path) -> int:
    """The epochs an unfinished member recorded (0 where its metrics are missing or unreadable)."""
    try:
        return len(results.read_table(run_dir / results.METRICS_FILE))
    except Exception:  # noqa: BLE001 - missing or damaged: the error column says what happened
        return 0


# What picks a member's learning rate: the paper's best test accuracy, or the last epoch's accuracy on
# the held-out part of the training split (sweep.select_on val).
SELECT_COLUMNS = {"test": "best_test_acc", "val": "val_acc"}


def _untuned(job: Job) -> str:
    """A run's identity without its learning rate: the runs of one member and seed over --lrs share it."""
    return dumps(without_lr(identity_of(job.run)))


def select(df: pd.DataFrame, members: list[str], select_on: str) -> pd.Series:
    """One True per member (`members`: each row's identity without lr): its finished row with the best
    SELECT_COLUMNS[select_on] (ties: the first, in the order of --lrs); diverged rows only where none
    finished, failed rows never. Without --lrs every finished row is its member's only one."""
    ranked = pd.DataFrame({"member": members, "rank": -df.status.map({"finished": 1, "diverged": 0}),
                           "score": -pd.to_numeric(df[SELECT_COLUMNS[select_on]], errors="coerce").fillna(-1.0)},
                          index=df.index).dropna(subset=["rank"])
    best = ranked.sort_values(["rank", "score"], kind="stable").groupby("member", sort=False).head(1).index
    return pd.Series(df.index.isin(best), index=df.index)
