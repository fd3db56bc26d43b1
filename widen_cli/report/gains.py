"""What widening gains over the dense baseline (Figures 6 and 12), with the standard error of every number.

Gains are differences and ratios of means over seeds, so their errors are propagated from the standard
errors of the means they combine (taken as independent samples; first-order for the ratio).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from widen_cli.methods import rows_where
from widen_cli.report.axes import Plot, errorbar, legend, log_axis, panels, title, COLUMN, PANEL_HEIGHT
from widen_cli.report.runs import count, mean_sem


def widening_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Every wider sparse member beside its dense baseline (the dense model at the base width) and the dense
    model of its own width, means over seeds with their standard errors (`*_sem`) and sample counts
    (`*_runs`): what Figures 6 and 12 draw. `dense` is NaN where that width has no dense model; the gains
    are in accuracy points over the baseline."""
    rows = []
    for setting, here in runs.groupby("setting"):
        dense = mean_sem(here[here.dense_model], ["width"]).set_index("width")
        sparse = here[rows_where(here.method, lambda m: m.random_mask) & here.last_layer_connectivity.isna()]
        for (line, base_width), members in sparse.groupby(["line", "base_width"]):
            if base_width not in dense.index:
                continue
            b = dense.loc[base_width]
            for m in mean_sem(members[members.width > base_width], ["width"]).itertuples():
                d = dense.loc[m.width] if m.width in dense.index else None
                d_mean = math.nan if d is None else d.test_mean
                d_sem = math.nan if d is None else d.test_sem
                f = (m.test_mean - b.test_mean) / (d_mean - b.test_mean) if d_mean != b.test_mean else math.nan
                rows.append(dict(
                    setting=setting, line=line, base_width=base_width, width=m.width,
                    widening_factor=m.widening_factor, baseline=b.test_mean, baseline_sem=b.test_sem,
                    baseline_runs=b.runs, sparse=m.test_mean, sparse_sem=m.test_sem, sparse_runs=m.runs,
                    dense=d_mean, dense_sem=d_sem, dense_runs=0 if d is None else d.runs,
                    sparse_train=m.train_mean, sparse_train_sem=m.train_sem,
                    fraction=f, fraction_sem=_ratio_sem(f, d_mean - b.test_mean, m.test_sem, d_sem, b.test_sem),
                    gain_constant_weights=m.test_mean - b.test_mean,
                    gain_constant_weights_sem=np.hypot(m.test_sem, b.test_sem),
                    gain_growing_weights=d_mean - b.test_mean, gain_growing_weights_sem=np.hypot(d_sem, b.test_sem),
                    n_weights_sparse=m.n_weights, n_weights_dense=math.nan if d is None else d.n_weights))
    return pd.DataFrame(rows)


def _ratio_sem(f: float, denominator: float, sparse: float, dense: float, base: float) -> float:
    """Standard error of f = (s - b) / (d - b), to first order: df/ds = 1/D, df/dd = -f/D, df/db = (f-1)/D."""
    if not denominator or math.isnan(f):
        return math.nan
    return math.sqrt(sparse ** 2 + (f * dense) ** 2 + ((f - 1) * base) ** 2) / abs(denominator)


FIG6_COLUMNS = ["setting", "line", "width", "widening_factor", "baseline", "baseline_sem", "sparse", "sparse_sem",
                "dense", "dense_sem", "sparse_train", "sparse_train_sem", "fraction", "fraction_sem",
                "sparse_runs", "dense_runs", "baseline_runs"]


