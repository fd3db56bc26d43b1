"""The rich tables the commands print: a run's summary, a sweep's plan and results, a kernel-distance
table and the report's Table 1. Presentation only: every number comes from the tables passed in."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from widen_cli import results
from widen_cli.methods import rows_where


def _columns(title: str, columns: tuple[str, ...], **kw) -> Table:
    """A table of right-aligned number columns under a bold header."""
    table = Table(title=title, header_style="bold", **kw)
    for col in columns:
        table.add_column(col, justify="right")
    return table


def summary(console: Console, s: dict, run_dir: Path) -> None:
    table = Table(title=f"[bold]{run_dir}[/bold]", show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column()
    for key in ("dataset", "model", "method", "width", "base_width", "n_weights", "connectivity", "epochs",
                "status", "best_test_acc", "final_test_acc", "final_train_acc", "wall_seconds"):
        value = s.get(key, "finished") if key == "status" else s[key]  # older summaries have no status
        if key == "method" and s.get("variant"):
            value = f"{value} ({s['variant']}, parent {s['parent_run']}, {s['total_epochs']} epochs in all)"
        text = (f"{value:.2%}" if key.endswith("_acc") else f"{value:,}" if key.startswith("n_weights")
                else f"{value:.1f} s" if key == "wall_seconds" else str(value))
        table.add_row(key, text)
    console.print(table)


def _method(r) -> str:
    """A table row's method, with its pruning variant."""
    variant = getattr(r, "variant", None)
    return f"{r.method} {variant}" if isinstance(variant, str) else r.method


def plan(console: Console, plan, sweep_dir: Path) -> None:
    import pandas as pd

    budgets = plan.base_width.nunique() > 1  # several families: say which budget each member keeps
    table = _columns(f"[bold]plan: {sweep_dir}[/bold]", ("base", "width", "factor", "method", "connectivity",
                                                        "n_weights", "n_weights_dense", "deviation", "bottleneck")
                     [0 if budgets else 1:])
    for r in plan.itertuples():
        method = _method(r) + (f" (last layer {r.last_layer_connectivity:g})"
                                if pd.notna(r.last_layer_connectivity) else "")
        table.add_row(*([str(r.base_width)] if budgets else []), str(r.width), f"{r.widening_factor:.2f}", method,
                      f"{r.connectivity:.4f}",
                      f"{r.n_weights:,}", f"{r.n_weights_dense:,}", f"{r.deviation:+,}",
                      f"{r.bottleneck_ratio:.3f}" if pd.notna(r.bottleneck_ratio) else "")
    console.print(table)
    sparse = plan[rows_where(plan.method, lambda m: m.random_mask)]
    if len(sparse):
        kept = Table(title="kept fraction per layer (sparse members)", header_style="bold")
        kept.add_column("layer")
        for r in sparse.itertuples():
            kept.add_column((f"b={r.base_width} " if budgets else "") + f"w={r.width}" +
                            (f" last={r.last_layer_connectivity:g}"
                                               if pd.notna(r.last_layer_connectivity) else ""), justify="right")
        for i, layer in enumerate(sparse.iloc[0].layers):
            kept.add_row(layer, *(f"{r.layer_kept_fraction[i]:.3f}" for r in sparse.itertuples()))
        console.print(kept)


def sweep_cost(console: Console, c: dict) -> None:
    """One line on what the sweep starts, and a warning when it is far too much for a CPU."""
    from widen_cli.cost import CPU_WARN_FLOPS, flops_text

    compute = ", training compute unknown (no training images to count yet)"
    if c["flops"] is not None:
        images = f"{c['images']:,} training images an epoch"
        if c.get("documented"):
            images += f", from {c['dataset']}'s documented size: its files are not there to count yet"
        compute = f", about {flops_text(c['flops'])} of training compute ({images})"
    seeds = f"{c['seeds']} seed{'s' if c['seeds'] > 1 else ''}"
    lrs = f", {c['lrs']} learning rates" if c.get("lrs", 1) > 1 else ""
    console.print(f"{c['runs']} runs ({c['members']} members, {seeds}{lrs}), {c['epochs']:,} epochs in all{compute}",
                  highlight=False)
    if c["cpu"] and c["flops"] is not None and c["flops"] > CPU_WARN_FLOPS:
        console.print(f"[bold yellow]warning:[/bold yellow] {flops_text(c['flops'])} is days to months of "
                      f"training on a CPU; this sweep is meant for a GPU (--device cuda), or try fewer "
                      f"--epochs, widths or seeds first", highlight=False)


