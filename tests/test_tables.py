"""A runs tree of mixed methods, datasets and sweeps reads as one table per kind with the usual tools
(DuckDB over a glob without union_by_name, polars, pyarrow.dataset), and every summary says what produced it."""
import platform
import shlex
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

import widen_cli
from widen_cli import results
from widen_cli.cli import app

runner = CliRunner()
SYNTHETIC = ["--dataset", "synthetic", "--model", "mlp", "--epochs", 1, "dataset.train_size=64",
             "dataset.test_size=32", "dataset.image_size=8", "optim.batch_size=32"]
DIGITS = ["--dataset", "digits", "--model", "mlp", "--epochs", 1, "dataset.val_fraction=0.2"]
FILES = {"metrics": results.METRICS_FILE, "summary": results.SUMMARY_FILE, "results": results.RESULTS_FILE,
         "plan": results.PLAN_FILE, "kernel": results.KERNEL_FILE}


def widen(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Sweeps and single runs whose tables differ in which columns happen to be null: sparse and dense
    (no pruning columns), pruned (no distribution), a bottleneck family with a validation split (val_*),
    kernel tables on Gaussian inputs (no dataset) and on digits."""
    runs = tmp_path_factory.mktemp("runs")
    before = pd.Timestamp.now(tz="UTC")
    widen("sweep-width", *SYNTHETIC, "--base-width", 8, "--widths", "8,16", "--seeds", 0, "--out", runs, "--name", "sp")
    widen("sweep-width", *DIGITS, "--method", "linear-bottleneck", "--base-width", 8, "--factors", "1,2",
          "--seeds", 0, "--out", runs, "--name", "bn")
    widen("train", *SYNTHETIC, "--method", "pruned", "--width", 16, "--base-width", 8, "--out", runs / "single")
    widen("kernel-distance", "--widths", "8,32", "--pairs", 20, "--inits", 1, "--out", runs, "--name", "kg")
    widen("kernel-distance", "--inputs", "digits", "--base-width", 8, "--widths", "8,16", "--pairs", 20, "--inits", 1,
          "--out", runs, "--name", "kd")
    return runs, before, pd.Timestamp.now(tz="UTC")


def files(root: Path, kind: str) -> list[Path]:
    return sorted(root.rglob(FILES[kind]))


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_kind_reads_as_one_table(tree, kind):
    root = tree[0]
    paths = files(root, kind)
    assert len(paths) >= 2, paths
    rows = sum(pq.read_metadata(p).num_rows for p in paths)
    glob = f"{root}/**/{FILES[kind]}"
    assert len(duckdb.sql(f"SELECT * FROM '{glob}'").df()) == rows
    assert pl.scan_parquet(glob).collect().height == rows
    assert ds.dataset([str(p) for p in paths]).to_table().num_rows == rows
    assert len(pd.concat(map(pd.read_parquet, paths))) == rows
    # one declared schema: every file of the kind has exactly the same column types
    schemas = {str(pq.read_schema(p).remove_metadata()) for p in paths}
    assert schemas == {str(results.TABLES[kind].arrow())}


def test_metrics_rows_name_their_run(tree):
    root = tree[0]
    df = duckdb.sql(f"SELECT run, filename FROM read_parquet('{root}/**/{results.METRICS_FILE}', filename=true)").df()
    assert len(df) > 0 and (df.run == df.filename.map(lambda f: Path(f).parent.name)).all()


def test_summaries_say_what_produced_them(tree):
    root, before, after = tree
    df = duckdb.sql(f"SELECT *, filename FROM read_parquet('{root}/**/{results.SUMMARY_FILE}', filename=true)").df()
    assert set(df.dataset) == {"synthetic", "digits"} and len(df) == len(files(root, "summary"))
    package_root = Path(widen_cli.__file__).resolve().parents[1]
    commit = (subprocess.run(["git", "-C", str(package_root), "rev-parse", "HEAD"], capture_output=True, text=True)
              .stdout.strip() if (package_root / ".git").exists() else None)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"  # `device: auto`, resolved
    for row in df.itertuples():
        assert row.run == Path(row.filename).parent.name
        assert row.widen_version == version("widen_cli") and row.python_version == platform.python_version()
        assert row.torch_version == torch.__version__ and row.hostname == socket.gethostname()
        assert (row.cuda_version or None) == torch.version.cuda
        assert row.git_commit == commit and (commit is None) == pd.isna(row.git_dirty)
        assert row.command == shlex.join(sys.argv) and row.device_used == device
        assert before <= row.started_at <= row.ended_at <= after
        assert row.train_samples > 0 and row.test_samples > 0
        if row.dataset == "synthetic":
            assert (row.train_samples, row.test_samples) == (64, 32) and pd.isna(row.val_samples)
        else:  # digits: 1797 images, a fifth of the training split held out for validation
            assert row.train_samples + row.val_samples + row.test_samples == 1797
            assert row.val_samples == pytest.approx(0.2 * (row.train_samples + row.val_samples), abs=1)
        # the run's config.yaml holds the same record, apart from its settings
        record = yaml.safe_load((Path(row.filename).parent / results.CONFIG_FILE).read_text())["provenance"]
        assert list(record) == results.PROVENANCE_COLUMNS
        assert record["git_commit"] == commit and record["device_used"] == device
        assert pd.Timestamp(record["ended_at"]) == row.ended_at
    # a sweep's results carry its members' summaries' provenance
    gathered = pd.read_parquet(root / "sp" / results.RESULTS_FILE).set_index("run")
    members = df[df.filename.str.contains("/sp/")].set_index("run")
    cols = ["hostname", "started_at", "ended_at", "train_samples", "device_used"]
    pd.testing.assert_frame_equal(gathered.loc[members.index, cols], members[cols], check_dtype=False)


def test_provenance_is_not_identity_a_rerun_trains_nothing(tree):
    root = tree[0]
    path, = (p for p in (root / "single").rglob(results.SUMMARY_FILE) if "-pruned-" in p.parent.name)
    summary = pd.read_parquet(path)
    res = widen("train", *SYNTHETIC, "--method", "pruned", "--width", 16, "--base-width", 8, "--out", root / "single")
    assert "is done" in res.output
    pd.testing.assert_frame_equal(pd.read_parquet(path), summary)