def fig_improvement_fraction(runs: pd.DataFrame) -> Plot | None:
    """Per family, (sparse - baseline) / (dense - baseline) at each widening factor above, and the sparse
    members' train accuracy on its own axis below (a second y axis would overlay the two scales)."""
    gains = widening_gains(runs)
    data = gains[gains.dense.notna()][FIG6_COLUMNS].reset_index(drop=True) if len(gains) else gains
    if data.empty:
        return None
    families = list(data.groupby(["setting", "line"], sort=True))
    cols = min(len(families), 2)
    rows = math.ceil(len(families) / cols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(COLUMN * cols, 1.35 * PANEL_HEIGHT * rows), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(rows, cols, squeeze=False).ravel())
    for sub in subs[len(families):]:
        sub.set_visible(False)
    for sub, ((setting, line), d) in zip(subs, families):
        top, bottom = sub.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        errorbar(top, d.widening_factor, d.rename(columns={"fraction": "fraction_mean"}), "fraction",
                 color="k", marker="^", ls="none", label="fraction of the dense improvement")
        top.axhline(1, color="0.6", lw=0.8, ls="--", label="1: all of the dense improvement")
        top.set_ylabel("(sparse - base) /\n(dense - base)")
        errorbar(bottom, d.widening_factor, d.rename(columns={"sparse_train": "sparse_train_mean"}), "sparse_train",
                 color="tab:red", marker="o", mfc="none", ls="-", label="sparse final train accuracy")
        bottom.set_ylabel("train acc. (%)", color="tab:red")
        peak = d.widening_factor[d.sparse_train.idxmax()]
        for ax in (top, bottom):  # behind the points, which it would otherwise strike through
            ax.axvline(peak, color="tab:red", ls=":", lw=0.8, zorder=0,
                       label="maximum of the train accuracy" if ax is bottom else None)
        log_axis(bottom, d.widening_factor.round(2), "widening factor")
        top.tick_params(labelbottom=False)
        title(top, f"{setting}, {line}")
        handles = [*top.get_legend_handles_labels()[0], *bottom.get_legend_handles_labels()[0]]
        legend(bottom, handles, [h.get_label() for h in handles])
    return Plot("improvement_fraction", "Share of the improvement due to width (Figure 6)",
                "Top: (sparse - baseline) / (dense - baseline) best test accuracy at each widening factor (means "
                "over seeds; error bars: standard error propagated from the three means). Bottom: the sparse "
                "members' final training accuracy (mean, standard error); the dotted line marks its maximum.",
                fig, data)


GAIN_COLUMNS = ["setting", "line", "base_width", "width", "widening_factor", "baseline", "baseline_sem",
                "baseline_runs", "gain_constant_weights", "gain_constant_weights_sem", "sparse_runs",
                "gain_growing_weights", "gain_growing_weights_sem", "dense_runs", "n_weights_sparse",
                "n_weights_dense"]


def widening_gain_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 12's numbers: per family and wider width, the improvement over the base-width dense baseline
    at a constant weight count (the sparse member) and at a growing one (the dense model of that width)."""
    gains = widening_gains(runs)
    return gains[GAIN_COLUMNS].reset_index(drop=True) if len(gains) else pd.DataFrame(columns=GAIN_COLUMNS)


def fig_widening_gain(runs: pd.DataFrame) -> Plot | None:
    data = widening_gain_data(runs)
    if data.empty or data.gain_growing_weights.isna().all():  # needs the dense-wide members
        return None
    families = list(data.groupby(["setting", "line"], sort=True))
    fig, axes = panels(len(families))
    for ax, ((setting, line), d) in zip(axes, families):
        ax.axhline(0, color="0.6", lw=0.8, label=f"baseline: dense, width {d.base_width.iloc[0]:g}, "
                                                 f"{_pm(d.baseline.iloc[0], d.baseline_sem.iloc[0])}%")
        errorbar(ax, d.width, d.rename(columns={"gain_constant_weights": "gain_constant_weights_mean"}),
                 "gain_constant_weights", color="C0", marker="o",
                 label=f"sparse: constant weight count ({count(d.n_weights_sparse.iloc[0])})")
        errorbar(ax, d.width, d.rename(columns={"gain_growing_weights": "gain_growing_weights_mean"}),
                 "gain_growing_weights", color="k", ls="--", marker="s", mfc="none",
                 label="dense: weights grow with width")
        log_axis(ax, d.width, "width")
        ax.set_ylabel("test accuracy gain (points)")
        title(ax, f"{setting}, {line}")
        legend(ax)
    return Plot("widening_gain", "Improvement from widening (Figure 12)",
                "Best test accuracy gained over the dense baseline at the base width, by widening at a constant "
                "weight count (sparse members) and with the weight count growing (dense models of the same "
                "width); means over seeds, error bars: standard error of the difference. From the same runs as "
                "Table 1.", fig, data)


def _pm(mean: float, sem: float) -> str:
    return f"{mean:.1f}" if pd.isna(sem) else f"{mean:.1f} ± {sem:.1f}"
