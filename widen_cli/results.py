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

# Every table's columns with their Arrow types, declared once: each file is written with exactly this
# schema, so that all files of one kind read together as one table (DuckDB, polars, pyarrow.dataset),
# whatever values happen to be null in one of them. Columns are nullable unless named `required`.
def _types() -> dict:
    import pyarrow as pa

    def list_of(t):  # items named as Parquet stores them, so that a file's schema reads back equal
        return pa.list_(pa.field("element", t))

    return dict(str=pa.string(), int=pa.int64(), float=pa.float64(), bool=pa.bool_(),
                time=pa.timestamp("us", tz="UTC"), strs=list_of(pa.string()), ints=list_of(pa.int64()),
                floats=list_of(pa.float64()))


def _fields(spec: str, required: tuple[str, ...] = ()) -> list[tuple[str, str, bool]]:
    """'name:type name:type ...' as (name, type, nullable)."""
    return [(n, t, n not in required) for n, t in (item.split(":") for item in spec.split())]


# One row per epoch. Accuracies are fractions in [0, 1]; seconds is the epoch's wall time. val_*: on the
# held-out part of the training split (dataset.val_fraction), null without one. run: the run's folder
# name (a summary's and a results row's `run`), so that the metrics of many runs read together are told apart.
METRICS_FIELDS = _fields("epoch:int lr:float train_loss:float train_acc:float test_loss:float test_acc:float "
                         "val_loss:float val_acc:float seconds:float run:str", required=("epoch",))

# One row per run. status: finished, or diverged (stopped at the first epoch with a non-finite loss).
# distribution and within are the member's (None for dense); identity is json.dumps(identity_of(run),
# sort_keys=True), the whole experiment seed included, so a reader can tell which runs may be pooled.
# budget is the weight count the member's family holds, N(base) (a dense model's own count): with
# dataset and distribution it is what kernel-distance tables are joined on. val_acc: the last epoch's
# accuracy on the held-out part of the training split (dataset.val_fraction). Pruned runs add variant:
# method.prune (None for other methods), parent_run: the dense parent's folder name, total_epochs: the
# training compute in epochs, the parent's plus this run's for a pruned run, else `epochs`.
# run: the run's folder name. Then what produced the run (provenance.py; not part of its identity).
PRUNING_COLUMNS = ["variant", "parent_run", "total_epochs"]
SUMMARY_FIELDS = _fields(
    "dataset:str model:str method:str width:int base_width:int n_weights:int n_weights_dense:int "
    "connectivity:float seed:int epochs:int status:str best_test_acc:float final_test_acc:float "
    "best_train_acc:float final_train_acc:float wall_seconds:float activation:str distribution:str within:str "
    "last_layer_connectivity:float identity:str budget:int val_acc:float variant:str parent_run:str "
    "total_epochs:int run:str", required=("dataset", "model", "method", "width", "base_width", "seed", "status"))
# widen_version, git_commit and git_dirty (null unless widen ran from a git checkout), the Python, PyTorch
# and CUDA (the build's; null for a CPU build) versions; device_used: the device trained on (`auto`
# resolved, cuda with its index) and device_name (the GPU's name; null on CPU); hostname; command: the
# training process's command line; started_at / ended_at (UTC; a resumed run started when its first
# epoch did); train/val/test_samples: the images in each split (after dataset.subset and val_fraction).
PROVENANCE_FIELDS = _fields(
    "widen_version:str git_commit:str git_dirty:bool python_version:str torch_version:str cuda_version:str "
    "device_used:str device_name:str hostname:str command:str started_at:time ended_at:time "
    "train_samples:int val_samples:int test_samples:int")
PROVENANCE_COLUMNS = [n for n, _, _ in PROVENANCE_FIELDS]

# A sweep's results.parquet: each member's summary plus the plan's view of it; status `failed` and the
# error for members that crashed, `interrupted` for those a stopped sweep left unfinished (their
# checkpoints resume them). lr: the run's optim.lr; selected: the one row of each member and seed (over
# the sweep's learning rates) that the report draws (sweep.select_on).
RESULTS_FIELDS = [*SUMMARY_FIELDS, *PROVENANCE_FIELDS,
                  *_fields("widening_factor:float error:str lr:float selected:bool")]

# A sweep's plan.parquet: one row per member; the layer_* columns are lists in the order of `layers`.
# base_width: the member's family (a sweep may hold several budgets); variant: pruned members' method.prune.
PLAN_FIELDS = _fields(
    "width:int widening_factor:float method:str distribution:str within:str last_layer_connectivity:float "
    "connectivity:float n_weights:int n_weights_dense:int budget:int deviation:int bottleneck_ratio:float "
    "layers:strs layer_sizes:ints layer_kept:ints layer_kept_fraction:floats base_width:int variant:str",
    required=("width", "method"))

