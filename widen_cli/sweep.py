"""`widen sweep-width`: run every planned job that is missing, then gather the results.

Each member is an ordinary `widen train` run (same run folder naming) under the sweep folder, so a
finished member is found and skipped, an interrupted one resumes from its checkpoint, and members never
share a file: the results table is rebuilt from the members' own summary.parquet files, with a `failed`
row for each member that crashed. Launchers (launch.py) receive the planned jobs themselves (plan.py);
nothing here composes a config or plans a member again; gathering is gather.py.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from widen_cli import results
from widen_cli.schema import SweepConfig
from widen_cli.errors import UserError
from widen_cli.identity import differences
from widen_cli.gather import gather
from widen_cli.jobs import Job
from widen_cli.launch import LAUNCHERS, launch


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
    jobs = [replace(j, restart=restart) for j in jobs]  # carried by each job from here (lifecycle.start)
    remove_stale_temporaries(sweep_dir)
    errors: dict[Path, str] = {}
    try:
        launch(jobs, launcher, n_jobs, sweep_dir, console, s, errors)
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
