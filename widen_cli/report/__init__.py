"""`widen report`: the paper's figures and Table 1 from whatever result tables lie under some folders.

Tables are read by the kind their Parquet metadata names: run summaries, sweep results, sweep plans and
kernel-distance tables, in any mix (load.py). Runs are labelled and pooled over seeds only (runs.py);
each figure is drawn when its data is present (figures.py; widening gains in gains.py, training
curves from the runs' metrics.parquet in curves.py, shared print sizes and axes in axes.py); runs joined to
kernel tables (overlay.py);
Table 1 (table.py); the files (page.py).
"""
from widen_cli.report.figures import Plot, figures
from widen_cli.report.load import Results, load
from widen_cli.report.overlay import kernel_keys, kernel_overlay, tracking
from widen_cli.report.page import write
from widen_cli.report.runs import mean_sem
from widen_cli.report.table import table1, table1_display

__all__ = ["Plot", "Results", "figures", "kernel_keys", "kernel_overlay", "load", "mean_sem", "table1", "table1_display",
           "tracking", "write"]
