"""What every report figure shares: the Plot record, paper-sized panels, log axes, error bars, legends.

Figures are drawn for print: each panel is one paper column wide (3.3 inches) at 7-point type, legends sit
below their panel (never over the data) and long titles wrap instead of running into the next panel.
Plots use matplotlib's object API (no pyplot), so no display or backend is ever needed.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation
from widen_cli.methods import method_of_line
from matplotlib.ticker import (AutoLocator, FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter,
                               NullLocator)

COLUMN = 3.3  # inches: one column of a two-column paper
PANEL_HEIGHT = 2.4
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
         "legend.fontsize": 6, "lines.markersize": 3.5, "lines.linewidth": 1.1, "errorbar.capsize": 2,
         "legend.frameon": False, "axes.titlepad": 3}


def paper_style():
    return matplotlib.rc_context(STYLE)


@dataclass
class Plot:
    name: str  # file stem: <name>.png and <name>.svg
    title: str
    caption: str
    figure: Figure
    data: pd.DataFrame  # the numbers drawn: means with their standard error (`*_sem`) and sample count (`runs`)


def panels(n: int, width: float = COLUMN, height: float = PANEL_HEIGHT, cols: int = 2) -> tuple[Figure, list]:
    """n panels of one column each, at most `cols` side by side (a two-column figure spans the page)."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def title(ax, text: str, chars: int = 52) -> None:
    """A panel title wrapped to the panel's width, so neighbouring titles never overlap or clip."""
    ax.set_title("\n".join(textwrap.wrap(text, chars)) or text)


def legend(ax, handles=None, labels=None, ncols: int = 1) -> None:
    """The legend below the panel, outside the data (constrained layout makes room for it); settle() moves
    it below the tick labels and axis label once their size is known."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    shown = [(h, label) for h, label in zip(handles, labels) if _drawn(h)]
    handles, labels = [h for h, _ in shown], [label for _, label in shown]
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncols=ncols,
                  bbox_transform=_below(ax, 0.4), borderaxespad=0, handlelength=1.8)


def _drawn(handle) -> bool:
    """Whether a legend entry has something on the axes: not a line whose every point is missing (an entry
    with no data at all is a key, like `dashed: train`, and stays)."""
    line = handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle
    if not isinstance(line, Line2D):
        return True
    y = np.asarray(line.get_ydata(), dtype=float)
    return y.size == 0 or bool(np.isfinite(y).any())


def _below(ax, inches: float):
    return ax.transAxes + ScaledTranslation(0, -inches, ax.figure.dpi_scale_trans)


def settle(fig: Figure) -> Figure:
    """Put every legend just below its panel's axis label, measured on a drawn figure (a fixed offset in
    axes fractions collides with the label on short panels and leaves gaps on tall ones)."""
    for ax in fig.get_axes():  # short panels get only two or three automatic ticks: ask for about six
        if isinstance(ax.yaxis.get_major_locator(), AutoLocator):
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.get_axes():
        leg = ax.get_legend()
        if leg is None:
            continue
        leg.set_visible(False)
        below = ax.get_window_extent(renderer).y0 - ax.get_tightbbox(renderer).y0
        leg.set_visible(True)
        leg.set_bbox_to_anchor((0.5, 0), transform=_below(ax, below / fig.dpi + 0.04))
    return fig


def log_axis(ax, values, label: str, base: float = 2) -> None:
    """A log axis ticked at exactly the values drawn."""
    ax.set_xscale("log", base=base)
    ticks = sorted({float(v) for v in values if pd.notna(v)})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 7 else 0)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def log_fractions(axis) -> None:
    """A log axis for fractions, ticked at 0.01, 0.02, 0.05, 0.1, ... in plain numbers."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
    axis.set_minor_locator(NullLocator())


def connectivity_axis(ax, values, label: str = "connectivity (weights / dense weights at that width)") -> None:
    """A log axis ticked at every connectivity drawn (two significant digits), not only at 0.5 and 1."""
    ax.set_xscale("log")
    ticks = sorted({float(f"{v:.2g}") for v in values if pd.notna(v)})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) > 5:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel(label)


def errorbar(ax, x, d: pd.DataFrame, value: str, **style):
    """Means with standard-error bars (none for a single seed)."""
    return ax.errorbar(x, d[f"{value}_mean"], yerr=d[f"{value}_sem"].fillna(0), **style)


def band(ax, d: pd.DataFrame, value: str, **style) -> None:
    """A horizontal reference at a mean, shaded over its standard error."""
    mean, sem = d[f"{value}_mean"].iloc[0], d[f"{value}_sem"].iloc[0]
    ax.axhline(mean, **style)
    if pd.notna(sem) and sem > 0:
        ax.axhspan(mean - sem, mean + sem, color=style.get("color", "k"), alpha=0.12, lw=0)


def by_budget(lines: pd.DataFrame):
    """Lines ordered by weight count, so colours follow the budget."""
    order = lines.groupby("line").n_weights.median().sort_values(kind="stable").index
    return [(i, line, lines[lines.line == line]) for i, line in enumerate(order)]


def family_style(line: str) -> dict:
    """The style of the method the line's label names (Method.line_style): pruned families dotted with
    triangles, beside the solid sparse ones."""
    return dict(method_of_line(line).line_style)


def front(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    return df[[*cols, *(c for c in df.columns if c not in cols)]].reset_index(drop=True)
