"""The paper's figures, each drawn from labelled runs (see runs.py) when its data is present.

Plots use matplotlib's object API (no pyplot), so no display or backend is ever needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from widen_cli.report.load import Results
from widen_cli.report.overlay import kernel_keys, kernel_overlay, tracking
from widen_cli.report.runs import count, mean_sem

BOTTLENECKS = ("linear-bottleneck", "nonlinear-bottleneck")
WIDENED = ("sparse", "pruned")  # families that keep the budget at every width by removing weights


@dataclass
class Plot:
    name: str  # file stem: <name>.png and <name>.svg
    title: str
    caption: str
    figure: Figure
    data: pd.DataFrame  # the numbers drawn


# ---------------------------------------------------------------- axes

def _panels(n: int, width: float = 4.6, height: float = 3.4) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _log_axis(ax, values, label: str, base: float = 2) -> None:
    ax.set_xscale("log", base=base)
    ticks = sorted({float(v) for v in values})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7, rotation=45 if len(ticks) > 6 else 0)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def _log_fractions(axis) -> None:
    """A log axis for fractions, ticked at 0.01, 0.02, 0.05, 0.1, ... in plain numbers."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _connectivity_axis(ax, label: str = "connectivity (weights / dense weights at that width)") -> None:
    ax.set_xscale("log")
    _log_fractions(ax.xaxis)
    ax.set_xlabel(label)


def _errorbar(ax, x, d: pd.DataFrame, value: str, **style):
    return ax.errorbar(x, d[f"{value}_mean"], yerr=d[f"{value}_sem"].fillna(0), capsize=3, markersize=5, **style)


def _by_budget(lines: pd.DataFrame):
    """Lines ordered by weight count, so colours follow the budget."""
    order = lines.groupby("line").n_weights.median().sort_values(kind="stable").index
    return [(i, line, lines[lines.line == line]) for i, line in enumerate(order)]


# ---------------------------------------------------------------- figures (each returns None without its data)

def _family_style(line: str) -> dict:
    """Pruned families dotted with triangles, beside the solid sparse ones."""
    return dict(marker="^", ls=":") if line.startswith("pruned") else dict(marker="o")


def fig_acc_vs_width(runs: pd.DataFrame, value: str = "test") -> Plot | None:
    settings = sorted(runs[runs.method.isin(WIDENED)].setting.unique())
    if not settings:
        return None
    fig, axes = _panels(len(settings))
    data = []
    for ax, setting in zip(axes, settings):
        here = runs[runs.setting == setting]
        lines = mean_sem(here[here.method.isin(WIDENED)], ["line", "width"])
        dense = mean_sem(here[here.dense_model], ["width"]).assign(line="dense")
        for i, line, d in _by_budget(lines):
            _errorbar(ax, d.width, d, value, color=f"C{i}", label=f"{line}: {count(d.n_weights.median())} weights",
                      **_family_style(line))
        if len(dense):
            _errorbar(ax, dense.width, dense, value, color="k", ls="--", marker="s", mfc="none",
                      label="dense (weights grow with width)")
        _log_axis(ax, pd.concat([lines.width, dense.width]), "width")
        ax.set_ylabel(f"{'best test' if value == 'test' else 'final train'} accuracy (%)")
        ax.set_title(setting, fontsize=10)
        ax.legend(fontsize=7)
        data.append(pd.concat([lines, dense]).assign(setting=setting))
    if value == "test":
        return Plot("test_acc_vs_width", "Test accuracy vs width (Figures 1 and 5)",
                    "Best test accuracy of every sparse family (solid, one line per weight budget), of pruned "
                    "families (dotted triangles: dense at that width, pruned to the budget) and of dense models "
                    "whose weight count grows with width (dashed). Mean over seeds, error bars: standard error.", fig, _front(pd.concat(data), "setting", "line"))
    return Plot("train_acc_vs_width", "Train accuracy vs width (Figure 13)",
                "Final training accuracy of the same runs, drawn the same way.", fig,
                _front(pd.concat(data), "setting", "line"))


