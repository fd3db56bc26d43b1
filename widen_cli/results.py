"""Result tables and files: every artefact's name and every table's schema, here only.

Each Parquet table carries its kind and schema version in its metadata (keys `widen.kind` and
`widen.schema_version`), so readers ask the file what it is instead of guessing from its columns.
Every file is written to a temporary name, flushed to disk and renamed into place (the folder flushed
too), so that a kill or a power loss leaves the old file or the new one under the final name, never
an empty or partial one.
"""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Every artefact's file name, here only.
CONFIG_FILE = "config.yaml"  # a run's resolved config
MASKS_FILE = "masks.pt"  # a sparse run's boolean masks
METRICS_FILE = "metrics.parquet"  # a run's per-epoch rows
CHECKPOINT_FILE = "checkpoint.pt"  # an unfinished run's end-of-epoch state
MODEL_FILE = "model.pt"  # a finished run's weights
WEIGHTS_AT_EPOCH_FILE = "weights-epoch{epoch}.pt"  # a dense run's weights at the end of an epoch (0: initial),
# what magnitude-rewind members of its width go back to (weights_at_epoch names them)
SUMMARY_FILE = "summary.parquet"  # a finished run's one row; its presence marks the run done
CLAIM_FILE = "claim.json"  # who is training the run now (claims.py); gone when it stops
ERROR_FILE = "error.txt"  # a failed sweep member's traceback
LOG_FILE = "log.txt"  # a pool or submitit sweep member's per-epoch lines (epochlog.py), appended
PLAN_FILE = "plan.parquet"  # a sweep's planned members
SWEEP_FILE = "sweep.yaml"  # a sweep's resolved config
RESULTS_FILE = "results.parquet"  # a sweep's gathered rows
KERNEL_FILE = "kernel_distance.parquet"  # a kernel-distance table
KERNEL_CONFIG_FILE = "kernel.yaml"  # its settings

# One row per epoch. Accuracies are fractions in [0, 1]; seconds is the epoch's wall time. val_*: on the
# held-out part of the training split (dataset.val_fraction), null without one.
METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc",
                   "seconds"]

# One row per run. status: finished, or diverged (stopped at the first epoch with a non-finite loss).
# distribution and within are the member's (None for dense); identity is json.dumps(run.identity(),
# sort_keys=True), the whole experiment seed included, so a reader can tell which runs may be pooled.
# budget is the weight count the member's family holds, N(base) (a dense model's own count): with
# dataset and distribution it is what kernel-distance tables are joined on. val_acc: the last epoch's
# accuracy on the held-out part of the training split (dataset.val_fraction). Pruned runs add variant:
# method.prune (None for other methods), parent_run: the dense parent's folder name, total_epochs: the
# training compute in epochs, the parent's plus this run's for a pruned run, else `epochs`.
PRUNING_COLUMNS = ["variant", "parent_run", "total_epochs"]
SUMMARY_COLUMNS = [
    "dataset", "model", "method", "width", "base_width", "n_weights", "n_weights_dense", "connectivity",
    "seed", "epochs", "status", "best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc",
    "wall_seconds", "activation", "distribution", "within", "last_layer_connectivity", "identity",
    "budget", "val_acc", *PRUNING_COLUMNS,
]

# A sweep's results.parquet: each member's summary plus the plan's view of it and its folder name;
# status `failed` and the error for members that crashed, `interrupted` for those a stopped sweep left
# unfinished (their checkpoints resume them). lr: the run's optim.lr; selected: the one row of
# each member and seed (over the sweep's learning rates) that the report draws (sweep.select_on).
RESULTS_COLUMNS = [*SUMMARY_COLUMNS, "widening_factor", "run", "error", "lr", "selected"]

# A sweep's plan.parquet: one row per member; the layer_* columns are lists in the order of `layers`.
PLAN_COLUMNS = [
    "width", "widening_factor", "method", "distribution", "within", "last_layer_connectivity", "connectivity",
    "n_weights", "n_weights_dense", "budget", "deviation", "bottleneck_ratio",
    "layers", "layer_sizes", "layer_kept", "layer_kept_fraction",
    "base_width",  # the member's family (a sweep may hold several budgets)
    "variant",  # pruned members: method.prune
]

# kernel_distance.parquet: one row per width. dataset (null for Gaussian inputs), budget and distribution
# mean what they mean in a summary: the report joins the two on them. width_eq29 is the paper's
# closed-form optimum n* (eq. 29, the same in every row), min_eq29 marks the listed width nearest it.
# Schema 1 named the distribution column `allocation` (first-layer = dense-last, uniform then Bernoulli).
KERNEL_COLUMNS = [
    "width", "base_width", "n_weights", "input_dim", "outputs", "connectivity", "first_layer_connectivity",
    "first_layer_weights", "distribution", "inputs", "reference", "pairs", "inits", "mask_samples", "seed",
    "distance_empirical", "distance_empirical_se", "distance_theorem1", "distance_theorem1_se",
    "distance_theorem1_bias",
    "distance_eq6", "distance_leading_order",
    "min_empirical", "min_theorem1", "min_eq6", "min_leading_order",
    "dataset", "budget", "last_layer_weights", "width_eq29", "min_eq29",
]


