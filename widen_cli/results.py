"""Result tables: one schema per table, every file written to a temporary name and renamed into place."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

# Every artefact's file name, here only.
CONFIG_FILE = "config.yaml"  # a run's resolved config
MASKS_FILE = "masks.pt"  # a sparse run's boolean masks
METRICS_FILE = "metrics.parquet"  # a run's per-epoch rows
CHECKPOINT_FILE = "checkpoint.pt"  # an unfinished run's end-of-epoch state
MODEL_FILE = "model.pt"  # a finished run's weights
SUMMARY_FILE = "summary.parquet"  # a finished run's one row; its presence marks the run done
CLAIM_FILE = "claim.json"  # who is training the run now (claims.py); gone when it stops
ERROR_FILE = "error.txt"  # a failed sweep member's traceback
PLAN_FILE = "plan.parquet"  # a sweep's planned members
SWEEP_FILE = "sweep.yaml"  # a sweep's resolved config
RESULTS_FILE = "results.parquet"  # a sweep's gathered rows
KERNEL_FILE = "kernel_distance.parquet"  # a kernel-distance table
KERNEL_CONFIG_FILE = "kernel.yaml"  # its settings

# One row per epoch. Accuracies are fractions in [0, 1]; seconds is the epoch's wall time.
METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]

# One row per run. status: finished, or diverged (stopped at the first epoch with a non-finite loss).
# distribution, within: the sparse member's (None otherwise); identity: json.dumps(run.identity()).
SUMMARY_COLUMNS = [
    "dataset", "model", "method", "width", "base_width", "n_weights", "n_weights_dense", "connectivity",
    "seed", "epochs", "status", "best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc",
    "wall_seconds", "activation", "distribution", "within", "last_layer_connectivity", "identity",
]


def atomic_write(path: Path, write) -> None:
    """Call write(tmp) on a temporary name beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(df: pd.DataFrame, path: Path, columns: list[str] | None = None) -> None:
    if columns is not None:
        df = df[columns]
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)
