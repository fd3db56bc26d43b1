"""Find the result tables under some folders and read each by the kind its metadata names.

A table without a kind, or of another schema version than this widen writes, is skipped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa

from widen_cli import results
from widen_cli.errors import UserError
from widen_cli.report.curves import read_metrics
from widen_cli.report.runs import label_runs, repeats

DRAWN = ("summary", "results", "plan", "kernel")  # metrics are read beside the runs they belong to (curves.py)


@dataclass
class Results:
    """Everything found: runs (one row each, with the family it belongs to), plans and kernel tables by folder."""

    runs: pd.DataFrame
    plans: dict[str, pd.DataFrame] = field(default_factory=dict)
    kernels: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repeats: int = 0  # runs that repeat another run's experiment (counted once: runs.repeats)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-epoch rows of the runs, by run_dir


def find_tables(paths: list[Path]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"no such file or folder: {p}")
        files += [p] if p.is_file() else sorted(p.rglob("*.parquet"))
    return list(dict.fromkeys(f.resolve() for f in files))  # nested or repeated folders are read once


def kind_of(path: Path) -> tuple[str | None, str]:
    """(kind, why it is not read when kind is None)."""
    found = results.table_kind(path)
    if found is None:
        return None, "no widen table kind in its metadata (not a summary, results, plan or kernel-distance table)"
    kind, version = found
    if kind not in results.TABLES:
        return None, f"unknown table kind {kind!r} (written by a newer widen?)"
    ours = results.TABLES[kind].version
    if version != ours:
        than = "newer" if version > ours else "older"  # 0.1.0 reads the tables it writes, no others
        return None, f"{kind} table of schema version {version}, {than} than this widen's {ours}"
    return kind, ""


def load(paths: list[Path], warn: Callable[[str], None]) -> Results:
    files = find_tables(paths)
    where = ", ".join(map(str, paths))
    if not files:
        raise UserError(f"no Parquet files under {where}")
    runs, plans, kernels, sources, skipped = [], {}, {}, [], []
    for path in files:
        try:
            kind, why = kind_of(path)
            df = results.read_table(path) if kind in DRAWN else None
        except (OSError, ValueError, pa.ArrowException) as e:
            warn(f"skipping {path}: not a readable Parquet table ({str(e).splitlines()[0]})")
            skipped.append(str(path))
            continue
        if kind is None:
            warn(f"skipping {path}: {why}")
            skipped.append(str(path))
            continue
        if df is None:
            continue
        sources.append(str(path))
        label = _unique(path.parent.name, plans if kind == "plan" else kernels)
        if kind == "plan":
            plans[label] = df
        elif kind == "kernel":
            kernels[label] = df.sort_values("width")
        else:
            df = df.copy()
            df["run_dir"] = [str(path.parent / r) for r in df.run] if kind == "results" else str(path.parent)
            df["from_results"] = kind == "results"
            df["lr_tuned"] = lr_grid(df) if kind == "results" else ""
            runs.append(df)
    if not (runs or plans or kernels):
        raise UserError(f"none of the {len(files)} Parquet files under {where} is a result table widen report "
                        f"reads (summary, results, plan, kernel distance)")
    columns = [*results.RESULTS_COLUMNS, "run_dir", "from_results", "lr_tuned"]
    table = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=columns)
    # A sweep member appears in the sweep's results.parquet and as its own summary.parquet: count it once.
    table = table.sort_values("from_results", ascending=False, kind="stable").drop_duplicates("run_dir")
    if "selected" in table:  # a sweep over --lrs: only each member's selected run is drawn (its others,
        table = table[table.selected.astype(object).ne(False)]  # read as summaries too, go with it)
    if "status" in table:  # failed and interrupted sweep members have no accuracies; diverged runs keep theirs
        failed = table.status.isin(["failed", "interrupted"])
        for status in ("failed", "interrupted"):
            these = table.status.eq(status)
            if these.any():
                warn(f"leaving out {these.sum()} {status} run(s): " + ", ".join(sorted(map(str, table.run_dir[these]))))
        table = table[~failed]
    labelled = label_runs(table.reset_index(drop=True), warn)
    return Results(labelled, plans, kernels, sources, skipped, repeats(labelled, warn), read_metrics(labelled, warn))


def lr_grid(results: pd.DataFrame) -> str:
    """A sweep's learning rates when it tuned over several ('0.01,0.1'), else ''."""
    if "selected" not in results or "lr" not in results:
        return ""
    lrs = sorted(pd.to_numeric(results.lr, errors="coerce").dropna().unique())
    return ",".join(f"{lr:g}" for lr in lrs) if len(lrs) > 1 else ""


def _unique(name: str, taken: dict) -> str:
    label, i = name, 2
    while label in taken:
        label, i = f"{name} ({i})", i + 1
    return label
