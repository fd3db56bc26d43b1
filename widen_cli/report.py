"""`widen report`: the paper's figures and Table 1 from whatever result tables lie under some folders.

Tables are recognised by their columns, not their file names: run summaries, sweep results, sweep
plans and kernel-distance tables, in any mix. Each figure is drawn when its data is present. Plots use
matplotlib's object API (no pyplot), so no display or backend is ever needed.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from widen_cli import results
from widen_cli.errors import UserError

# The columns each kind of table must have (more are fine), tried in this order.
# `status` is optional: tables written before statuses existed are all finished runs.
_SUMMARY = [c for c in results.SUMMARY_COLUMNS if c != "status"]
KINDS = {
    "results": [*_SUMMARY, "run"],  # a sweep's results.parquet
    "summary": _SUMMARY,  # one run's summary.parquet
    "plan": ["width", "widening_factor", "method", "connectivity", "layers", "layer_kept_fraction"],
    "kernel": ["width", "base_width", "distance_empirical", "distance_empirical_se", "distance_theorem1",
               "distance_eq6", "distance_leading_order"],
    "metrics": results.METRICS_COLUMNS,  # per-epoch curves: known, not drawn
}
BOTTLENECKS = ("linear-bottleneck", "nonlinear-bottleneck")
DPI = 110


@dataclass
class Results:
    """Everything found: runs (one row each, with the family it belongs to), plans and kernel tables by folder."""

    runs: pd.DataFrame
    plans: dict[str, pd.DataFrame] = field(default_factory=dict)
    kernels: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class Plot:
    name: str  # file stem: <name>.png and <name>.svg
    title: str
    caption: str
    figure: Figure
    data: pd.DataFrame  # the numbers drawn


# ---------------------------------------------------------------- loading

def find_tables(paths: list[Path]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"no such file or folder: {p}")
        files += [p] if p.is_file() else sorted(p.rglob("*.parquet"))
    return list(dict.fromkeys(f.resolve() for f in files))  # nested or repeated folders are read once


def kind_of(path: Path) -> str | None:
    names = set(pq.read_schema(path).names)
    return next((kind for kind, cols in KINDS.items() if names >= set(cols)), None)


def load(paths: list[Path], warn: Callable[[str], None]) -> Results:
    files = find_tables(paths)
    where = ", ".join(map(str, paths))
    if not files:
        raise UserError(f"no Parquet files under {where}")
    runs, plans, kernels, sources, skipped = [], {}, {}, [], []
    for path in files:
        try:
            kind = kind_of(path)
            df = results.read_table(path) if kind not in (None, "metrics") else None
        except (OSError, ValueError, pa.ArrowException) as e:
            warn(f"skipping {path}: not a readable Parquet table ({str(e).splitlines()[0]})")
            skipped.append(str(path))
            continue
        if kind is None:
            warn(f"skipping {path}: unknown columns (not a summary, results, plan or kernel-distance table)")
            skipped.append(str(path))
            continue
        if kind == "metrics":
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
            runs.append(df)
    if not (runs or plans or kernels):
        raise UserError(f"none of the {len(files)} Parquet files under {where} is a result table widen report "
                        f"reads (summary, results, plan, kernel distance)")
    columns = [*KINDS["results"], "run_dir", "from_results"]
    table = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=columns)
    # A sweep member appears in the sweep's results.parquet and as its own summary.parquet: count it once.
    table = table.sort_values("from_results", ascending=False, kind="stable").drop_duplicates("run_dir")
    if "status" in table:  # failed sweep members have no accuracies; diverged runs keep theirs
        failed = table.status.eq("failed")
        if failed.any():
            warn(f"leaving out {failed.sum()} failed run(s): " + ", ".join(sorted(map(str, table.run_dir[failed]))))
        table = table[~failed]
    return Results(_with_families(table.reset_index(drop=True)), plans, kernels, sources, skipped)


def _unique(name: str, taken: dict) -> str:
    label, i = name, 2
    while label in taken:
        label, i = f"{name} ({i})", i + 1
    return label


def _config(run_dir: Path) -> dict:
    """The run's config.yaml, else its sweep's sweep.yaml: what the summary does not say (activation, within)."""
    for path in (run_dir / results.CONFIG_FILE, run_dir.parent / results.SWEEP_FILE):
        try:
            return yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
    return {}


def _with_families(runs: pd.DataFrame) -> pd.DataFrame:
    """Label each run with its setting (panel), family, line (family and last-layer connectivity) and whether
    it is a plain dense model (dense runs and the sparse / non-linear members at their base width)."""
    runs = runs.copy()
    configs = [_config(Path(d)) for d in runs.run_dir]

    def from_config(column: str, section: str, key: str, default=None) -> pd.Series:
        given = runs[column] if column in runs else pd.Series(None, index=runs.index, dtype=object)
        read = pd.Series([(c.get(section) or {}).get(key, default) for c in configs], index=runs.index, dtype=object)
        return given.astype(object).where(given.notna(), read)

    dense = runs.method == "dense"
    runs["distribution"] = from_config("distribution", "method", "distribution").where(~dense, "").fillna("")
    runs["within"] = from_config("within", "method", "within", "all").where(~dense, "").fillna("")
    llc = pd.to_numeric(from_config("last_layer_connectivity", "method", "last_layer_connectivity"), errors="coerce")
    runs["last_layer_connectivity"] = llc.where(~dense)
    runs["activation"] = from_config("activation", "model", "activation", "relu").where(runs.model == "mlp", "")
    factor = runs["widening_factor"] if "widening_factor" in runs else pd.Series(math.nan, index=runs.index)
    runs["widening_factor"] = pd.to_numeric(factor, errors="coerce").fillna(runs.width / runs.base_width)
    runs["setting"] = runs.dataset + " " + runs.model + runs.activation.map(lambda a: "" if a in ("", "relu")
                                                                             else f" {a}")
    runs["family"] = [_family(r) for r in runs.itertuples()]
    runs["line"] = runs.family + runs.last_layer_connectivity.map(lambda c: "" if pd.isna(c) else f", last layer {c:g}")
    runs["dense_model"] = dense | ((runs.method != "linear-bottleneck") & (runs.width == runs.base_width)
                                   & (runs.connectivity >= 1 - 1e-9))
    runs["test"] = 100 * runs.best_test_acc
    runs["train"] = 100 * runs.final_train_acc
    return runs


def _family(r) -> str:
    if r.method == "dense":
        return "dense"
    label = f"{r.method} b={r.base_width}"
    if r.method == "sparse" and r.distribution not in ("", "staggered"):
        label += f" {r.distribution}"
    if r.method == "sparse" and r.within == "io":
        label += " io"
    return label


# ---------------------------------------------------------------- shared helpers

def mean_sem(df: pd.DataFrame, keys: list[str], values=("test", "train")) -> pd.DataFrame:
    """Mean and standard error over seeds (and repeated runs) of every group; sem is NaN for one run."""
    g = df.groupby(keys, dropna=False, sort=True)
    out = g[list(values)].agg(["mean", "sem"])
    out.columns = [f"{v}_{s}" for v, s in out.columns]
    out[["n_weights", "connectivity", "widening_factor"]] = g[["n_weights", "connectivity", "widening_factor"]].mean()
    out["runs"] = g.size()
    return out.reset_index()


def count(n: float) -> str:
    """A weight count the way the paper's legends write it: 592, 18k, 11.7M."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,.0f}"


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

