"""Find the result tables under some folders and read each by the kind its metadata names.

Tables written by an older widen carry no kind; they are recognised by the columns they must have, as
before kinds existed, and one warning names them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from widen_cli import results
from widen_cli.errors import UserError
from widen_cli.report.curves import read_metrics
from widen_cli.report.runs import label_runs, listing, repeats

# Tables without a kind in their metadata: the columns each kind had to have, tried in this order.
_OLD_SUMMARY = ["dataset", "model", "method", "width", "base_width", "n_weights", "n_weights_dense", "connectivity",
                "seed", "epochs", "best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc",
                "wall_seconds"]
OLD_KINDS = {
    "results": [*_OLD_SUMMARY, "run"],
    "summary": _OLD_SUMMARY,
    "plan": ["width", "widening_factor", "method", "connectivity", "layers", "layer_kept_fraction"],
    "kernel": ["width", "base_width", "distance_empirical", "distance_empirical_se", "distance_theorem1",
               "distance_eq6", "distance_leading_order"],
    "metrics": results.METRICS_COLUMNS,
}
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


def kind_of(path: Path) -> tuple[str | None, str, bool]:
    """(kind, why it is not read when kind is None, whether the kind was guessed from the columns)."""
    found = results.table_kind(path)
    if found is None:
        names = set(pq.read_schema(path).names)
        kind = next((k for k, cols in OLD_KINDS.items() if names >= set(cols)), None)
        return kind, "unknown columns (not a summary, results, plan or kernel-distance table)", True
    kind, version = found
    if kind not in results.TABLES:
        return None, f"unknown table kind {kind!r} (written by a newer widen?)", False
    if version > results.TABLES[kind].version:
        return None, (f"{kind} table of schema version {version}, newer than this widen's "
                      f"{results.TABLES[kind].version}"), False
    return kind, "", False


def load(paths: list[Path], warn: Callable[[str], None]) -> Results:
    files = find_tables(paths)
    where = ", ".join(map(str, paths))
    if not files:
        raise UserError(f"no Parquet files under {where}")
    runs, plans, kernels, sources, skipped, guessed = [], {}, {}, [], [], []
    for path in files:
        try:
            kind, why, old = kind_of(path)
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
        if old:
            guessed.append(str(path))
        sources.append(str(path))
        label = _unique(path.parent.name, plans if kind == "plan" else kernels)
        if kind == "plan":
            plans[label] = df
        elif kind == "kernel":
            kernels[label] = kernel_table(df).sort_values("width")
        else:
            df = df.copy()
            df["run_dir"] = [str(path.parent / r) for r in df.run] if kind == "results" else str(path.parent)
            df["from_results"] = kind == "results"
            df["lr_tuned"] = lr_grid(df) if kind == "results" else ""
            runs.append(df)
    if not (runs or plans or kernels):
        raise UserError(f"none of the {len(files)} Parquet files under {where} is a result table widen report "
                        f"reads (summary, results, plan, kernel distance)")
    if guessed:
        warn(f"{len(guessed)} table(s) carry no kind in their metadata (written by an older widen) and were "
             f"recognised by their columns: {listing(guessed)}")
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


# Kernel tables of schema 1 named the allocation rule `allocation`, with names of their own.
OLD_ALLOCATIONS = {"first-layer": "dense-last", "uniform": "uniform"}


def kernel_table(df: pd.DataFrame) -> pd.DataFrame:
    """A kernel table with every current column: older ones get their rule under its current name, their
    dataset from `inputs` (null for Gaussian), their budget from n_weights, and nulls for the rest."""
    df = df.copy()
    if "distribution" not in df and "allocation" in df:
        df["distribution"] = df.allocation.map(OLD_ALLOCATIONS)
    if "dataset" not in df and "inputs" in df:
        df["dataset"] = df.inputs.where(df.inputs != "gaussian", None)
    if "budget" not in df and "n_weights" in df:
        df["budget"] = df.n_weights
    for c in results.KERNEL_COLUMNS:
        if c not in df:
            df[c] = None
    return df
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
