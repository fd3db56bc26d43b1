"""The pool launcher stops on SIGTERM and Ctrl-C within an epoch and gathers what it has, its workers die
with it (even after SIGKILL), and it splits the CPU threads this process may use; runs whose output is
not a terminal log one plain line per epoch. Processes are real `widen` subprocesses and real signals;
the sweep's processes are found through /proc by their parent's pid (other tests run Python too)."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from helpers import ENV, WIDEN, _interruptible
from widen_cli import checkpoint, epochlog, results

# 3 members on 2 workers: two train, one waits in the queue. Far more epochs than a test waits for.
EPOCHS = 5000
SWEEP = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 16, "--widths", "16,32",
         "--epochs", EPOCHS, "--launcher", "pool", "--jobs", 2]
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  train_loss [\d.]+  train_acc [\d.]+  test_loss [\d.]+  test_acc ([\d.]+)"
                        r"  [\d.]+ s/epoch  eta \d\d:\d\d:\d\d$")


def start(*args, env=ENV, preexec_fn=_interruptible, **kw) -> subprocess.Popen:
    return subprocess.Popen([WIDEN, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec_fn, **kw)


def stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process from /proc, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def children(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of each process whose parent is `pid`."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (s := stat(int(entry.name))) is not None and s[1] == pid:
            out.add((int(entry.name), s[2]))
    return out


def alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those still running: the same pid and start time (not a reused pid), not a zombie."""
    return {(pid, t) for pid, t in processes if (s := stat(pid)) is not None and s[2] == t and s[0] != "Z"}


def none_left(processes: set[tuple[int, int]], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(processes)


def training(sweep: Path, proc: subprocess.Popen, n: int = 2, timeout: float = 300) -> set[tuple[int, int]]:
    """Once `n` members have saved an epoch: the sweep's child processes (its workers among them)."""
    deadline = time.monotonic() + timeout
    while len(list(sweep.glob("*/" + checkpoint.FILENAME))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.02)
    kids = children(proc.pid)
    assert len(kids) >= 2, kids  # the two workers (and multiprocessing's resource tracker)
    return kids


def epoch_lines(path: Path) -> list[tuple[int, int, float]]:
    return [(int(m[1]), int(m[2]), float(m[3])) for m in map(EPOCH_LINE.match, path.read_text().splitlines()) if m]


@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C to its process group"])
def test_signal_stops_the_pool_gathers_and_resumes(tmp_path, how):
    sweep = tmp_path / "s"
    proc = start(*SWEEP, "--out", tmp_path, "--name", "s", start_new_session=True)
    kids = training(sweep, proc)
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
    else:  # what a terminal does: SIGINT to every process in the foreground group, workers included
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command again to resume" in stderr
    assert none_left(kids), alive(kids)
    assert not list(sweep.glob("*/" + results.CLAIM_FILE))  # released, not left for a stale-claim takeover

    df = pd.read_parquet(sweep / results.RESULTS_FILE).set_index("run")
    assert len(df) == 3 and (df.status == "interrupted").all(), df
    started = {p.parent.name: torch.load(p, weights_only=True)["epoch"] for p in sweep.glob("*/" + checkpoint.FILENAME)}
    assert len(started) == 2  # the queued member never started
    for run, row in df.iterrows():
        saved = started.get(run, 0)
        assert row.epochs == saved < EPOCHS and "run the same command again to resume" in row.error
        if saved:  # its epochs, one line each, in its own log
            assert [e for e, _, _ in epoch_lines(sweep / run / results.LOG_FILE)] == list(range(1, saved + 1))
            assert len(pd.read_parquet(sweep / run / results.METRICS_FILE)) == saved
    if how.startswith("Ctrl-C"):
        return

    # The same command resumes the stopped members from their checkpoints.
    again = start(*SWEEP, "--out", tmp_path, "--name", "s", start_new_session=True)
    run, saved = sorted(started.items())[0]
    log = sweep / run / results.LOG_FILE
    deadline = time.monotonic() + 300
    while f"resuming {sweep / run} after epoch {saved} of {EPOCHS}" not in log.read_text():
        assert again.poll() is None, again.communicate()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    again.send_signal(signal.SIGTERM)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 130, stderr
    epochs = pd.read_parquet(sweep / run / results.METRICS_FILE).epoch.tolist()
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= saved


def test_workers_die_with_a_killed_sweep(tmp_path):
    sweep = tmp_path / "k"
    proc = start(*SWEEP, "--out", tmp_path, "--name", "k")
    kids = training(sweep, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert none_left(kids), f"left running after kill -9 of the sweep: {alive(kids)}"
    # They stopped as on SIGTERM: claims released, checkpoints whole.
    assert not list(sweep.glob("*/" + results.CLAIM_FILE))
    for path in sweep.glob("*/" + checkpoint.FILENAME):
        assert torch.load(path, weights_only=True)["epoch"] >= 1


def _one_cpu() -> None:
    _interruptible()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def test_pool_splits_the_cpus_this_process_may_use(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in ("WIDEN_THREADS", "OMP_NUM_THREADS")}
    proc = start("sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 8, "--widths", 8,
                 "--epochs", 1, "--launcher", "pool", "--jobs", 1, "--out", tmp_path, "--name", "a",
                 env=env, preexec_fn=_one_cpu)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "1 CPU thread each" in " ".join(stderr.split())  # os.cpu_count() would say more where there are more
    logs = list((tmp_path / "a").glob("*/" + results.LOG_FILE))
    assert logs and all("(1 epochs, 1 CPU thread)" in p.read_text() for p in logs)  # what the member used


def test_redirected_train_logs_one_line_per_epoch(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        res = subprocess.run([WIDEN, "train", "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "20",
                              "--out", str(tmp_path), "--name", "r"], env=ENV, stdout=out, stderr=subprocess.PIPE,
                             text=True, timeout=300, preexec_fn=_interruptible)
    assert res.returncode == 0, res.stderr
    lines = epoch_lines(log)
    assert [(e, n) for e, n, _ in lines] == [(e, 20) for e in range(1, 21)], log.read_text()
    metrics = pd.read_parquet(tmp_path / "r" / results.METRICS_FILE)
    assert [acc for _, _, acc in lines] == pytest.approx(metrics.test_acc.tolist(), abs=5e-5)


def test_long_epochs_get_a_line_while_they_run(monkeypatch):
    """A heartbeat line in an epoch longer than the interval, naming the epoch and its batches."""
    from rich.progress import Progress

    out = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stdout", out)
    run = SimpleNamespace(main=True, dir=Path("r"), state=None, saved=0)
    progress = Progress(disable=True)
    with epochlog.EpochLog([run], 300, progress, heartbeat=0.01) as log:
        log.epoch_task = progress.add_task("epochs", total=300)
        batches = progress.add_task("batches", total=390, completed=120)
        log.begin(3)
        deadline = time.monotonic() + 60
        while "s so far" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        progress.remove_task(batches)
    line = out.getvalue().splitlines()[0]
    assert re.fullmatch(r"epoch 3/300  batch 120/390  \d+ s so far", line), out.getvalue()
