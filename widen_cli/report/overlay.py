"""Figure 7's two halves on the same networks: trained runs joined to kernel-distance tables, and how well
the kernel distance tracks their test error across widths.

A kernel table describes one family: a one-hidden-layer MLP on a dataset's inputs, a weight budget and an
allocation rule (`distribution`). A run belongs to it when it is a sparse one-hidden-layer MLP with the same
dataset, budget and rule. A run whose last layer's connectivity is fixed at 1 keeps its classifier dense,
which is the dense-last rule whatever its `distribution` says; one fixed below 1 follows no rule a kernel
table has. Gaussian kernel tables have no dataset, so no run is drawn over them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from widen_cli import identity
from widen_cli.budget import DENSE_LAST
from widen_cli.methods import rows_where
from widen_cli.report.runs import mean_sem

KEYS = ["dataset", "budget", "distribution"]  # what a run and a kernel table must share
MEASURES = ("empirical", "theorem1")  # kernel distances correlated with test error


def kernel_keys(table: pd.DataFrame) -> dict:
    """A kernel table's dataset, budget and distribution (one family per table)."""
    row = table.iloc[0]
    return {k: (None if pd.isna(row[k]) else row[k]) for k in KEYS}


def run_rule(runs: pd.DataFrame) -> pd.Series:
    """The allocation rule each run's network follows (None: none a kernel table can have)."""
    llc = runs.last_layer_connectivity
    rule = runs.distribution.where(llc.isna(), None)
    return rule.where(~np.isclose(llc.fillna(0), 1), DENSE_LAST)


def _hidden_layers(stored) -> int | None:
    """model.hidden_layers from a run's stored identity; None when it has none (a failed row)."""
    ident = identity.loads(stored)
    return None if ident is None else ident["model"]["hidden_layers"]


def matching_runs(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the family a kernel table describes."""
    keys = kernel_keys(table)
    if keys["dataset"] is None or runs.empty:
        return runs.iloc[:0]
    hidden = runs.identity.map(_hidden_layers) if "identity" in runs else pd.Series(None, index=runs.index)
    sparse = rows_where(runs.method, lambda m: m.random_mask)
    return runs[(runs.model == "mlp") & sparse & (hidden.isna() | (hidden == 1))
                & (runs.dataset == keys["dataset"]) & (runs.budget == keys["budget"])
                & (run_rule(runs) == keys["distribution"])]


def kernel_overlay(kernels: dict[str, pd.DataFrame], runs: pd.DataFrame) -> pd.DataFrame:
    """One row per kernel table, run line and width: the table's columns beside the matching runs' mean
    test error (%) and its standard error over seeds. A table no run matches keeps its rows, with no line."""
    parts = []
    for name, table in sorted(kernels.items()):
        table = table.assign(table=name)
        matched = matching_runs(table, runs)
        if matched.empty:
            parts.append(table)
            continue
        for (setting, line), t in matched.groupby(["setting", "line"]):
            err = mean_sem(t.assign(test_error=100 - t.test), ["width"], ("test_error",))
            err = err[["width", "test_error_mean", "test_error_sem", "runs"]].assign(setting=setting, line=line)
            parts.append(table.merge(err, on="width", how="outer").assign(
                table=name, setting=setting, line=line, **{k: v for k, v in kernel_keys(table).items()}))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    for c in ("setting", "line", "test_error_mean", "test_error_sem", "runs"):
        if c not in out:
            out[c] = None
    front = ["table", "setting", "line", *KEYS, "width", "test_error_mean", "test_error_sem"]
    return out[[*front, *(c for c in out.columns if c not in front)]]


def tracking(overlay: pd.DataFrame) -> pd.DataFrame:
    """How well each kernel distance tracks test error across the widths both have, per table and line:
    Spearman's rank correlation and Pearson's on log10(distance) (distances span decades), and the width
    minimising each: empirical, Theorem 1, the paper's eq. (29) optimum, and test error."""
    if overlay.empty or overlay.line.isna().all():
        return pd.DataFrame()
    rows = []
    for (name, setting, line), d in overlay[overlay.line.notna()].groupby(["table", "setting", "line"], sort=True):
        both = d.dropna(subset=["test_error_mean", "distance_empirical"])
        kernel = d.dropna(subset=["distance_empirical"])
        row = dict(table=name, setting=setting, line=line, **kernel_keys(d), widths=len(both))
        for m in MEASURES:
            dist = both[f"distance_{m}"]
            enough = len(both) >= 3 and dist.nunique() > 1 and both.test_error_mean.nunique() > 1
            row[f"spearman_{m}"] = dist.corr(both.test_error_mean, method="spearman") if enough else math.nan
            row[f"pearson_log_{m}"] = np.log10(dist.clip(lower=1e-300)).corr(both.test_error_mean) if enough \
                else math.nan
        for m in MEASURES:
            row[f"width_min_{m}"] = kernel.width[kernel[f"distance_{m}"].idxmin()] if len(kernel) else math.nan
        row["width_eq29"] = kernel.width_eq29.iloc[0] if "width_eq29" in kernel and len(kernel) else math.nan
        tested = d.dropna(subset=["test_error_mean"])
        row["width_min_test_error"] = tested.width[tested.test_error_mean.idxmin()] if len(tested) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