def fig_budget_methods(runs: pd.DataFrame) -> Plot | None:
    """One panel per setting and budget with pruned members: accuracy against the width the model had while
    it was trained (sparse: its width; pruned: its parent's), one line per method, the dense baseline at
    the base width as a dashed line."""
    pruned = runs[runs.method == "pruned"]
    panels = sorted(pruned.groupby(["setting", "base_width"]).groups)
    if not panels:
        return None
    fig, axes = _panels(len(panels))
    data = []
    for ax, (setting, base_width) in zip(axes, panels):
        here = runs[(runs.setting == setting) & (runs.base_width == base_width)]
        lines = mean_sem(here[here.method.isin(WIDENED)], ["line", "width"])
        base = mean_sem(runs[(runs.setting == setting) & runs.dense_model & (runs.width == base_width)], ["width"])
        for i, line in enumerate(sorted(lines.line.unique())):
            d = lines[lines.line == line]
            _errorbar(ax, d.width, d, "test", color=f"C{i}", label=line, **_family_style(line))
        base = base.assign(line=f"dense b={base_width}")
        if len(base):
            ax.axhline(base.test_mean.iloc[0], color="k", ls="--", lw=1, label=base.line.iloc[0])
        _log_axis(ax, pd.concat([lines.width, base.width]), "width during training")
        ax.set_ylabel("best test accuracy (%)")
        ax.set_title(f"{setting}, {count(here.n_weights.median())} weights", fontsize=10)
        ax.legend(fontsize=7)
        data += [d.assign(setting=setting, base_width=base_width) for d in (lines, base) if len(d)]
    return Plot("budget_methods", "Width during training at a fixed budget",
                "Best test accuracy of models that all end with the base width's weight count, against the width "
                "they were trained at: sparse members (a random static mask at that width), pruned members "
                "(a dense model of that width trained, pruned to the budget and fine-tuned or rewound), and the "
                "dense baseline (dashed). Mean over seeds, error bars: standard error.", fig,
                _front(pd.concat(data, ignore_index=True), "setting", "base_width", "line"))


def fig_acc_vs_connectivity(runs: pd.DataFrame) -> Plot | None:
    sparse = runs[runs.method == "sparse"]
    settings = sorted(sparse.setting.unique())
    if not settings:
        return None
    fig, axes = _panels(len(settings))
    data = []
    for ax, setting in zip(axes, settings):
        lines = mean_sem(sparse[sparse.setting == setting], ["line", "width"])
        for i, line, d in _by_budget(lines):
            _errorbar(ax, d.connectivity, d, "test", color=f"C{i}", marker="o",
                      label=f"{line}: {count(d.n_weights.median())} weights")
        _connectivity_axis(ax)
        ax.set_ylabel("best test accuracy (%)")
        ax.set_title(setting, fontsize=10)
        ax.legend(fontsize=7)
        data.append(lines.assign(setting=setting))
    return Plot("test_acc_vs_connectivity", "Test accuracy vs connectivity (Figure 11)",
                "The sparse families again, against connectivity on a log axis; the dense baseline is the "
                "point at connectivity 1.", fig, _front(pd.concat(data), "setting", "line"))


def widening_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Every wider sparse member beside its dense baseline (the dense model at the base width) and the dense
    model of its own width, means over seeds: what Figures 6 and 12 draw. `dense` is NaN where that width
    has no dense model; the gains are in accuracy points over the baseline."""
    rows = []
    for setting, here in runs.groupby("setting"):
        dense = mean_sem(here[here.dense_model], ["width"]).set_index("width")
        sparse = here[(here.method == "sparse") & here.last_layer_connectivity.isna()]
        for (line, base_width), members in sparse.groupby(["line", "base_width"]):
            if base_width not in dense.index:
                continue
            base = dense.test_mean[base_width]
            for m in mean_sem(members[members.width > base_width], ["width"]).itertuples():
                d = dense.test_mean.get(m.width, math.nan)
                rows.append(dict(setting=setting, line=line, width=m.width, widening_factor=m.widening_factor,
                                 baseline=base, sparse=m.test_mean, dense=d, sparse_train=m.train_mean,
                                 fraction=(m.test_mean - base) / (d - base) if d != base else math.nan,
                                 gain_constant_weights=m.test_mean - base, gain_growing_weights=d - base,
                                 n_weights_sparse=m.n_weights, n_weights_dense=dense.n_weights.get(m.width, math.nan)))
    return pd.DataFrame(rows)


FIG6_COLUMNS = ["setting", "line", "width", "widening_factor", "baseline", "sparse", "dense", "sparse_train", "fraction"]


def fig_improvement_fraction(runs: pd.DataFrame) -> Plot | None:
    """(sparse - baseline) / (dense - baseline) at each widening factor, with the sparse train accuracy."""
    gains = widening_gains(runs)
    data = gains[gains.dense.notna()][FIG6_COLUMNS].reset_index(drop=True) if len(gains) else gains
    if data.empty:
        return None
    panels = list(data.groupby(["setting", "line"], sort=True))
    fig, axes = _panels(len(panels))
    for ax, ((setting, line), d) in zip(axes, panels):
        ax.plot(d.widening_factor, d.fraction, "k^", ms=7, label="fraction of the dense improvement")
        ax.axhline(1, color="0.7", lw=0.8)
        ax.set_ylabel("(sparse - baseline) / (dense - baseline)")
        _log_axis(ax, d.widening_factor.round(2), "widening factor")
        twin = ax.twinx()
        twin.plot(d.widening_factor, d.sparse_train, "o", color="tab:red", mfc="none", label="sparse train acc.")
        twin.set_ylabel("sparse final train accuracy (%)", color="tab:red")
        ax.axvline(d.widening_factor[d.sparse_train.idxmax()], color="tab:red", ls="--", lw=1)
        ax.set_title(f"{setting}, {line}", fontsize=10)
        ax.legend(handles=ax.get_lines()[:1] + twin.get_lines(), fontsize=7)
    return Plot("improvement_fraction", "Share of the improvement due to width (Figure 6)",
                "Black triangles: (sparse - baseline) / (dense - baseline) best test accuracy at each widening "
                "factor (means over seeds). Red circles: the sparse members' training accuracy; the dashed "
                "line marks its maximum.", fig, data)


GAIN_COLUMNS = ["setting", "line", "width", "widening_factor", "baseline", "gain_constant_weights",
                "gain_growing_weights", "n_weights_sparse", "n_weights_dense"]


def widening_gain_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 12's numbers: per family and wider width, the improvement over the base-width dense baseline
    at a constant weight count (the sparse member) and at a growing one (the dense model of that width)."""
    gains = widening_gains(runs)
    return gains[GAIN_COLUMNS].reset_index(drop=True) if len(gains) else pd.DataFrame(columns=GAIN_COLUMNS)


