"""`widen sweep-width`: run every planned job that is missing, then gather the results.

Each member is an ordinary `widen train` run (same run folder naming) under the sweep folder, so a
finished member is found and skipped, an interrupted one resumes from its checkpoint, and members never
share a file: the results table is rebuilt from the members' own summary.parquet files, with a `failed`
row for each member that crashed. Launchers receive the planned jobs themselves (plan.py); nothing here
composes a config or plans a member again.
"""
from __future__ import annotations

import os
import traceback
from pathlib import Path

import pandas as pd
from rich.markup import escape

from widen_cli import checkpoint, results, slurm
from widen_cli.schema import SweepConfig
from widen_cli.errors import MemberError, UserError
from widen_cli.identity import differences, dumps, identity_of, run_name, without_lr
from widen_cli.jobs import Job, parent_run
from widen_cli.methods import method_of


def run_member(job: Job, threads: int | None = None, restart: bool = False) -> str:
    """Run one member as `widen train` would, quietly; returns its run folder. Top level: picklable."""
    from rich.console import Console

    from widen_cli import epochlog
    from widen_cli.train import run_training

    if threads:  # read by hardware.setup, which sets the thread count for the run
        os.environ["WIDEN_THREADS"] = str(threads)
    with epochlog.member_logs():  # its epochs to its own folder's log file
        run_training(job, Console(stderr=True, quiet=True), restart=restart)
    return str(job.run_dir)


def one_line(error: BaseException) -> str:
    """What went wrong, in one line: a UserError's message, otherwise the exception's last line."""
    text = str(error).strip()
    if isinstance(error, UserError) and text:
        return text.splitlines()[0]
    return f"{type(error).__name__}: {text.splitlines()[-1]}" if text else type(error).__name__


def _record_failure(job: Job, error: BaseException) -> bool:
    """error.txt in the member's folder, when the folder can be written (it may be what failed)."""
    try:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        results.write_text("".join(traceback.format_exception(error)), job.run_dir / results.ERROR_FILE)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- launchers
# Each gets the jobs to run and calls done(job, error) once per job as it ends.

def _local(todo: list[Job], done, s: SweepConfig, n_jobs: int, sweep_dir: Path, console, restart: bool) -> None:
    """One after another in this process. MLP members that can share a stacked model train together
    (widen_cli/family.py) unless sweep.batch_members is false; interrupted ones resume as they trained
    (family.train_family)."""
    from widen_cli import family
    from widen_cli.train import run_training

    def key(job: Job):
        if not s.batch_members or any(job.keep_weights):  # weights kept after an epoch: a single run's loop
            return None
        return family.batch_key(job.run)

    for batch in family.group(todo, key):
        try:
            if key(batch[0]) is None:
                run_training(batch[0], console, restart=restart)
            else:
                if restart:
                    for job in batch:
                        checkpoint.discard(job.run_dir)
                family.train_family(batch, console)
            for job in batch:
                done(job)
        except Exception as e:  # noqa: BLE001 - one member's crash must not stop the family
            if isinstance(e, UserError) and not isinstance(e, MemberError):
                raise  # a mistake in the command: every member would fail the same way
            if isinstance(e, MemberError) and len(batch) > 1:  # one member's damaged file or lost claim
                for job in batch:  # each alone (resumed or read back), so that only the members concerned fail
                    _alone(job, done, console)
                continue
            for job in batch:
                done(job, e)


def _alone(job: Job, done, console) -> None:
    from widen_cli.train import run_training

    try:
        run_training(job, console)
        done(job)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, UserError) and not isinstance(e, MemberError):
            raise
        done(job, e)