def sweep_results(console: Console, df, sweep_dir: Path) -> None:
    tuned = df.lr.nunique() > 1  # --lrs: show each run's lr, * on the one selected for its member and seed
    table = _columns(f"[bold]results: {sweep_dir / results.RESULTS_FILE}[/bold]",
                     ("method", "base", "width", "seed", "lr", "connectivity", "n_weights", "status", "best_test_acc",
                      "final_train_acc", "val_acc"))

    def pct(x):
        return f"{x:.2%}" if x == x and x is not None else "-"  # NaN: a failed run; None: no holdout

    for r in df.sort_values(["method", "base_width", "width", "seed", "lr"]).itertuples():
        lr = f"{r.lr:g}" + ("*" if tuned and r.selected else "")
        table.add_row(_method(r), str(r.base_width), str(r.width), str(r.seed), lr, f"{r.connectivity:.4f}",
                      f"{r.n_weights:,}", r.status, pct(r.best_test_acc), pct(r.final_train_acc), pct(r.val_acc))
    console.print(table)
    if tuned:
        console.print("* the learning rate selected for the member and seed", highlight=False)


def kernel_table(console: Console, df, run_dir: Path) -> None:
    from rich import box

    from widen_cli.kernels import DISTANCES

    r0 = df.iloc[0]
    table = _columns(f"[bold]{run_dir / results.KERNEL_FILE}[/bold]",
                     ("width", "p1", "p1*d", "empirical", "s.e.", "Theorem 1", "s.e.", "bias", "eq. (6)", "leading"),
                     box=box.SIMPLE_HEAD, pad_edge=False,
                     caption=f"{r0.n_weights:,} weights, d={r0.input_dim}, {r0.outputs} outputs, {r0.inputs} "
                             f"inputs, {r0.distribution} distribution, {r0.reference} reference, "
                             f"{r0.pairs:,} pairs x {r0.inits} inits; * = minimum")
    star = {k: df[f"min_{k}"] & (len(df) > 1) for k in DISTANCES}
    for i, r in enumerate(df.itertuples()):
        mark = {k: "*" if v.iloc[i] else " " for k, v in star.items()}
        table.add_row(
            str(r.width), f"{r.first_layer_connectivity:.2e}", f"{r.first_layer_connectivity * r.input_dim:.3g}",
            f"{r.distance_empirical:.2e}{mark['empirical']}", f"{r.distance_empirical_se:.1e}",
            f"{r.distance_theorem1:.2e}{mark['theorem1']}", f"{r.distance_theorem1_se:.1e}",
            f"{r.distance_theorem1_bias:+.0e}",
            f"{r.distance_eq6:.2e}{mark['eq6']}", f"{r.distance_leading_order:.2e}{mark['leading_order']}")
    console.print(table)
    if len(df) > 1:
        best = ", ".join(f"{k.replace('_', ' ')} {int(df.width[df[f'min_{k}']].iloc[0])}"
                         for k in DISTANCES)
        console.print(f"minimising width: {best}")
    console.print(f"eq. (29), the paper's closed-form optimum for this budget: n* = {r0.width_eq29:.1f} "
                  f"(listed width nearest: {int(df.width[df.min_eq29].iloc[0])})")


def table1(console: Console, shown) -> None:
    """One table per setting; a cell is the accuracy over its weight count, so many widths still fit."""
    for setting, rows in shown.groupby("setting", sort=False):
        rows = rows.drop(columns="setting").loc[:, lambda d: (d != "").any()]
        table = Table(title=f"[bold]{setting}[/bold]: best test accuracy (%) and weights", header_style="bold")
        for col in rows.columns:
            table.add_column(col, justify="left" if col == "row" else "right")
        for row in rows.itertuples(index=False):
            table.add_row(*(cell.replace(" (", "\n(") for cell in row))
        console.print(table)
