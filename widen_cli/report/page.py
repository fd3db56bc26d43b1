"""The report's files: every figure as PNG and SVG, table.csv and table.md, and index.html."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from widen_cli import results
from widen_cli.errors import UserError
from widen_cli.report.figures import NAMES, Plot, figures
from widen_cli.report.load import Results
from widen_cli.report.overlay import kernel_overlay, tracking
from widen_cli.report.table import markdown, table1, table1_display

DPI = 200  # print resolution: a one-column panel (3.3 inches) is 660 pixels wide
TRACKING_FILE = "kernel_tracking.csv"  # the report's own output, beside table.csv
TABLE_FILES = ("table.csv", "table.md", TRACKING_FILE)


def write(res: Results, out: Path) -> tuple[list[Plot], pd.DataFrame]:
    """Write every figure (PNG + SVG), table.md, table.csv and index.html into `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    plots = figures(res)
    assert {p.name for p in plots} <= set(NAMES), "every figure's name is in figures.NAMES"
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
        results.write_text(markdown(table1_display(table)), out / "table.md")
    tracked = tracking(kernel_overlay(res.kernels, res.runs)) if res.kernels else pd.DataFrame()
    if len(tracked):
        results.write_text(tracked.to_csv(index=False, float_format="%.4g"), out / TRACKING_FILE)
    results.write_text(_html(res, plots, pngs, table, tracked), out / "index.html")
    _remove_stale(out, {f"{p.name}.{fmt}" for p in plots for fmt in ("png", "svg")}
                  | {f for f, made in zip(TABLE_FILES, (len(table), len(table), len(tracked))) if made})
    return plots, table


def _remove_stale(out: Path, written: set[str]) -> None:
    """Remove what an earlier report wrote into `out` and this one did not (a figure whose data is gone
    would otherwise sit beside the new ones): only the report's own file names, never other files."""
    own = {f"{name}.{fmt}" for name in NAMES for fmt in ("png", "svg")} | set(TABLE_FILES)
    for name in sorted(own - written):
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise UserError(f"cannot remove the earlier report's {out / name}: {e.strerror or e}") from None


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0)


def _html(res: Results, plots: list[Plot], pngs: dict[str, bytes], table: pd.DataFrame,
          tracked: pd.DataFrame) -> str:
    esc = html.escape
    again = f" ({res.repeats} repeating another's experiment, counted once)" if res.repeats else ""
    parts = ["<h1>widen report</h1>",
             f"<p>{len(res.runs)} runs{again}, {len(res.plans)} plans, {len(res.kernels)} kernel-distance tables, "
             f"read from {len(res.sources)} Parquet files. Accuracies in percent; with several seeds, means with "
             f"standard errors (error bars, ±). Each figure's data table gives every point's mean, its standard "
             f"error (<code>_sem</code>) and the seeds averaged (<code>runs</code>).</p>"]
    if res.skipped:
        parts.append("<p>Skipped: " + ", ".join(f"<code>{esc(s)}</code>" for s in res.skipped) + "</p>")
    if len(table):
        parts += ["<h2 id='table1'>Table 1: best test accuracy (%) and weight count</h2>",
                  "<p><a href='table.csv'>table.csv</a> · <a href='table.md'>table.md</a></p>",
                  _table_html(table1_display(table))]
    if len(tracked):
        parts += ["<h2 id='kernel_tracking'>How well the kernel distance tracks test error (Figure 7)</h2>",
                  f"<p><a href='{TRACKING_FILE}'>{TRACKING_FILE}</a>: per kernel table and family of trained runs "
                  "(same dataset, budget and allocation rule), Spearman's rank correlation and Pearson's on "
                  "log10 distance against mean test error across the widths both have (n/a below 3), and the "
                  "width minimising each: empirical and Theorem 1 distance, eq. (29)'s optimum, test error.</p>",
                  _table_html(tracked)]
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
