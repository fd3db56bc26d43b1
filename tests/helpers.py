"""What several test modules share: running the CLI in this process or as a real `widen` subprocess,
waiting on such processes, and checks that CPU tests and tests/test_gpu.py run with the device as a
parameter. Fixtures are in conftest.py; the dataset writers in data_files.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from widen_cli.cli import app

runner = CliRunner()
CPU = torch.device("cpu")
BIN = Path(sys.executable).parent
WIDEN = shutil.which("widen", path=str(BIN)) or "widen"
TORCHRUN = shutil.which("torchrun", path=str(BIN)) or "torchrun"
REPO = Path(__file__).resolve().parent.parent
# One thread everywhere, in subprocesses and in this process alike: the thread count decides how
# matrix products split their sums (and so the last bits of every result) on some CPUs (AMD EPYC), so
# resumed and uninterrupted runs are compared bit for bit only at the same count. hardware.setup reads
# WIDEN_THREADS in every run, in-process runs included; setting torch's count here alone is not enough
# (conftest.py's `one_thread` fixture does it in this process).
ENV = {**os.environ, "WIDEN_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def widen(*args):
    """`widen ARGS` in this process (typer's runner): exit_code and output, no subprocess start-up."""
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- real `widen` processes

def _interruptible() -> None:
    """In the child before exec: a test suite started in the background (`make test &`, some CI runners)
    has SIGINT ignored, children inherit that and Python then keeps it ignored, so Ctrl-C tests would
    wait for a run that never sees the signal. Restore the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([WIDEN, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_interruptible)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll until `path` exists (the process must still be running then)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- run folders and refusals

SMALL = ["train", "--dataset", "digits", "--model", "mlp", "--width", 16, "--epochs", 2]


def one_error_line(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    for needle in needles:
        assert needle in res.output, res.output


def write_claim(folder: Path, pid: int, host: str, heartbeat: float) -> None:
    from widen_cli import results

    folder.mkdir(parents=True, exist_ok=True)
    (folder / results.CLAIM_FILE).write_text(json.dumps(dict(pid=pid, host=host, heartbeat=heartbeat)))


def metrics(run: Path) -> pd.DataFrame:
    # wall time is not reproducible; run: the folder's name
    return pd.read_parquet(run / "metrics.parquet").drop(columns=["seconds", "run"])


def sweep_args(widths="8,32", seeds="0,1"):
    return ["sweep-width", "--dataset", "synthetic", "--model", "mlp", "--base-width", 8, "--widths", widths,
            "--seeds", seeds, "--epochs", 2, "dataset.train_size=128", "dataset.test_size=64",
            "dataset.image_size=8", "optim.batch_size=32"]


# ---------------------------------------------------------------- checks run on CPU here and on CUDA in test_gpu.py

DDP_RUN = ["train", "--dataset", "digits", "--model", "mlp", "--method", "sparse", "--width", 32, "--base-width",
           16, "--epochs", 3, "--subset", 1400]


def check_ddp_matches_single_process(tmp_path, device: str):
    run = [*DDP_RUN, "--device", device]
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "widen_cli", *map(str, run),
                           "--out", str(tmp_path), "--name", "ddp"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    single = widen(*run, "--out", tmp_path, "--name", "single")
    assert single.exit_code == 0, single.output

    ddp, one = tmp_path / "ddp", tmp_path / "single"
    # Rank 0 alone wrote and printed: one summary table, one file each, nothing left half-written.
    assert proc.stdout.count("best_test_acc") == 1
    assert sorted(p.name for p in ddp.iterdir()) == ["config.yaml", "masks.pt", "metrics.parquet", "model.pt",
                                                     "summary.parquet"]
    a, b = metrics(ddp), metrics(one)
    assert a.epoch.tolist() == [1, 2, 3] and len(pd.read_parquet(ddp / "summary.parquet")) == 1
    # Same global batches and data order: the accuracy table matches (up to float summation order).
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=2e-3, rtol=1e-3)
    assert a.test_acc.iloc[-1] > 0.5
    masks = [torch.load(r / "masks.pt", weights_only=True) for r in (ddp, one)]
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    weights = [torch.load(r / "model.pt", weights_only=True) for r in (ddp, one)]
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-4, rtol=1e-4)
    for name, mask in masks[0].items():  # masked weights stayed exactly zero on the rank that wrote them
        assert (weights[0][f"{name}.weight"][~mask] == 0).all()


def check_bf16_against_fp32(tmp_path, device: str):
    args = ["train", "--width", 16, "--epochs", 1, "--out", tmp_path, "--device", device]
    for precision in ("fp32", "bf16"):
        res = runner.invoke(app, [*map(str, args), "--precision", precision, "--name", precision])
        assert res.exit_code == 0, res.output
    fp32, bf16 = (pd.read_parquet(tmp_path / p / "metrics.parquet").iloc[0] for p in ("fp32", "bf16"))
    assert bf16.train_loss == pytest.approx(fp32.train_loss, rel=0.05)  # the same training, to bf16 precision
    assert bf16.train_loss != fp32.train_loss  # autocast did run in bf16