def fig_acc_vs_width(runs: pd.DataFrame, value: str = "test") -> Plot | None:
    settings = sorted(runs[runs.method == "sparse"].setting.unique())
    if not settings:
        return None
    fig, axes = _panels(len(settings))
    data = []
    for ax, setting in zip(axes, settings):
        here = runs[runs.setting == setting]
        lines = mean_sem(here[here.method == "sparse"], ["line", "width"])
        dense = mean_sem(here[here.dense_model], ["width"]).assign(line="dense")
        for i, line, d in _by_budget(lines):
            _errorbar(ax, d.width, d, value, color=f"C{i}", marker="o",
                      label=f"{line}: {count(d.n_weights.median())} weights")
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
                    "Best test accuracy of every sparse family (solid, one line per weight budget) and of dense "
                    "models whose weight count grows with width (dashed). Mean over seeds, error bars: standard "
                    "error.", fig, _front(pd.concat(data), "setting", "line"))
    return Plot("train_acc_vs_width", "Train accuracy vs width (Figure 13)",
                "Final training accuracy of the same runs, drawn the same way.", fig,
                _front(pd.concat(data), "setting", "line"))


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


def fig_improvement_fraction(runs: pd.DataFrame) -> Plot | None:
    """(sparse - baseline) / (dense - baseline) at each widening factor, with the sparse train accuracy."""
    rows = []
    for setting, here in runs.groupby("setting"):
        dense = mean_sem(here[here.dense_model], ["width"]).set_index("width")
        sparse = here[(here.method == "sparse") & here.last_layer_connectivity.isna()]
        for (line, base_width), members in sparse.groupby(["line", "base_width"]):
            if base_width not in dense.index:
                continue
            base = dense.test_mean[base_width]
            for m in mean_sem(members[members.width > base_width], ["width"]).itertuples():
                if m.width in dense.index:
                    d = dense.test_mean[m.width]
                    rows.append(dict(setting=setting, line=line, width=m.width, widening_factor=m.widening_factor,
                                     baseline=base, sparse=m.test_mean, dense=d, sparse_train=m.train_mean,
                                     fraction=(m.test_mean - base) / (d - base) if d != base else math.nan))
    if not rows:
        return None
    data = pd.DataFrame(rows)
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


