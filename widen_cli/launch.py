"""How a sweep's members run: one after another here (local, MLP members batched into stacked models),
in worker processes on this machine (pool, pool.py) or as SLURM jobs (submitit, slurm.py). Each
launcher gets the jobs that have not finished and calls done(job, error) once per job as it ends; a
failing member is recorded (error.txt in its folder) and the rest go on.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import replace
from pathlib import Path

from rich.markup import escape

from widen_cli import results, slurm
from widen_cli.schema import SweepConfig
from widen_cli.errors import MemberError, UserError
from widen_cli.jobs import Job


def run_member(job: Job, threads: int | None = None) -> str:
    """Run one member as `widen train` would, quietly; returns its run folder. Top level: picklable."""
    from rich.console import Console

    from widen_cli import epochlog
    from widen_cli.train import run_training

    if threads:  # read by hardware.setup, which sets the thread count for the run
        os.environ["WIDEN_THREADS"] = str(threads)
    with epochlog.member_logs():  # its epochs to its own folder's log file
        run_training(job, Console(stderr=True, quiet=True))
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


def _local(todo: list[Job], done, s: SweepConfig, n_jobs: int, sweep_dir: Path, console) -> None:
    """One after another in this process. MLP members that can share a stacked model train together
    (widen_cli/stacked_training.py) unless sweep.batch_members is false; interrupted ones resume as they trained
    (stacked_training.train_family)."""
    from widen_cli import stacked_training
    from widen_cli.train import run_training

    def key(job: Job):
        if not s.batch_members or any(job.keep_weights):  # weights kept after an epoch: a single run's loop
            return None
        return stacked_training.batch_key(job.run)

    for batch in stacked_training.group(todo, key):
        try:
            if key(batch[0]) is None:
                run_training(batch[0], console)
            else:
                stacked_training.train_family(batch, console)
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
        run_training(replace(job, restart=False), console)  # resumes what its batch did (restarted or not)
        done(job)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, UserError) and not isinstance(e, MemberError):
            raise
        done(job, e)


def _pool(todo: list[Job], done, s: SweepConfig, n_jobs: int, sweep_dir: Path, console) -> None:
    """--jobs worker processes on this machine (widen_cli/pool.py), the CPU threads this process may use
    (its affinity, capped by a container's quota) split between them."""
    from widen_cli import hardware, pool

    threads = max(1, hardware.available_cpus() // n_jobs)
    console.print(f"pool: up to {n_jobs} members at once, {threads} CPU thread{'s' if threads > 1 else ''} each; "
                  f"each member logs its epochs to {results.LOG_FILE} in its folder", highlight=False)
    pool.launch(todo, done, n_jobs, threads, _pool_gpus(todo[0].run.device), console, run_member)


def _pool_gpus(device: str) -> int:
    """GPUs the pool's workers share out: every visible one for device auto/cuda, none for cpu or cuda:N."""
    if device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()



LAUNCHERS = {"local": _local, "pool": _pool, "submitit": slurm.launch}


def launch(jobs: list[Job], launcher: str, n_jobs: int, sweep_dir: Path, console, s: SweepConfig,
           errors: dict[Path, str] | None = None) -> dict[Path, str]:
    """Run the jobs that have not finished (resuming their checkpoints, or from scratch: Job.restart);
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

        LAUNCHERS[launcher](todo, done, s, n_jobs, sweep_dir, console)
    return errors
