"""`widen sweep-width`: plan a fixed-budget family, run every member that is missing, gather the results.

Each member is an ordinary `widen train` run (same config composition, same run folder naming) under
the sweep folder, so a finished member is found and skipped, an interrupted one resumes from its
checkpoint, and members never share a file: the results table is rebuilt from the members' own
summary.parquet files, with a `failed` row for each member that crashed.
"""
from __future__ import annotations

import hashlib
import json
import os
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import submitit.helpers

from widen_cli import budget, checkpoint, results
from widen_cli.config import MethodConfig, RunConfig, load
from widen_cli.errors import UserError
from widen_cli.jobs import Job as TrainJob, make_job
from widen_cli.models import InputSpec

LAUNCHERS = ("local", "pool", "submitit")


@dataclass(frozen=True)
class Job:
    """One member and seed: the overrides that make it a `widen train` run."""

    member: budget.Member
    seed: int
    overrides: tuple[str, ...]
    run: RunConfig
    last_layer_connectivity: float | None = None

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir


def sweep_name(run: RunConfig) -> str:
    """Readable parts plus a hash of what defines the family (not its widths or seeds, so a sweep can grow)."""
    ident = run.identity()
    for k in ("width", "seed"):
        ident.pop(k)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return f"{run.dataset.name}-{run.model.name}-{run.method.name}-b{run.base_width}-{digest}"


def plan_family(run: RunConfig, spec: InputSpec, widths: list[int], dense_wide: bool,
                last_layer_connectivities: list[float | None] = (None,)) -> list[tuple[budget.Member, float | None]]:
    """Every member: the family's method at each width, plus dense models at the wider widths.

    The sparse and non-linear bottleneck members at the base width are the dense baseline itself; the
    linear bottleneck's is its full-rank factorisation, so the unmodified dense baseline is added too.
    With several last-layer connectivities (the Figure 4 grid), impossible combinations are left out.
    """
    members = []
    for llc in last_layer_connectivities:
        method = run.method if llc is None else replace(run.method, last_layer_connectivity=llc)
        for w in widths:
            if llc is not None and len(last_layer_connectivities) > 1 and \
                    not budget.is_valid(run.model, spec, run.base_width, w, method):
                continue
            members.append((budget.plan_member(run.model, spec, run.base_width, w, method),
                            method.last_layer_connectivity))
    if run.method.name == "dense":
        return members
    dense_widths = [w for w in widths if w > run.base_width] if dense_wide else []
    if run.method.name == "linear-bottleneck":
        dense_widths = [run.base_width] + dense_widths
    dense = MethodConfig(name="dense")
    return members + [(budget.plan_member(run.model, spec, run.base_width, w, dense), None) for w in dense_widths]


def plan_table(members: list[tuple[budget.Member, float | None]]) -> pd.DataFrame:
    rows = []
    for m, llc in members:
        sizes = [budget.numel(s) for s in m.layers.values()]
        kept = [m.kept[n] for n in m.layers]
        rows.append(dict(
            width=m.width, widening_factor=m.widening_factor, method=m.method, distribution=m.distribution,
            within=m.within, last_layer_connectivity=llc, connectivity=m.connectivity, n_weights=m.n_weights,
            n_weights_dense=m.n_weights_dense, budget=m.budget, deviation=m.deviation,
            bottleneck_ratio=m.bottleneck_ratio, layers=list(m.layers), layer_sizes=sizes, layer_kept=kept,
            layer_kept_fraction=[k / s for k, s in zip(kept, sizes)],
        ))
    return pd.DataFrame(rows, columns=results.PLAN_COLUMNS)


def make_jobs(member_overrides: list[str], members, seeds: list[int], sweep_dir: Path) -> list[Job]:
    """The `widen train` overrides of every member and seed; method.* overrides go to the family only."""
    jobs = []
    for member, llc in members:
        shared = [o for o in member_overrides if member.method != "dense" or not o.startswith("method.")]
        for seed in seeds:
            overrides = [*shared, f"method={member.method}", f"width={member.width}",
                         f"base_width={member.base_width}", f"seed={seed}", f"out={sweep_dir}", "name=null"]
            if llc is not None and member.method != "dense":
                overrides.append(f"method.last_layer_connectivity={llc}")
            _, run = load(overrides)
            jobs.append(Job(member, seed, tuple(overrides), run, llc))
    return jobs


def run_member(job: TrainJob, threads: int | None = None, restart: bool = False) -> str:
    """Run one member as `widen train` would, quietly; returns its run folder. Top level: picklable."""
    from rich.console import Console

    from widen_cli.train import run_training

    if threads:  # read by hardware.setup, which sets the thread count for the run
        os.environ["WIDEN_THREADS"] = str(threads)
    run_training(job, Console(stderr=True, quiet=True), restart=restart)
    return str(job.run_dir)