def fig_widening_gain(runs: pd.DataFrame) -> Plot | None:
    data = widening_gain_data(runs)
    if data.empty or data.gain_growing_weights.isna().all():  # needs the dense-wide members
        return None
    panels = list(data.groupby(["setting", "line"], sort=True))
    fig, axes = _panels(len(panels))
    for ax, ((setting, line), d) in zip(axes, panels):
        ax.plot(d.width, d.gain_constant_weights, "o-", color="C0",
                label=f"sparse: constant weight count ({count(d.n_weights_sparse.iloc[0])})")
        ax.plot(d.width, d.gain_growing_weights, "s--", color="k", mfc="none", label="dense: weights grow with width")
        ax.axhline(0, color="0.7", lw=0.8)
        _log_axis(ax, d.width, "width")
        ax.set_ylabel("test accuracy gain over the baseline (points)")
        ax.set_title(f"{setting}, {line} (baseline {d.baseline.iloc[0]:.2f}%)", fontsize=10)
        ax.legend(fontsize=7)
    return Plot("widening_gain", "Improvement from widening (Figure 12)",
                "Best test accuracy gained over the dense baseline at the base width, by widening at a constant "
                "weight count (sparse members) and with the weight count growing (dense models of the same "
                "width); means over seeds. From the same runs as Table 1.", fig, data)


def fig_bottleneck(runs: pd.DataFrame) -> Plot | None:
    bottleneck = runs[runs.method.isin(BOTTLENECKS)]
    panels = sorted(bottleneck.groupby(["setting", "method"]).groups)
    if not panels:
        return None
    fig, axes = _panels(len(panels))
    data = []
    for ax, (setting, method) in zip(axes, panels):
        here = runs[runs.setting == setting]
        lines = mean_sem(bottleneck[(bottleneck.setting == setting) & (bottleneck.method == method)],
                         ["line", "base_width", "width"])
        dense = mean_sem(here[here.dense_model], ["width"]).set_index("width")
        for i, line, d in _by_budget(lines):
            _errorbar(ax, d.width, d, "test", color=f"C{i}", marker="o",
                      label=f"{line}: {count(d.n_weights.median())} weights")
            base_width = d.base_width.iloc[0]
            if base_width in dense.index:
                ax.axhline(dense.test_mean[base_width], color=f"C{i}", ls="--", lw=1)
                data.append(dense.loc[[base_width]].reset_index().assign(setting=setting, line=f"dense b={base_width}"))
        _log_axis(ax, lines.width, "width")
        ax.set_ylabel("best test accuracy (%)")
        ax.set_title(f"{setting}, {method}", fontsize=10)
        ax.legend(fontsize=7)
        data.append(lines.assign(setting=setting))
    return Plot("bottleneck", "Bottleneck families (Figure 3)",
                "Best test accuracy of linear and non-linear bottleneck families (one line per budget); the "
                "dashed horizontal line is the unmodified dense baseline of the same colour.", fig,
                _front(pd.concat(data), "setting", "line"))