def _pool(todo: list[Job], done, s: SweepConfig, n_jobs: int, sweep_dir: Path, console, restart: bool) -> None:
    """--jobs worker processes on this machine (widen_cli/pool.py), the CPU threads this process may use
    (its affinity, capped by a container's quota) split between them."""
    from widen_cli import hardware, pool

    threads = max(1, hardware.available_cpus() // n_jobs)
    console.print(f"pool: up to {n_jobs} members at once, {threads} CPU thread{'s' if threads > 1 else ''} each; "
                  f"each member logs its epochs to {results.LOG_FILE} in its folder", highlight=False)
    pool.launch(todo, done, n_jobs, threads, _pool_gpus(todo[0].run.device), restart, console,
                run_member)


def _pool_gpus(device: str) -> int:
    """GPUs the pool's workers share out: every visible one for device auto/cuda, none for cpu or cuda:N."""
    if device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()



LAUNCHERS = {"local": _local, "pool": _pool, "submitit": slurm.launch}


def check_launch(launcher: str, n_jobs: int | None) -> None:
    """Refuse a launch that cannot work before anything is composed or written."""
    from widen_cli import distributed

    if distributed.from_env().enabled:
        raise UserError("sweep-width launches its members itself; use torchrun with widen train, one member "
                        "at a time")
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if n_jobs is not None and n_jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {n_jobs}")


def claim(sweep_dir: Path, plan, cfg, restart: bool) -> None:
    """Claim the sweep folder for this sweep: write sweep.yaml (the composed config and the sweep's identity),
    creating it only if absent, so that of two sweeps started together under one --name one creates it and
    the other then checks against it. A folder holds one sweep: the same --name with other settings (say
    --epochs 10 after 400, or other budgets or methods) is refused, naming them, unless --restart; its
    widths and seeds (and with --lrs, its learning rates) may grow. A sweep.yaml that cannot be read is
    refused too (it would turn the check off). Nothing is written for a refused sweep."""
    import json

    import yaml
    from omegaconf import OmegaConf

    identity = plan.identity()
    if not restart:
        _check_identity(sweep_dir, identity)
    data = OmegaConf.to_container(cfg, resolve=True)
    data[SWEEP_IDENTITY] = json.loads(json.dumps(identity))  # tuples as lists
    text = yaml.safe_dump(data, sort_keys=False)
    path = sweep_dir / results.SWEEP_FILE
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if restart or not results.create_new(path, text):
            if not restart:
                _check_identity(sweep_dir, identity)  # written by another sweep since the check above
            results.write_text(text, path)  # the same sweep (grown widths or seeds), or --restart
    except OSError as e:
        raise UserError(f"cannot write to output folder {sweep_dir}: {e.strerror or e}") from None


def _check_identity(sweep_dir: Path, identity: dict) -> None:
    there = _stored_identity(sweep_dir)
    diff = [] if there is None else differences(identity, there, sweep_dir)
    if diff:
        raise UserError(f"{sweep_dir} holds a sweep with other settings ({'; '.join(diff)}); choose another "
                        f"--name, or pass --restart to run these settings there anyway")


def _stored_identity(sweep_dir: Path) -> dict | None:
    """The identity of the sweep in `sweep_dir` (None: no sweep.yaml yet); an unreadable or garbled one is a
    UserError."""
    import yaml

    path = sweep_dir / results.SWEEP_FILE
    try:
        stored = yaml.safe_load(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # no sweep there (writing will say if it cannot be)
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"not valid YAML: {str(e).splitlines()[0]}"
        raise UserError(f"cannot read {path} ({why}); repair or delete it, choose another --name, or pass "
                        f"--restart to write these settings there") from None
    if not isinstance(stored, dict) or not isinstance(stored.get(SWEEP_IDENTITY), dict):
        raise UserError(f"{path} does not describe a sweep; repair or delete it, choose another --name, or pass "
                        f"--restart to write these settings there")
    return stored[SWEEP_IDENTITY]


SWEEP_IDENTITY = "sweep_identity"  # sweep.yaml's key for plan.sweep_identity (what claim compares)


def write_plan(sweep_dir: Path, plan: pd.DataFrame) -> None:
    """plan.parquet in the sweep folder (claimed first: claim)."""
    try:
        results.write_table(plan, sweep_dir / results.PLAN_FILE, "plan")
    except OSError as e:
        raise UserError(f"cannot write to output folder {sweep_dir}: {e.strerror or e}") from None


def run(jobs: list[Job], launcher: str, n_jobs: int, sweep_dir: Path, console, s: SweepConfig,
        restart: bool = False) -> pd.DataFrame:
    """Launch what is missing, then gather every job's row into results.parquet. Missing data is
    refused first, before any member folder is written."""
    from widen_cli.data import require

    require(jobs[0].run.dataset)
    remove_stale_temporaries(sweep_dir)
    errors: dict[Path, str] = {}
    try:
        launch(jobs, launcher, n_jobs, sweep_dir, console, s, restart, errors)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what finished is kept, the rest listed as interrupted
        gather(jobs, sweep_dir, errors, s.select_on, interrupted=True)
        raise
    return gather(jobs, sweep_dir, errors, s.select_on)


def remove_stale_temporaries(sweep_dir: Path) -> None:
    """Temporaries in the sweep folder that a killed process left (a sweep with the same --name may be
    writing its own right now: only those whose writer is gone go, see results.stale_temporaries)."""
    from widen_cli import claims

    try:
        for tmp in results.stale_temporaries(sweep_dir, claims.stale_seconds()):
            tmp.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: the write that follows says so


def failures(table: pd.DataFrame, console) -> bool:
    """Say how many runs diverged or failed; True when some failed (the command then exits 1)."""
    diverged, failed = (int((table.status == status).sum()) for status in ("diverged", "failed"))
    if diverged:
        console.print(f"{diverged} of {len(table)} runs diverged (non-finite loss; status diverged, not retried)")
    if failed:
        console.print(f"[red]{failed} of {len(table)} runs failed (status failed, the error in results.parquet "
                      f"and error.txt); run the same command again to retry them[/red]")
    return bool(failed)


def launch(jobs: list[Job], launcher: str, n_jobs: int, sweep_dir: Path, console, s: SweepConfig,
           restart: bool = False, errors: dict[Path, str] | None = None) -> dict[Path, str]:
    """Run the jobs that have not finished (resuming their checkpoints, or from scratch with `restart`);
    a failing member is recorded (error.txt) and the rest go on. Returns {run folder: error} of failures
    (`errors`, filled as they happen, when given)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    todo = [j for j in jobs if not (j.run_dir / results.SUMMARY_FILE).exists()]
    # --jobs unset: a SLURM array runs every member at once (SLURM queues what does not fit), others one
    array = launcher == "submitit" and s.submitit.cluster in (None, "slurm")
    n_jobs = n_jobs or (max(1, len(todo)) if array else 1)
    console.print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; running {len(todo)} "
                  f"with the {launcher} launcher")
    errors = {} if errors is None else errors
    if not todo:
        return errors
    for j in todo:
        try:
            (j.run_dir / results.ERROR_FILE).unlink(missing_ok=True)
        except OSError:
            pass
    columns = [TextColumn("[bold]members"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}")]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("members", total=len(todo), last="")

        def done(job: Job, error=None):
            m, seed = job.member, job.run.seed
            if error is not None:
                recorded = _record_failure(job, error)
                errors[job.run_dir] = one_line(error)
                see = f" (see {job.run_dir / results.ERROR_FILE})" if recorded else ""
                console.print(f"[red]member width={m.width} method={m.method} seed={seed} failed: "
                              f"{escape(errors[job.run_dir])}{see}[/red]", highlight=False, soft_wrap=True)
            lr = f" lr={job.run.optim.lr:g}" if s.lrs else ""
            progress.update(task, advance=1, last=f"{m.method} b={m.base_width} w={m.width}{lr} s={seed}")

        LAUNCHERS[launcher](todo, done, s, n_jobs, sweep_dir, console, restart)
    return errors


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
        if row is not None:
            row.setdefault("status", "finished")  # summaries from before statuses were recorded
            row["error"] = None
            checkpoint.tidy_finished(job.run_dir)
        else:
            m = job.member
            epochs = _epochs_done(job.run_dir)
            stopped = interrupted and damaged is None and job.run_dir not in (errors or {})
            if stopped:
                error = (f"interrupted after epoch {epochs} of {job.epochs}" if epochs else "interrupted before "
                         "its first epoch ended") + "; run the same command again to resume"
            row = dict(dataset=job.run.dataset.name, model=job.run.model.name, method=m.method, width=m.width,
                       base_width=m.base_width, n_weights=m.n_weights, n_weights_dense=m.n_weights_dense,
                       connectivity=m.connectivity, seed=job.run.seed, epochs=epochs,
                       status="interrupted" if stopped else "failed", error=error)
        method = method_of(job.member)  # the pruning columns, for failed rows and older summaries
        row.setdefault("variant", job.member.variant)
        row.setdefault("parent_run", run_name(parent_run(job.run)) if method.has_parent else None)
        row.setdefault("total_epochs", method.summary_fields(job.run, row["epochs"], complete=False)["total_epochs"])
        row.update(widening_factor=job.member.widening_factor, distribution=job.member.distribution,
                   budget=job.member.budget, last_layer_connectivity=job.run.method.last_layer_connectivity,
                   run=job.run_dir.name, lr=job.run.optim.lr)
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
