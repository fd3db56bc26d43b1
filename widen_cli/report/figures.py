"""The paper's figures, each drawn from labelled runs (see runs.py) when its data is present: accuracy
against width, connectivity and budget here; widening gains in gains.py; training curves in curves.py.

Every point that is a mean over seeds carries its standard error, and each Plot's data holds the numbers
drawn with their sample counts (`runs`). Panels are sized for print (axes.py).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from widen_cli.methods import rows_where
from widen_cli.methods.dense import DENSE
from widen_cli.report.axes import (Plot, band, by_budget, connectivity_axis, errorbar, family_style, front, legend,
                                   log_axis, log_fractions, panels, paper_style, settle, title)
from widen_cli.report.curves import fig_training_curves
from widen_cli.report.gains import fig_improvement_fraction, fig_widening_gain
from widen_cli.report.load import Results
from widen_cli.report.overlay import kernel_keys, kernel_overlay, tracking
from widen_cli.report.runs import count, mean_sem



# ---------------------------------------------------------------- figures (each returns None without its data)

def fig_acc_vs_width(runs: pd.DataFrame, value: str = "test") -> Plot | None:
    settings = sorted(runs[rows_where(runs.method, lambda m: m.widened)].setting.unique())
    if not settings:
        return None
    fig, axes = panels(len(settings))
    data = []
    for ax, setting in zip(axes, settings):
        here = runs[runs.setting == setting]
        lines = mean_sem(here[rows_where(here.method, lambda m: m.widened)], ["line", "width"])
        dense = mean_sem(here[here.dense_model], ["width"]).assign(line=DENSE.name)
        for i, line, d in by_budget(lines):
            errorbar(ax, d.width, d, value, color=f"C{i}", label=f"{line}: {count(d.n_weights.median())} weights",
                      **family_style(line))
        if len(dense):
            errorbar(ax, dense.width, dense, value, color="k", ls="--", marker="s", mfc="none",
                      label="dense (weights grow with width)")
        log_axis(ax, pd.concat([lines.width, dense.width]), "width")
        ax.set_ylabel(f"{'best test' if value == 'test' else 'final train'} accuracy (%)")
        title(ax, setting)
        legend(ax)
        data.append(pd.concat([lines, dense]).assign(setting=setting))
    if value == "test":
        return Plot("test_acc_vs_width", "Test accuracy vs width (Figures 1 and 5)",
                    "Best test accuracy of every sparse family (solid, one line per weight budget), of pruned "
                    "families (dotted triangles: dense at that width, pruned to the budget), of set (dash-dot "
                    "diamonds) and rigl (dashed, triangles down) families (the sparse members' budget and "
                    "connectivity, with a mask learned while training) and of dense models "
                    "whose weight count grows with width (dashed). Mean over seeds, error bars: standard error.", fig, front(pd.concat(data), "setting", "line"))
    return Plot("train_acc_vs_width", "Train accuracy vs width (Figure 13)",
                "Final training accuracy of the same runs, drawn the same way.", fig,
                front(pd.concat(data), "setting", "line"))


def fig_budget_methods(runs: pd.DataFrame) -> Plot | None:
    """One panel per setting and budget with pruned or learned-mask (set, rigl) members: accuracy against
    the width the model had while it was trained (sparse, set, rigl: its width; pruned: its parent's), one
    line per method, the dense baseline at the base width as a dashed line."""
    pruned = runs[rows_where(runs.method, lambda m: m.has_parent or m.learned_mask)]
    groups = sorted(pruned.groupby(["setting", "base_width"]).groups)
    if not groups:
        return None
    fig, axes = panels(len(groups))
    data = []
    for ax, (setting, base_width) in zip(axes, groups):
        here = runs[(runs.setting == setting) & (runs.base_width == base_width)]
        lines = mean_sem(here[rows_where(here.method, lambda m: m.widened)], ["line", "width"])
        base = mean_sem(runs[(runs.setting == setting) & runs.dense_model & (runs.width == base_width)], ["width"])
        for i, line in enumerate(sorted(lines.line.unique())):
            d = lines[lines.line == line]
            errorbar(ax, d.width, d, "test", color=f"C{i}", label=line, **family_style(line))
        base = base.assign(line=f"dense b={base_width}")
        if len(base):
            band(ax, base, "test", color="k", ls="--", lw=1, label=base.line.iloc[0])
        log_axis(ax, pd.concat([lines.width, base.width]), "width during training")
        ax.set_ylabel("best test accuracy (%)")
        title(ax, f"{setting}, {count(here.n_weights.median())} weights")
        legend(ax)
        data += [d.assign(setting=setting, base_width=base_width) for d in (lines, base) if len(d)]
    return Plot("budget_methods", "Width during training at a fixed budget",
                "Best test accuracy of models that all end with the base width's weight count, against the width "
                "they were trained at: sparse members (a random static mask at that width), set and rigl members "
                "(the same initial random mask, dropped and regrown while training), pruned members "
                "(a dense model of that width trained, pruned to the budget and fine-tuned or rewound), and the "
                "dense baseline (dashed). Mean over seeds, error bars: standard error.", fig,
                front(pd.concat(data, ignore_index=True), "setting", "base_width", "line"))


def fig_acc_vs_connectivity(runs: pd.DataFrame) -> Plot | None:
    # A learned mask (set, rigl) keeps the sparse member's connectivity: drawn beside it.
    sparse = runs[rows_where(runs.method, lambda m: m.random_mask or m.learned_mask)]
    settings = sorted(sparse.setting.unique())
    if not settings:
        return None
    fig, axes = panels(len(settings))
    data = []
    for ax, setting in zip(axes, settings):
        lines = mean_sem(sparse[sparse.setting == setting], ["line", "width"])
        for i, line, d in by_budget(lines):
            errorbar(ax, d.connectivity, d, "test", color=f"C{i}", **{"marker": "o", **family_style(line)},
                      label=f"{line}: {count(d.n_weights.median())} weights")
        connectivity_axis(ax, lines.connectivity)
        ax.set_ylabel("best test accuracy (%)")
        title(ax, setting)
        legend(ax)
        data.append(lines.assign(setting=setting))
    return Plot("test_acc_vs_connectivity", "Test accuracy vs connectivity (Figure 11)",
                "The sparse families again (and set and rigl, whose learned masks keep the sparse members' "
                "connectivity), against connectivity on a log axis; the dense baseline is the point at "
                "connectivity 1.", fig, front(pd.concat(data), "setting", "line"))


def fig_bottleneck(runs: pd.DataFrame) -> Plot | None:
    bottleneck = runs[rows_where(runs.method, lambda m: m.bottleneck)]
    groups = sorted(bottleneck.groupby(["setting", "method"]).groups)
    if not groups:
        return None
    fig, axes = panels(len(groups))
    data = []
    for ax, (setting, method) in zip(axes, groups):
        here = runs[runs.setting == setting]
        lines = mean_sem(bottleneck[(bottleneck.setting == setting) & (bottleneck.method == method)],
                         ["line", "base_width", "width"])
        dense = mean_sem(here[here.dense_model], ["width"]).set_index("width")
        for i, line, d in by_budget(lines):
            errorbar(ax, d.width, d, "test", color=f"C{i}", marker="o",
                      label=f"{line}: {count(d.n_weights.median())} weights")
            base_width = d.base_width.iloc[0]
            if base_width in dense.index:
                band(ax, dense.loc[[base_width]], "test", color=f"C{i}", ls="--", lw=1,
                     label=f"dense b={base_width:g} (shaded: standard error)")
                data.append(dense.loc[[base_width]].reset_index().assign(setting=setting, line=f"dense b={base_width}"))
        log_axis(ax, lines.width, "width")
        ax.set_ylabel("best test accuracy (%)")
        title(ax, f"{setting}, {method}")
        legend(ax)
        data.append(lines.assign(setting=setting))
    return Plot("bottleneck", "Bottleneck families (Figure 3)",
                "Best test accuracy of linear and non-linear bottleneck families (one line per budget); the "
                "dashed horizontal line is the unmodified dense baseline of the same colour.", fig,
                front(pd.concat(data), "setting", "line"))


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
    return front(pd.concat(data), "setting", "family") if data else pd.DataFrame()


def fig_mlp_grid(runs: pd.DataFrame) -> Plot | None:
    from matplotlib.colors import TwoSlopeNorm

    data = mlp_grid_data(runs)
    if data.empty:
        return None
    groups = list(data.groupby(["setting", "family"], sort=True))
    fig, axes = panels(len(groups), height=2.8)
    for ax, ((setting, family), d) in zip(axes, groups):
        cells = d.pivot(index="y", columns="x", values="test_mean").reindex(
            index=range(d.y.max() + 1), columns=range(d.x.max() + 1))  # impossible cells stay empty
        lo, hi, centre = d.test_mean.min(), d.test_mean.max(), d.baseline.iloc[0]
        if pd.isna(centre):
            centre = (lo + hi) / 2
        norm = TwoSlopeNorm(vcenter=centre, vmin=min(lo, centre - 1e-6), vmax=max(hi, centre + 1e-6))
        ax.set_facecolor("0.75")  # empty (impossible) cells grey: white is the baseline's colour
        mesh = ax.pcolormesh(np.ma.masked_invalid(cells.to_numpy(dtype=float)), cmap="RdBu", norm=norm, edgecolors="0.85", linewidth=0.5)
        best = d.loc[d.test_mean.idxmax()]
        ax.scatter([best.x + 0.5], [best.y + 0.5], marker="*", s=120, c="white", edgecolors="k", zorder=3,
                   label=f"best: {best.test_mean:.2f}% (width {best.width:g})")
        fig.colorbar(mesh, ax=ax, label=f"best test acc. (%)\nwhite: baseline {centre:.2f}")
        columns = d.drop_duplicates("x").sort_values("x")
        ax.set_xticks(columns.x + 0.5, [f"{c:.2g}\nw{w:g}" for c, w in zip(columns.connectivity, columns.width)])
        ax.set_xlabel("overall connectivity and width (categories)")
        rows = d.drop_duplicates("y").sort_values("y")
        ax.set_yticks(rows.y + 0.5, [f"{c:g}" for c in rows.last_layer_connectivity])
        ax.set_ylabel("last-layer connectivity")
        title(ax, f"{setting}, {family}")
        legend(ax)
    return Plot("mlp_grid", "MLP grid: overall vs last-layer connectivity (Figure 4)",
                "Best test accuracy (colour, mean over seeds) of every member of a grid over width (equally "
                "spaced categories) and last-layer connectivity; diverging colours centred on the dense "
                "baseline's accuracy, blue above it, red below; the star marks the best cell, empty cells are "
                "impossible combinations (grey).", fig, data)


def fig_kernel_distance(kernels: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Plot | None:
    if not kernels:
        return None
    data = kernel_overlay(kernels, runs)
    stats = tracking(data)
    fig, axes = panels(len(kernels), height=3.0)
    for ax, (name, k) in zip(axes, sorted(kernels.items())):
        ax.errorbar(k.width, k.distance_empirical, yerr=k.distance_empirical_se, color="tab:blue", marker="o",
                    label="empirical")
        se = next((c for c in ("distance_theorem1_sem", "distance_theorem1_se") if c in k and k[c].notna().any()), None)
        ax.errorbar(k.width, k.distance_theorem1, yerr=None if se is None else k[se].fillna(0), color="0.45", lw=2,
                    label="Theorem 1")
        ax.plot(k.width, k.distance_eq6, color="k", ls="--", label="eq. (6)")
        ax.plot(k.width, k.distance_leading_order, color="k", ls=":", label="Theorem 1, leading order")
        n_star = k.width_eq29.iloc[0]
        if pd.notna(n_star):
            ax.axvline(n_star, color="0.6", ls="-.", lw=1, label=f"eq. (29): n* = {n_star:.0f}")
        ax.set_yscale("log")
        log_axis(ax, [*k.width, *([round(n_star)] if pd.notna(n_star) else [])], "width")  # n* ticked too
        log_fractions(ax.yaxis)  # plain numbers at 1, 2, 5 x 10^k: one decade would show a single label
        ax.set_ylabel("mean squared kernel distance")
        handles = _kernel_order(*ax.get_legend_handles_labels())
        lines = data[(data.table == name) & data.line.notna()] if len(data) else data
        if len(lines):
            twin = ax.twinx()
            for i, (line, err) in enumerate(lines.dropna(subset=["test_error_mean"]).groupby("line")):
                s = stats[(stats.table == name) & (stats.line == line)].iloc[0]
                errorbar(twin, err.width, err, "test_error", color=f"C{6 + i}", marker="x",
                          label=f"test error, {s.setting}: {line} (min at {s.width_min_test_error:g})"
                                f"\nvs empirical: Spearman "
                                f"{s.spearman_empirical:.2f}, Pearson (log) {s.pearson_log_empirical:.2f}")
            twin.set_ylabel("test error of trained models (%)", color="C6")
            extra = twin.get_legend_handles_labels()
            handles = (handles[0] + extra[0], handles[1] + extra[1])
        legend(ax, *handles)
        keys = kernel_keys(k)
        title(ax, f"{name}: {keys['dataset'] or k.inputs.iloc[0]} inputs, {count(keys['budget'])} weights, "
                     f"{keys['distribution']}")
    return Plot("kernel_distance", "Kernel distance vs width (Figure 7b)",
                "Mean squared distance of the sparse network's GP kernel at initialisation from the infinite-width "
                "kernel: empirical and Theorem 1 (error bars: standard error, Theorem 1's where the table has "
                "distance_theorem1_se), Theorem 1's leading order, eq. (6), and "
                "eq. (29)'s optimum width; on the right axis, the test error of trained sparse one-hidden-layer "
                "MLPs of the same family (same dataset, weight budget and allocation rule; a last layer fixed "
                "at connectivity 1 counts as dense-last), with the Spearman and Pearson (on log distance) "
                "correlations across the widths both have (kernel_tracking.csv).",
                fig, data)


def _kernel_order(handles: list, labels: list) -> tuple[list, list]:
    """The kernel legend in reading order: the measurement, then Theorem 1 and its approximations."""
    order = ("empirical", "Theorem 1", "Theorem 1, leading order", "eq. (6)", "eq. (29)")
    rank = [next((i for i, o in enumerate(order) if label == o or (o == "eq. (29)" and label.startswith(o))),
                 len(order)) for label in labels]
    ranked = sorted(zip(rank, range(len(labels))))
    return [handles[i] for _, i in ranked], [labels[i] for _, i in ranked]


def fig_layer_kept(plans: dict[str, pd.DataFrame]) -> Plot | None:
    sparse = {name: p[rows_where(p.method, lambda m: m.random_mask)] for name, p in sorted(plans.items())
              if rows_where(p.method, lambda m: m.random_mask).any()}
    if not sparse:
        return None
    fig, axes = panels(len(sparse), height=2.8)
    log = min(min(f) for p in sparse.values() for f in p.layer_kept_fraction) < 0.1  # one scale for all panels
    data = []
    for ax, (name, p) in zip(axes, sparse.items()):
        for i, r in enumerate(p.itertuples()):
            llc = getattr(r, "last_layer_connectivity", None)
            label = f"width {r.width}" + ("" if llc is None or pd.isna(llc) else f", last layer {llc:g}")
            ax.plot(range(len(r.layers)), r.layer_kept_fraction, marker="o", ms=2.5, color=f"C{i % 10}", label=label)
            data.append(pd.DataFrame(dict(plan=name, width=r.width, member=label, layer=list(r.layers),
                                          kept_fraction=list(r.layer_kept_fraction))))
        layers = list(p.iloc[0].layers)
        ax.set_xticks(range(len(layers)), layers, rotation=90 if len(layers) > 4 else 0)
        if log:
            ax.set_yscale("log")
            log_fractions(ax.yaxis)
        ax.set_ylabel("kept fraction of the layer's weights")
        title(ax, name)
        legend(ax, ncols=3 if len(p) <= 3 else 2)
    return Plot("layer_kept_fraction", "Layer-wise kept fraction (Figure 10)",
                "The fraction of each layer's weights that every sparse member of a family keeps, from the "
                f"sweep's plan ({'log' if log else 'linear'} scale in every panel).", fig, pd.concat(data, ignore_index=True))


# Every figure's file stem: a report removes these files when it does not draw them again (page.py).
NAMES = ("test_acc_vs_width", "train_acc_vs_width", "budget_methods", "test_acc_vs_connectivity",
         "improvement_fraction", "widening_gain", "bottleneck", "mlp_grid", "kernel_distance", "layer_kept_fraction",
         "training_accuracy", "training_loss")


def figures(res: Results) -> list[Plot]:
    with paper_style():
        return _figures(res)


def _figures(res: Results) -> list[Plot]:
    runs = res.runs
    made = [fig_acc_vs_width(runs, "test"), fig_acc_vs_width(runs, "train"), fig_budget_methods(runs),
            fig_acc_vs_connectivity(runs), fig_improvement_fraction(runs), fig_widening_gain(runs),
            fig_bottleneck(runs), fig_mlp_grid(runs),
            fig_kernel_distance(res.kernels, runs), fig_layer_kept(res.plans),
            *fig_training_curves(runs, res.metrics)]
    made = [p for p in made if p is not None]
    for p in made:
        settle(p.figure)
    return made
