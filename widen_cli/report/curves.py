"""Training curves: every run's per-epoch test and train accuracy and loss (its metrics.parquet), one panel
per family, a line per width, means over seeds with the standard error shaded."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
from matplotlib.ticker import MaxNLocator

from widen_cli import results
from widen_cli.report.axes import Plot, front, legend, log_fractions, panels, title

QUANTITIES = ("test_acc", "train_acc", "test_loss", "train_loss")


def read_metrics(runs: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """The per-epoch rows of every run whose folder holds them, keyed by run_dir (runs without: none; an
    unreadable file is named in one warning and left out)."""
    frames, bad = [], []
    for run_dir in runs.run_dir.unique() if "run_dir" in runs else []:
        path = Path(run_dir) / results.METRICS_FILE
        if not path.is_file():
            continue
        try:
            m = results.read_table(path)
        except (OSError, ValueError, pa.ArrowException):
            bad.append(str(path))
            continue
        if "epoch" in m:
            frames.append(m[["epoch", *(q for q in QUANTITIES if q in m)]].assign(run_dir=run_dir))
    if bad:
        warn(f"training curves leave out {len(bad)} unreadable metrics file(s): {', '.join(bad[:3])}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", *QUANTITIES, "run_dir"])


def curve_data(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per setting, family line, width and epoch: the mean and standard error over seeds of each quantity
    (accuracies in percent) and the runs averaged. Each experiment counts once (its first run)."""
    if runs.empty or metrics.empty:
        return pd.DataFrame()
    keys = ["setting", "line", "width"]
    runs = runs.drop_duplicates([*keys, "experiment"]) if "experiment" in runs else runs
    m = metrics.merge(runs[[*keys, "run_dir"]], on="run_dir")
    if m.empty:
        return pd.DataFrame()
    for q in ("test_acc", "train_acc"):
        m[q] = 100 * m[q]
    g = m.groupby([*keys, "epoch"], sort=True)
    out = g[list(QUANTITIES)].agg(["mean", "sem"])
    out.columns = [f"{q}_{s}" for q, s in out.columns]
    out["runs"] = g.size()
    return front(out.reset_index(), *keys, "epoch")


def _fig_curves(data: pd.DataFrame, kind: str) -> Plot | None:
    families = list(data.groupby(["setting", "line"], sort=True))
    fig, axes = panels(len(families))
    colour = {w: f"C{i % 10}" for i, w in enumerate(sorted(data.width.unique()))}  # one per width in every panel
    for ax, ((setting, line), d) in zip(axes, families):
        few = d.epoch.nunique() <= 10  # markers show single epochs (a pruned member's fine-tuning); many clutter
        for width, w in d.groupby("width", sort=True):
            for split, ls in (("test", "-"), ("train", "--")):
                mean, sem = w[f"{split}_{kind}_mean"], w[f"{split}_{kind}_sem"].fillna(0)
                ax.plot(w.epoch, mean, color=colour[width], ls=ls, marker="o" if few else None, ms=2,
                        label=f"width {width:g}" if split == "test" else None)
                ax.fill_between(w.epoch, mean - sem, mean + sem, color=colour[width], alpha=0.15, lw=0)
        ax.plot([], [], "k-", label="test")
        ax.plot([], [], "k--", label="train")
        ax.set_xlabel("epoch")
        epochs = sorted(d.epoch.unique())
        if len(epochs) <= 8:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)" if kind == "acc" else "loss")
        losses = d[["test_loss_mean", "train_loss_mean"]].to_numpy()
        if kind == "loss" and (losses > 0).all() and losses.max() > 10 * losses.min():  # a decade or more
            ax.set_yscale("log")
            log_fractions(ax.yaxis)
        title(ax, f"{setting}, {line}")
        legend(ax, ncols=3)
    name, what = ("training_accuracy", "accuracy") if kind == "acc" else ("training_loss", "loss")
    return Plot(name, f"Training curves: {what} per epoch",
                f"Test (solid) and train (dashed) {what} per epoch of every family (one panel each, its "
                "base-width member included), a line per width; means over seeds, shaded: standard error. "
                "Train numbers are the training pass's (with augmentation); a pruned member's are its fine-tuning "
                "epochs after pruning.", fig,
                data[["setting", "line", "width", "epoch", f"test_{kind}_mean", f"test_{kind}_sem",
                      f"train_{kind}_mean", f"train_{kind}_sem", "runs"]].reset_index(drop=True))


def fig_training_curves(runs: pd.DataFrame, metrics: pd.DataFrame) -> list[Plot]:
    data = curve_data(runs, metrics)
    return [] if data.empty else [_fig_curves(data, "acc"), _fig_curves(data, "loss")]
