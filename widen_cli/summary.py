"""A run's summary row, from one producer: the run writes it to summary.parquet (lifecycle.py), and a
sweep's results.parquet (gather.py) takes it from there, or, for a member without one (failed or
interrupted), builds it here from the member's job, so that the two never disagree on what the plan
decided (results.py declares the columns)."""
from __future__ import annotations

import pandas as pd

from widen_cli.identity import dumps, identity_of, run_name
from widen_cli.jobs import Job, parent_run
from widen_cli.methods import method_of


def planned(job: Job) -> dict:
    """The columns the job decides, whether or not the run ever trained."""
    run, member = job.run, job.member
    method = method_of(run)
    fields = method.summary_fields(run, None, complete=False)  # variant, last_layer_connectivity
    return dict(
        dataset=run.dataset.name, model=run.model.name, method=run.method.name, width=run.width,
        base_width=run.base_width, n_weights=member.n_weights, n_weights_dense=member.n_weights_dense,
        connectivity=member.connectivity, seed=run.seed, activation=run.model.activation,
        distribution=member.distribution, within=member.within,
        last_layer_connectivity=fields["last_layer_connectivity"], identity=dumps(identity_of(run)),
        budget=member.budget, variant=fields["variant"],
        parent_run=run_name(parent_run(run)) if method.has_parent else None, run=job.run_dir.name,
    )


def summary_row(job: Job, metrics: pd.DataFrame, status: str, wall_seconds: float) -> dict:
    """A run that trained: the plan's columns and what its metrics say."""
    return dict(
        planned(job), epochs=len(metrics), status=status,
        best_test_acc=float(metrics.test_acc.max()), final_test_acc=float(metrics.test_acc.iloc[-1]),
        best_train_acc=float(metrics.train_acc.max()), final_train_acc=float(metrics.train_acc.iloc[-1]),
        wall_seconds=wall_seconds, total_epochs=total_epochs(job, len(metrics)),
        val_acc=_last(metrics, "val_acc"),
    )


def unfinished_row(job: Job, epochs: int, status: str, error: str) -> dict:
    """A member without a summary (status failed or interrupted): the plan's columns, the epochs it
    recorded and why it has none."""
    return dict(planned(job), epochs=epochs, status=status, error=error,
                total_epochs=total_epochs(job, epochs, complete=False))


def total_epochs(job: Job, epochs: int, complete: bool = True) -> int | None:
    """The run's training compute in epochs (a pruned run's parent's included, where it is complete)."""
    return method_of(job.run).summary_fields(job.run, epochs, complete)["total_epochs"]


def _last(metrics: pd.DataFrame, column: str) -> float | None:
    """The last epoch's value; None where it was not recorded (no holdout, or metrics from before)."""
    if column not in metrics or metrics[column].isna().all():
        return None
    return float(metrics[column].iloc[-1])