def fig_mlp_grid(runs: pd.DataFrame) -> Plot | None:
    grid = runs[runs.last_layer_connectivity.notna()]
    panels = sorted(grid.groupby(["setting", "family"]).groups)
    if not panels:
        return None
    fig, axes = _panels(len(panels), width=5.0)
    data = []
    for ax, (setting, family) in zip(axes, panels):
        d = mean_sem(grid[(grid.setting == setting) & (grid.family == family)],
                     ["last_layer_connectivity", "width"])
        points = ax.scatter(d.connectivity, d.last_layer_connectivity, c=d.test_mean, cmap="viridis", marker="s",
                            s=140, edgecolors="0.3")
        best = d.loc[d.test_mean.idxmax()]
        ax.scatter([best.connectivity], [best.last_layer_connectivity], marker="*", s=260, c="white",
                   edgecolors="k", zorder=3, label=f"best: {best.test_mean:.2f}% (width {best.width:g})")
        fig.colorbar(points, ax=ax, label="best test accuracy (%)")
        _connectivity_axis(ax, "overall connectivity")
        ax.set_ylabel("last-layer connectivity")
        ax.set_title(f"{setting}, {family}", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
        data.append(d.assign(setting=setting, family=family))
    return Plot("mlp_grid", "MLP grid: overall vs last-layer connectivity (Figure 4)",
                "Best test accuracy (colour, mean over seeds) of every member of a grid over width and last-layer "
                "connectivity; the star marks the best cell.", fig, _front(pd.concat(data), "setting", "family"))


def fig_kernel_distance(kernels: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Plot | None:
    if not kernels:
        return None
    fig, axes = _panels(len(kernels), width=5.2)
    data = []
    for ax, (name, k) in zip(axes, sorted(kernels.items())):
        ax.errorbar(k.width, k.distance_empirical, yerr=k.distance_empirical_se, color="tab:blue", marker="o",
                    capsize=3, label="empirical")
        ax.plot(k.width, k.distance_theorem1, color="0.45", lw=2, label="Theorem 1")
        ax.plot(k.width, k.distance_eq6, color="k", ls="--", label="eq. (6)")
        ax.plot(k.width, k.distance_leading_order, color="k", ls=":", label="Theorem 1, leading order")
        ax.set_yscale("log")
        _log_axis(ax, k.width, "width")
        ax.set_ylabel("mean squared kernel distance")
        base_width = k.base_width.iloc[0]
        trained = runs[(runs.model == "mlp") & (runs.method == "sparse") & (runs.base_width == base_width)
                       & runs.last_layer_connectivity.isna()] if pd.notna(base_width) else runs.iloc[:0]
        handles = ax.get_legend_handles_labels()
        table = k.copy()
        if len(trained):
            twin = ax.twinx()
            for i, (setting, t) in enumerate(trained.groupby("setting")):
                err = mean_sem(t.assign(test_error=100 - t.test), ["width"], ("test_error",))
                _errorbar(twin, err.width, err, "test_error", color=f"C{6 + i}", marker="x",
                          label=f"test error, {setting}")
                table = table.merge(err[["width", "test_error_mean", "test_error_sem"]].rename(
                    columns=lambda c: c if c == "width" else f"{c} ({setting})"), on="width", how="left")
            twin.set_ylabel("test error of trained models (%)", color="tab:pink")
            extra = twin.get_legend_handles_labels()
            handles = (handles[0] + extra[0], handles[1] + extra[1])
        ax.legend(*handles, fontsize=7)
        details = ", ".join(f"{c} {k[c].iloc[0]}" for c in ("n_weights", "allocation", "inputs") if c in k)
        head = f"{name}: base width {base_width}" if pd.notna(base_width) else name
        ax.set_title(head + (f"\n{details}" if details else ""), fontsize=9)
        data.append(table.assign(table=name))
    return Plot("kernel_distance", "Kernel distance vs width (Figure 7b)",
                "Mean squared distance of the sparse network's GP kernel at initialisation from the infinite-width "
                "kernel: empirical (error bars: standard error), Theorem 1 and its leading order, eq. (6); "
                "test error of trained sparse MLPs with the same base width on the right axis when given.",
                fig, _front(pd.concat(data), "table"))


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
    made = [fig_acc_vs_width(runs, "test"), fig_acc_vs_width(runs, "train"), fig_acc_vs_connectivity(runs),
            fig_improvement_fraction(runs), fig_bottleneck(runs), fig_mlp_grid(runs),
            fig_kernel_distance(res.kernels, runs), fig_layer_kept(res.plans)]
    return [p for p in made if p is not None]


# ---------------------------------------------------------------- Table 1

def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Best test accuracy (%, mean over seeds) and weight count per row and width, as the paper's Table 1.

    Rows per setting: `dense` (every plain dense model, the families' baselines included), then one row per
    family and last-layer connectivity with its wider members. Columns: setting, row, then test_acc_w<W>
    and n_weights_w<W> for every width.
    """
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(row=runs.line.where(~runs.dense_model, "dense"))
    cells = mean_sem(runs, ["setting", "row", "width"], ("test",))
    order = cells.groupby(["setting", "row"]).n_weights.min().reset_index()
    order["rank"] = (order.row != "dense").astype(int)
    order = order.sort_values(["setting", "rank", "n_weights", "row"])[["setting", "row"]]
    wide = cells.pivot(index=["setting", "row"], columns="width", values=["test_mean", "n_weights"])
    columns = [(v, w) for w in sorted(cells.width.unique()) for v in ("test_mean", "n_weights")]
    wide = wide[columns]
    wide.columns = [f"{'test_acc' if v == 'test_mean' else v}_w{w}" for v, w in columns]
    for col in wide.columns[1::2]:
        wide[col] = wide[col].round().astype("Int64")
    return order.merge(wide.reset_index(), on=["setting", "row"])


def table1_display(table: pd.DataFrame) -> pd.DataFrame:
    """The same table with one text cell per width: accuracy (weights), e.g. `70.02 (11.7M)`."""
    widths = [int(c.removeprefix("test_acc_w")) for c in table.columns if c.startswith("test_acc_w")]
    shown = table[["setting", "row"]].copy()
    for w in widths:
        shown[str(w)] = [f"{a:.2f} ({count(n)})" if pd.notna(a) else ""
                         for a, n in zip(table[f"test_acc_w{w}"], table[f"n_weights_w{w}"])]
    return shown


def _markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- output

def write(res: Results, out: Path) -> tuple[list[Plot], pd.DataFrame]:
    """Write every figure (PNG + SVG), table.md, table.csv and index.html into `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    plots = figures(res)
    pngs = {}
    for plot in plots:
        for fmt in ("png", "svg"):
            buf = io.BytesIO()
            plot.figure.savefig(buf, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
            results.write_bytes(buf.getvalue(), out / f"{plot.name}.{fmt}")
            if fmt == "png":
                pngs[plot.name] = buf.getvalue()
    table = table1(res.runs)
    if len(table):
        results.write_text(table.to_csv(index=False, float_format="%.4f"), out / "table.csv")
        results.write_text(_markdown(table1_display(table)), out / "table.md")
    results.write_text(_html(res, plots, pngs, table), out / "index.html")
    return plots, table


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0)


def _html(res: Results, plots: list[Plot], pngs: dict[str, bytes], table: pd.DataFrame) -> str:
    esc = html.escape
    parts = ["<h1>widen report</h1>",
             f"<p>{len(res.runs)} runs, {len(res.plans)} plans, {len(res.kernels)} kernel-distance tables, read from "
             f"{len(res.sources)} Parquet files. Accuracies in percent; with several seeds, means with standard "
             f"errors.</p>"]
    if res.skipped:
        parts.append("<p>Skipped: " + ", ".join(f"<code>{esc(s)}</code>" for s in res.skipped) + "</p>")
    if len(table):
        parts += ["<h2 id='table1'>Table 1: best test accuracy (%) and weight count</h2>",
                  "<p><a href='table.csv'>table.csv</a> · <a href='table.md'>table.md</a></p>",
                  _table_html(table1_display(table))]
    for p in plots:
        src = "data:image/png;base64," + base64.b64encode(pngs[p.name]).decode()
        parts += [f"<h2 id='{p.name}'>{esc(p.title)}</h2>",
                  f"<figure><img src='{src}' alt='{p.name}.png' title='{p.name}.png'>"
                  f"<figcaption><a href='{p.name}.png'>{p.name}.png</a> · <a href='{p.name}.svg'>{p.name}.svg</a>: "
                  f"{esc(p.caption)}</figcaption></figure>",
                  f"<details><summary>data behind {p.name}.png</summary>{_table_html(p.data)}</details>"]
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
             "text-align:right}figcaption{color:#444;font-size:14px}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>widen report</title><style>{style}</style>"
            f"</head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