@dataclass(frozen=True)
class Schema:
    columns: list[str]
    version: int  # raise it when the columns of this kind change (not for optional columns appended)
    optional: tuple[str, ...] = ()  # columns added later that a writer may leave out: written as null


# Every table kind. Tables written before kinds existed carry no metadata (see table_kind).
TABLES = {
    "metrics": Schema(METRICS_COLUMNS, 1, ("val_loss", "val_acc")),
    "summary": Schema(SUMMARY_COLUMNS, 1, ("val_acc",)),  # budget appended: older readers pass over it
    "results": Schema(RESULTS_COLUMNS, 1, ("val_acc", "lr", "selected")),
    "plan": Schema(PLAN_COLUMNS, 1, ("base_width",)),
    # 2: `allocation` renamed `distribution`; 3: distance_theorem1_se (older tables read it as null)
    "kernel": Schema(KERNEL_COLUMNS, 3, ("distance_theorem1_se",)),
}
KIND_KEY = b"widen.kind"
VERSION_KEY = b"widen.schema_version"


def weights_at_epoch(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / WEIGHTS_AT_EPOCH_FILE.format(epoch=epoch)


def temporary(path: Path) -> Path:
    """The temporary name `path` is written under: hidden, ending .tmp, naming the writer's host and
    pid (so that a leftover can be told from a live writer's: see stale_temporaries)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where the platform cannot."""
    try:
        _fsync(folder, getattr(os, "O_DIRECTORY", 0) | os.O_RDONLY)
    except OSError:  # Windows, some network file systems: folders cannot be opened or synced
        pass


def atomic_write(path: Path, write, check=None) -> None:
    """Call write(tmp) on a temporary name beside `path`, flush it to disk, rename it into place and
    flush the folder: after a power loss the old file or the new one is there, never an empty one.
    check(), if given, runs just before the rename and may raise to leave `path` as it is (a run's
    writer that lost its claim: lifecycle.py)."""
    path = Path(path)
    tmp = temporary(path)
    try:
        write(tmp)
        _fsync(tmp)
        if check is not None:
            check()
        os.replace(tmp, path)
    except OSError as e:  # name the file meant (pyarrow and torch name none, others the temporary one)
        if e.errno is None or e.filename not in (None, str(tmp)):
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
    except RuntimeError as e:  # torch.save to a full disk: "unexpected pos ..." from its zip writer
        if _full(tmp.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder refuses even this; the error that matters is raised already
            pass
    sync_folder(path.parent)


def _full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def stale_temporaries(folder: Path, older_than: float) -> list[Path]:
    """Temporaries in `folder` left by writers that are gone: from this host, those whose pid is dead;
    from another host (or named as older versions did), those unchanged for `older_than` seconds."""
    import time

    stale = []
    for tmp in Path(folder).glob(".*.tmp"):
        stem, _, pid = tmp.name[:-len(".tmp")].rpartition(".")
        if stem.endswith(f".{socket.gethostname()}") and pid.isdigit():
            if not pid_alive(int(pid)):
                stale.append(tmp)
            continue
        try:
            if time.time() - tmp.stat().st_mtime > older_than:
                stale.append(tmp)
        except FileNotFoundError:
            pass
    return stale


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid is running (what temporaries and claims record)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def write_table(df: pd.DataFrame, path: Path, kind: str, check=None) -> None:
    """Write a DataFrame as a table of `kind`: exactly its columns, in order (a missing one is a bug:
    KeyError, unless the schema calls it optional), with the kind and schema version in the Parquet metadata.
    check: as for atomic_write."""
    import pyarrow as pa  # here, not at import time: most commands never write a table
    import pyarrow.parquet as pq

    schema = TABLES[kind]
    missing = [c for c in schema.optional if c not in df]
    if missing:
        df = df.assign(**{c: None for c in missing})
    table = pa.Table.from_pandas(df[schema.columns], preserve_index=False)
    meta = {**(table.schema.metadata or {}), KIND_KEY: kind.encode(), VERSION_KEY: str(schema.version).encode()}
    atomic_write(path, lambda tmp: pq.write_table(table.replace_schema_metadata(meta), tmp), check)


def table_kind(path: Path) -> tuple[str, int] | None:
    """A table's kind and schema version from its metadata (reading only the footer); None when it has
    none: a table written by an older widen, or not by widen at all."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if KIND_KEY not in meta:
        return None
    return meta[KIND_KEY].decode(), int(meta.get(VERSION_KEY, b"0"))


def read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path)


def read_finished(path: Path, kind: str, run_dir: Path) -> pd.DataFrame:
    """A finished run's summary or metrics table; a file that cannot be read (truncated, garbled, empty
    or missing) is a UserError naming it and saying how to get it back."""
    from widen_cli.errors import MemberError

    try:
        df = read_table(path)
        problem = "it holds no rows" if df.empty else None
    except FileNotFoundError:
        problem = "it is missing"
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        text = str(e).strip().splitlines()
        problem = (text[0] if text else type(e).__name__)[:200]
    if problem is None:
        return df
    raise MemberError(f"cannot read {kind} table {path} of a finished run ({problem}); delete the run folder "
                    f"{run_dir} to train it again")


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