class MemberJob(submitit.helpers.Checkpointable):
    """run_member for submitit: a SLURM job that is pre-empted or times out is requeued, and the
    requeued job resumes the member from its last checkpoint."""

    def __call__(self, job: TrainJob, threads: int | None = None, restart: bool = False) -> str:
        return run_member(job, threads, restart)

    def checkpoint(self, job: TrainJob, threads: int | None = None, restart: bool = False):
        return submitit.helpers.DelayedSubmission(self, job, threads)  # resume, never restart again


def one_line(error: BaseException) -> str:
    """What went wrong, in one line: a UserError's message, otherwise the exception's last line."""
    text = str(error).strip()
    if isinstance(error, UserError) and text:
        return text.splitlines()[0]
    return f"{type(error).__name__}: {text.splitlines()[-1]}" if text else type(error).__name__


def _record_failure(job: Job, error: BaseException) -> None:
    """error.txt in the member's folder, when the folder can be written (it may be what failed)."""
    try:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        results.write_text("".join(traceback.format_exception(error)), job.run_dir / results.ERROR_FILE)
    except OSError:
        pass


def launch(jobs: list[Job], launcher: str, n_jobs: int, sweep_dir: Path, console,
           submitit_params: dict | None = None, restart: bool = False) -> dict[Path, str]:
    """Run the jobs that have not finished (resuming their checkpoints, or from scratch with `restart`);
    a failing member is recorded (error.txt) and the rest go on. Returns {run folder: error} of failures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    todo = [j for j in jobs if not (j.run_dir / results.SUMMARY_FILE).exists()]
    console.print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; running {len(todo)} "
                  f"with the {launcher} launcher")
    errors: dict[Path, str] = {}
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
            if error is not None:
                _record_failure(job, error)
                errors[job.run_dir] = one_line(error)
                console.print(f"[red]member width={job.member.width} method={job.member.method} seed={job.seed} "
                              f"failed: {errors[job.run_dir]} (see {job.run_dir / 'error.txt'})[/red]",
                              highlight=False)
            progress.update(task, advance=1, last=f"{job.member.method} w={job.member.width} s={job.seed}")

        if launcher == "local":
            from widen_cli import family
            from widen_cli.train import run_training

            # MLP members that can share a stacked model train together (widen_cli/family.py); one
            # with a checkpoint resumes alone.
            loaded = [(job, make_job(job.run)) for job in todo]

            def key(item):
                job = item[0]
                if not restart and (job.run_dir / checkpoint.FILENAME).exists():
                    return None
                return family.batch_key(job.run)

            for batch in family.group(loaded, key):
                try:
                    if len(batch) == 1:
                        run_training(batch[0][1], console, restart=restart)
                    else:
                        if restart:
                            for job, _ in batch:
                                checkpoint.discard(job.run_dir)
                        family.train_family([planned for _, planned in batch], console)
                    for job, _ in batch:
                        done(job)
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001 - one member's crash must not stop the family
                    for job, _ in batch:
                        done(job, e)
        elif launcher == "pool":
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // n_jobs)
            with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(run_member, make_job(j.run), threads, restart): j for j in todo}
                for fut in as_completed(futures):
                    done(futures[fut], fut.exception())
        else:
            import submitit

            executor = submitit.AutoExecutor(folder=sweep_dir / ".submitit")
            params = {k: v for k, v in (submitit_params or {}).items() if v is not None}
            executor.update_parameters(**params, slurm_array_parallelism=n_jobs)
            submitted = executor.map_array(MemberJob(), [make_job(j.run) for j in todo], [None] * len(todo),
                                           [restart] * len(todo))
            for job, sub in zip(todo, submitted):
                try:
                    sub.result()
                    done(job)
                except Exception as e:  # noqa: BLE001
                    done(job, e)
    return errors


def gather(jobs: list[Job], sweep_dir: Path, errors: dict[Path, str] | None = None) -> pd.DataFrame:
    """results.parquet: one row per member and seed, from the members' own summary files; a member
    without one is a `failed` row with its planned identity and its error."""
    rows = []
    for job in jobs:
        path = job.run_dir / results.SUMMARY_FILE
        if path.exists():
            row = results.read_table(path).iloc[0].to_dict()
            row.setdefault("status", "finished")  # summaries from before statuses were recorded
            row["error"] = None
        else:
            m = job.member
            metrics = job.run_dir / results.METRICS_FILE
            row = dict(dataset=job.run.dataset.name, model=job.run.model.name, method=m.method, width=m.width,
                       base_width=m.base_width, n_weights=m.n_weights, n_weights_dense=m.n_weights_dense,
                       connectivity=m.connectivity, seed=job.seed,
                       epochs=len(results.read_table(metrics)) if metrics.exists() else 0, status="failed",
                       error=(errors or {}).get(job.run_dir, "did not finish (no summary.parquet)"))
        row.update(widening_factor=job.member.widening_factor, distribution=job.member.distribution,
                   last_layer_connectivity=job.last_layer_connectivity, run=job.run_dir.name)
        rows.append(row)
    df = pd.DataFrame(rows, columns=results.RESULTS_COLUMNS)
    results.write_table(df, sweep_dir / results.RESULTS_FILE, "results")
    return df