def mlp_grid_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 4's cells: mean test accuracy per (width, last-layer connectivity) of every grid, with the
    categorical positions drawn (x: width in order, y: last-layer connectivity in order) and the colour
    scale's centre, the dense baseline's accuracy (the grid's member at its base width)."""
    grid = runs[runs.last_layer_connectivity.notna()]
    data = []
    for (setting, family), g in sorted(grid.groupby(["setting", "family"])):
        d = mean_sem(g, ["last_layer_connectivity", "width"])
        base_width = g.base_width.iloc[0]
        here = runs[(runs.setting == setting) & runs.dense_model & (runs.width == base_width)]
        d["baseline"] = here.test.mean() if len(here) else math.nan
        d["x"] = d.width.map({w: i for i, w in enumerate(sorted(d.width.unique()))})
        d["y"] = d.last_layer_connectivity.map({c: i for i, c in enumerate(sorted(d.last_layer_connectivity.unique()))})
        data.append(d.assign(setting=setting, family=family))
    return _front(pd.concat(data), "setting", "family") if data else pd.DataFrame()


def fig_mlp_grid(runs: pd.DataFrame) -> Plot | None:
    from matplotlib.colors import TwoSlopeNorm

    data = mlp_grid_data(runs)
    if data.empty:
        return None
    panels = list(data.groupby(["setting", "family"], sort=True))
    fig, axes = _panels(len(panels), width=5.0)
    for ax, ((setting, family), d) in zip(axes, panels):
        cells = d.pivot(index="y", columns="x", values="test_mean").reindex(
            index=range(d.y.max() + 1), columns=range(d.x.max() + 1))  # impossible cells stay empty (white)
        lo, hi, centre = d.test_mean.min(), d.test_mean.max(), d.baseline.iloc[0]
        if pd.isna(centre):
            centre = (lo + hi) / 2
        norm = TwoSlopeNorm(vcenter=centre, vmin=min(lo, centre - 1e-6), vmax=max(hi, centre + 1e-6))
        mesh = ax.pcolormesh(np.ma.masked_invalid(cells.to_numpy(dtype=float)), cmap="RdBu", norm=norm, edgecolors="0.85", linewidth=0.5)
        best = d.loc[d.test_mean.idxmax()]
        ax.scatter([best.x + 0.5], [best.y + 0.5], marker="*", s=260, c="white", edgecolors="k", zorder=3,
                   label=f"best: {best.test_mean:.2f}% (width {best.width:g})")
        fig.colorbar(mesh, ax=ax, label=f"best test acc. (%); white: baseline {centre:.2f}")
        columns = d.drop_duplicates("x").sort_values("x")
        ax.set_xticks(columns.x + 0.5, [f"{c:.2g}\nw{w:g}" for c, w in zip(columns.connectivity, columns.width)],
                      fontsize=7)
        ax.set_xlabel("overall connectivity and width (categories)")
        rows = d.drop_duplicates("y").sort_values("y")
        ax.set_yticks(rows.y + 0.5, [f"{c:g}" for c in rows.last_layer_connectivity], fontsize=7)
        ax.set_ylabel("last-layer connectivity")
        ax.set_title(f"{setting}, {family}", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    return Plot("mlp_grid", "MLP grid: overall vs last-layer connectivity (Figure 4)",
                "Best test accuracy (colour, mean over seeds) of every member of a grid over width (equally "
                "spaced categories) and last-layer connectivity; diverging colours centred on the dense "
                "baseline's accuracy, blue above it, red below; the star marks the best cell, empty cells are "
                "impossible combinations.", fig, data)


def fig_kernel_distance(kernels: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Plot | None:
    if not kernels:
        return None
    data = kernel_overlay(kernels, runs)
    stats = tracking(data)
    fig, axes = _panels(len(kernels), width=5.2)
    for ax, (name, k) in zip(axes, sorted(kernels.items())):
        ax.errorbar(k.width, k.distance_empirical, yerr=k.distance_empirical_se, color="tab:blue", marker="o",
                    capsize=3, label="empirical")
        ax.plot(k.width, k.distance_theorem1, color="0.45", lw=2, label="Theorem 1")
        ax.plot(k.width, k.distance_eq6, color="k", ls="--", label="eq. (6)")
        ax.plot(k.width, k.distance_leading_order, color="k", ls=":", label="Theorem 1, leading order")
        n_star = k.width_eq29.iloc[0]
        if pd.notna(n_star):
            ax.axvline(n_star, color="0.6", ls="-.", lw=1, label=f"eq. (29): n* = {n_star:.0f}")
        ax.set_yscale("log")
        _log_axis(ax, k.width, "width")
        ax.set_ylabel("mean squared kernel distance")
        handles = ax.get_legend_handles_labels()
        lines = data[(data.table == name) & data.line.notna()] if len(data) else data
        if len(lines):
            twin = ax.twinx()
            for i, (line, err) in enumerate(lines.dropna(subset=["test_error_mean"]).groupby("line")):
                s = stats[(stats.table == name) & (stats.line == line)].iloc[0]
                _errorbar(twin, err.width, err, "test_error", color=f"C{6 + i}", marker="x",
                          label=f"test error, {s.setting}: {line} (min at {s.width_min_test_error:g})"
                                f"\nvs empirical: Spearman "
                                f"{s.spearman_empirical:.2f}, Pearson (log) {s.pearson_log_empirical:.2f}")
            twin.set_ylabel("test error of trained models (%)", color="tab:pink")
            extra = twin.get_legend_handles_labels()
            handles = (handles[0] + extra[0], handles[1] + extra[1])
        ax.legend(*handles, fontsize=6)
        keys = kernel_keys(k)
        ax.set_title(f"{name}: {keys['dataset'] or k.inputs.iloc[0]} inputs, {count(keys['budget'])} weights, "
                     f"{keys['distribution']}", fontsize=9)
    return Plot("kernel_distance", "Kernel distance vs width (Figure 7b)",
                "Mean squared distance of the sparse network's GP kernel at initialisation from the infinite-width "
                "kernel: empirical (error bars: standard error), Theorem 1 and its leading order, eq. (6), and "
                "eq. (29)'s optimum width; on the right axis, the test error of trained sparse one-hidden-layer "
                "MLPs of the same family (same dataset, weight budget and allocation rule; a last layer fixed "
                "at connectivity 1 counts as dense-last), with the Spearman and Pearson (on log distance) "
                "correlations across the widths both have (kernel_tracking.csv).",
                fig, data)


def fig_layer_kept(plans: dict[str, pd.DataFrame]) -> Plot | None:
    sparse = {name: p[p.method == "sparse"] for name, p in sorted(plans.items()) if (p.method == "sparse").any()}
    if not sparse:
        return None
    fig, axes = _panels(len(sparse), width=5.4, height=3.8)
    data = []
    for ax, (name, p) in zip(axes, sparse.items()):
        for i, r in enumerate(p.itertuples()):
            llc = getattr(r, "last_layer_connectivity", None)
            label = f"width {r.width}" + ("" if llc is None or pd.isna(llc) else f", last layer {llc:g}")
            ax.plot(range(len(r.layers)), r.layer_kept_fraction, marker="o", ms=3, color=f"C{i % 10}", label=label)
            data.append(pd.DataFrame(dict(plan=name, width=r.width, member=label, layer=list(r.layers),
                                          kept_fraction=list(r.layer_kept_fraction))))
        layers = list(p.iloc[0].layers)
        ax.set_xticks(range(len(layers)), layers, rotation=90 if len(layers) > 6 else 0, fontsize=6)
        if min(min(r) for r in p.layer_kept_fraction) < 0.1:
            ax.set_yscale("log")
            _log_fractions(ax.yaxis)
        ax.set_ylabel("kept fraction of the layer's weights")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, ncols=2)
    return Plot("layer_kept_fraction", "Layer-wise kept fraction (Figure 10)",
                "The fraction of each layer's weights that every sparse member of a family keeps, from the "
                "sweep's plan.", fig, pd.concat(data, ignore_index=True))


def _front(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    return df[[*cols, *(c for c in df.columns if c not in cols)]].reset_index(drop=True)


def figures(res: Results) -> list[Plot]:
    runs = res.runs
    made = [fig_acc_vs_width(runs, "test"), fig_acc_vs_width(runs, "train"), fig_budget_methods(runs),
            fig_acc_vs_connectivity(runs), fig_improvement_fraction(runs), fig_widening_gain(runs),
            fig_bottleneck(runs), fig_mlp_grid(runs),
            fig_kernel_distance(res.kernels, runs), fig_layer_kept(res.plans)]
    return [p for p in made if p is not None]
