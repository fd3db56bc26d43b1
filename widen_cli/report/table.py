"""Table 1: best test accuracy and weight count per setting, row (family) and width."""
from __future__ import annotations

import pandas as pd

from widen_cli.methods.dense import DENSE
from widen_cli.report.runs import count, mean_sem


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Best test accuracy (%, mean over seeds) and weight count per row and width, as the paper's Table 1.

    Rows per setting: `dense` (every plain dense model, the families' baselines included), then one row per
    family and last-layer connectivity with its wider members. Columns: setting, row, then test_acc_w<W>,
    test_sem_w<W> (its standard error over seeds; empty for one seed), n_weights_w<W> and seeds_w<W> (the
    samples averaged: one per seed, repeated runs counted once) for every width.
    """
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(row=runs.line.where(~runs.dense_model, DENSE.name))
    cells = mean_sem(runs, ["setting", "row", "width"], ("test",))
    order = cells.groupby(["setting", "row"]).n_weights.min().reset_index()
    order["rank"] = (order.row != DENSE.name).astype(int)
    order = order.sort_values(["setting", "rank", "n_weights", "row"])[["setting", "row"]]
    values = {"test_mean": "test_acc", "test_sem": "test_sem", "n_weights": "n_weights", "runs": "seeds"}
    wide = cells.pivot(index=["setting", "row"], columns="width", values=list(values))
    columns = [(v, w) for w in sorted(cells.width.unique()) for v in values]
    wide = wide[columns]
    wide.columns = [f"{values[v]}_w{w}" for v, w in columns]
    for col in wide.columns:
        if not col.startswith(("test_acc", "test_sem")):
            wide[col] = wide[col].round().astype("Int64")
    return order.merge(wide.reset_index(), on=["setting", "row"])


def table1_display(table: pd.DataFrame) -> pd.DataFrame:
    """The same table with one text cell per width: accuracy ± standard error (weights, seeds), e.g.
    `70.02 ± 0.31 (11.7M, 3 seeds)`; a single seed has no error to show."""
    widths = [int(c.removeprefix("test_acc_w")) for c in table.columns if c.startswith("test_acc_w")]
    shown = table[["setting", "row"]].copy()
    for w in widths:
        shown[str(w)] = [f"{a:.2f}{'' if pd.isna(e) else f' ± {e:.2f}'} ({count(n)}, {k} seed{'' if k == 1 else 's'})"
                         if pd.notna(a) else "" for a, e, n, k in zip(table[f"test_acc_w{w}"], table[f"test_sem_w{w}"],
                                                                      table[f"n_weights_w{w}"], table[f"seeds_w{w}"])]
    return shown


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"