# kernel_distance.parquet: one row per width. dataset (null for Gaussian inputs), budget and distribution
# mean what they mean in a summary: the report joins the two on them. width_eq29 is the paper's
# closed-form optimum n* (eq. 29, the same in every row), min_eq29 marks the listed width nearest it.
# Schema 1 named the distribution column `allocation` (first-layer = dense-last, uniform then Bernoulli).
KERNEL_FIELDS = _fields(
    "width:int base_width:int n_weights:int input_dim:int outputs:int connectivity:float "
    "first_layer_connectivity:float first_layer_weights:int distribution:str inputs:str reference:str "
    "pairs:int inits:int mask_samples:int seed:int distance_empirical:float distance_empirical_se:float "
    "distance_theorem1:float distance_theorem1_se:float distance_theorem1_bias:float distance_eq6:float "
    "distance_leading_order:float "
    "min_empirical:bool min_theorem1:bool min_eq6:bool min_leading_order:bool dataset:str budget:int "
    "last_layer_weights:int width_eq29:float min_eq29:bool", required=("width",))

METRICS_COLUMNS = [n for n, _, _ in METRICS_FIELDS]
SUMMARY_COLUMNS = [n for n, _, _ in (*SUMMARY_FIELDS, *PROVENANCE_FIELDS)]
RESULTS_COLUMNS = [n for n, _, _ in RESULTS_FIELDS]
PLAN_COLUMNS = [n for n, _, _ in PLAN_FIELDS]
KERNEL_COLUMNS = [n for n, _, _ in KERNEL_FIELDS]


@dataclass(frozen=True)
class Schema:
    fields: list[tuple[str, str, bool]]  # (name, type, nullable)
    version: int  # raise it when the stored format of this kind changes
    optional: tuple[str, ...] = ()  # columns added later that a writer may leave out: written as null

    @property
    def columns(self) -> list[str]:
        return [n for n, _, _ in self.fields]

    def arrow(self):
        """The pyarrow schema every table of this kind is written with."""
        import pyarrow as pa

        types = _types()
        return pa.schema([pa.field(n, types[t], nullable=nullable) for n, t, nullable in self.fields])


# Every table kind. Tables written before kinds existed carry no metadata (see table_kind). The versions
# raised last (metrics, summary, results and plan to 2, kernel to 4) brought declared column types, the
# `run` column of metrics and summaries and the provenance columns; older files are still read.
TABLES = {
    "metrics": Schema(METRICS_FIELDS, 2, ("val_loss", "val_acc", "run")),  # a run's own are never without run
    "summary": Schema([*SUMMARY_FIELDS, *PROVENANCE_FIELDS], 2, ("val_acc", "run", *PROVENANCE_COLUMNS)),
    "results": Schema(RESULTS_FIELDS, 2, ("val_acc", "lr", "selected", *PROVENANCE_COLUMNS)),
    "plan": Schema(PLAN_FIELDS, 2, ("base_width",)),
    # 2: `allocation` renamed `distribution`; 3: distance_theorem1_se (older tables read it as null); 4: types
    "kernel": Schema(KERNEL_FIELDS, 4, ("distance_theorem1_se",)),
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
    except RuntimeError:  # torch.save to a full disk: "unexpected pos ..." from its zip writer
        if _full(tmp.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder refuses even this; the error that matters is raised already
            pass
    sync_folder(path.parent)


def create_new(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists; True if this call created it. The text is written
    and flushed under a temporary name, then hard-linked into place, which fails when the name exists:
    one creator wins, and no reader sees the file half written (claims, sweep.yaml). Where hard links
    are not supported (some network or FUSE file systems), O_EXCL creation, the text in one write."""
    path = Path(path)
    # .new, not temporary()'s .tmp: a leftover is not a stale temporary of the file's writer to remove
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.new")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)
    return True


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
    table = pa.Table.from_arrays([_column(df[f.name], f) for f in schema.arrow()], schema=schema.arrow())
    meta = {KIND_KEY: kind.encode(), VERSION_KEY: str(schema.version).encode()}
    atomic_write(path, lambda tmp: pq.write_table(table.replace_schema_metadata(meta), tmp), check)


def _column(values: pd.Series, field):
    """One column as its declared type (a ValueError or Arrow error if it cannot be: a bug). A column
    with no value at all is nulls of that type, whatever dtype pandas gave it."""
    import pyarrow as pa

    if values.isna().all():
        array = pa.nulls(len(values), field.type)
    else:
        array = pa.array(values, type=field.type, from_pandas=True)
    if not field.nullable and array.null_count:
        raise ValueError(f"column {field.name} must not be null")
    return array


def table_kind(path: Path) -> tuple[str, int] | None:
    """A table's kind and schema version from its metadata (reading only the footer); None when it has
    none: a table written by an older widen, or not by widen at all."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if KIND_KEY not in meta:
        return None
    return meta[KIND_KEY].decode(), int(meta.get(VERSION_KEY, b"0"))


def read_table(path: Path) -> pd.DataFrame:
    """A table as a DataFrame; missing text is None (as Python code tests it), not NaN."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    df = table.to_pandas()
    for f in table.schema:
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            df[f.name] = pd.Series(table.column(f.name).to_pylist(), index=df.index, dtype=object)
    return df


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
