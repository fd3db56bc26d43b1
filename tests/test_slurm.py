"""`--launcher submitit` against a real single-node SLURM (`make test-slurm` starts one with
scripts/slurm-up.sh and stops it after). Marked `slurm`: plain `make test` leaves these out, and here a
cluster that cannot be reached is a failure, never a skip.

Members are tiny (digits, width 8) and run on one CPU each. What the trials rely on: SLURM holds a
requeued job about two minutes (BeginTime) before it starts again, so the two requeue trials share one
sweep and wait together; time limits are whole minutes, and submitit asks for USR2 90 s before the
limit, which SLURM's periodic time-limit check (about every 30 s) sends, at once when the limit is
lowered below that; submitit ignores SIGTERM in the job, so `scontrol requeue` ends in SIGKILL after
KillWait and the member leaves its claim behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slurm

ENV = {**os.environ, "WIDEN_THREADS": "1"}


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=ENV).stdout


@pytest.fixture(scope="module", autouse=True)
def cluster():
    try:
        up = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30, env=ENV)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"no SLURM cluster to test against (make test-slurm starts one): {e}")
    if up.returncode or not up.stdout.strip():
        pytest.fail(f"no SLURM cluster to test against (make test-slurm starts one): {up.stderr.strip()}")


def sweep_cmd(out: Path, name: str, *extra, widths="8", seeds="0", epochs=3, launcher="submitit") -> list[str]:
    return [sys.executable, "-m", "widen_cli", "sweep-width", "--dataset", "digits", "--model", "mlp",
            "--base-width", "8", "--widths", widths, "--no-dense-wide", "--seeds", seeds, "--epochs", str(epochs),
            "--out", str(out), "--name", name, "--launcher", launcher, "sweep.submitit.cpus_per_task=1",
            "sweep.submitit.mem_gb=0.5", *extra]


def widen(cmd: list[str], timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def jobs_of(sweep: Path) -> dict:
    return json.loads((sweep / "slurm_jobs.json").read_text())


def sacct(*args: str) -> list[list[str]]:
    return [line.split("|") for line in sh("sacct", "-n", "-X", "-P", *args).splitlines() if line.strip()]


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "metrics.parquet")


def epochs_done(run_dir: Path) -> int:
    """Epochs recorded so far by a member that is training (0 while its file is being replaced)."""
    try:
        return len(metrics(run_dir))
    except OSError:
        return 0


def test_array_respects_jobs(tmp_path):
    res = widen(sweep_cmd(tmp_path, "arr", "--jobs", "1", widths="8,12,16"))
    assert res.returncode == 0, res.stderr
    sweep = tmp_path / "arr"
    recorded = jobs_of(sweep)
    assert len(recorded) == 3 and sorted(r["task"] for r in recorded.values()) == [0, 1, 2]
    array = {r["array"] for r in recorded.values()}.pop()
    assert f"submitted 3 members as SLURM array {array}, job name arr, 1 at a time" in res.stderr
    rows = sacct("-j", array, "-o", "JobID,JobName,Start,End,State")
    assert len(rows) == 3 and all(r[1] == "arr" and r[4] == "COMPLETED" for r in rows)
    spans = sorted((r[2], r[3]) for r in rows)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # one at a time
    for run, r in recorded.items():  # each task's log is its member's, with widen's own lines
        log = Path(r["log"]).read_text()
        assert f"training {sweep / run}" in log and f"SLURM job {r['job_id']}" in log
    assert (pd.read_parquet(sweep / "results.parquet").status == "finished").all()


def test_sbatch_refusal_is_one_line(tmp_path):
    res = widen(sweep_cmd(tmp_path, "ref", "sweep.submitit.slurm_partition=nosuchpartition"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: sbatch refused the job array:")
    assert "invalid partition" in res.stderr.lower() and "Traceback" not in res.stderr


def test_member_slurm_will_never_start_is_named(tmp_path):
    """A time limit above the partition's: SLURM queues the job for ever (PartitionTimeLimit)."""
    name = f"never{os.getpid()}"
    log = tmp_path / "wait.log"
    with open(log, "w") as f:
        waiting = subprocess.Popen(sweep_cmd(tmp_path, name, "sweep.submitit.slurm_partition=short",
                                             "sweep.submitit.timeout_min=5"), stdout=subprocess.DEVNULL, stderr=f,
                                   env=ENV)
        try:
            deadline = time.time() + 120
            while "will not start it" not in log.read_text() and time.time() < deadline and waiting.poll() is None:
                time.sleep(1)
        finally:
            waiting.kill()
            sh("scancel", "--name", name)
    said = " ".join(log.read_text().split())
    assert re.search(r"is pending with reason Partition(TimeLimit|Config): SLURM will not start it as asked", said), said
    assert "SLURM: 1 pending, 0 running, 0 done, 0 failed" in said


def test_crashed_member_is_failed_with_its_cause(tmp_path):
    res = widen(sweep_cmd(tmp_path, "crash", epochs=2, launcher="local"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "crash" / pd.read_parquet(tmp_path / "crash" / "results.parquet").run.iloc[0]
    (run / "summary.parquet").unlink()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    res = widen(sweep_cmd(tmp_path, "crash", epochs=2))
    assert res.returncode == 1, res.stderr
    error = pd.read_parquet(tmp_path / "crash" / "results.parquet").error.iloc[0]
    log = jobs_of(tmp_path / "crash")[run.name]["log"]
    assert error.startswith(f"cannot read checkpoint {run / 'checkpoint.pt'}"), error
    assert "(SLURM FAILED; log " + log in error and "FailedJobError" not in error
    assert error in res.stderr


def test_killed_wait_then_rerun_submits_nothing_twice(tmp_path):
    name = f"kill{os.getpid()}"  # the job name sacct looks for: this test's alone
    cmd = sweep_cmd(tmp_path, name, "--jobs", "1", widths="8,12", epochs=600)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    record = tmp_path / name / "slurm_jobs.json"
    deadline = time.time() + 300
    while not record.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # the waiting widen dies (a closed ssh session)
    first.wait()
    assert record.exists()
    arrays = {r["array"] for r in jobs_of(tmp_path / name).values()}
    assert len(arrays) == 1
    array = arrays.pop()
    # Run again, and stop that one with Ctrl-C: it says the jobs keep running and how to cancel them.
    log = tmp_path / "second.log"
    with open(log, "w") as f:
        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=ENV,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 300
        while "still queued or running" not in log.read_text() and time.time() < deadline and second.poll() is None:
            time.sleep(0.5)
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=120) == 130
    said = " ".join(log.read_text().split())
    assert f"keep running in SLURM (array {array})" in said and f"scancel {array}" in said, said
    res = widen(cmd)
    assert res.returncode == 0, res.stderr
    assert {r["array"] for r in jobs_of(tmp_path / name).values()} == {array} and "submitted" not in res.stderr
    assert f"members are still queued or running in SLURM array {array}" in res.stderr
    assert len(sacct("--name", name, "-S", "now-1hour", "-o", "JobID")) == 2  # two tasks, one array
    assert (pd.read_parquet(tmp_path / name / "results.parquet").status == "finished").all()


def test_time_limit_and_requeue_resume_like_an_uninterrupted_run(tmp_path):
    """Two members at once: one reaches its time limit (submitit checkpoints and requeues it), the other
    is requeued by `scontrol requeue` (SIGKILL: its claim is left behind). Both resume and end with every
    epoch once and the numbers of the same sweep run here without interruption."""
    epochs = 4000  # still training when the signal comes (the time-limit check runs every 30 s or so)
    args = dict(widths="8,12", epochs=epochs)
    reference = subprocess.Popen(sweep_cmd(tmp_path, "ref", "sweep.batch_members=false", **args, launcher="local"),
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=ENV)
    name = f"limits{os.getpid()}"  # the job name: this test's alone
    sweep = tmp_path / name
    waiting = subprocess.Popen(sweep_cmd(tmp_path, name, "--jobs", "2", "sweep.submitit.timeout_min=10",
                                         "sweep.submitit.slurm_max_num_timeout=5", **args),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (sweep / "slurm_jobs.json").exists():
                recorded = jobs_of(sweep)
                if all(epochs_done(sweep / run) >= 20 for run in recorded):
                    break
            time.sleep(1)
        (limited, r1), (requeued, r2) = sorted(recorded.items(), key=lambda kv: kv[1]["task"])
        # The time limit falls to 2 minutes: SLURM sends submitit's USR2 (90 s before it) at once.
        sh("scontrol", "update", f"JobId={r1['job_id']}", "TimeLimit=2")
        sh("scontrol", "requeue", r2["job_id"])
        deadline = time.time() + 240
        while "USR2" not in Path(r1["log"]).read_text() and time.time() < deadline:
            time.sleep(2)
        assert "Caught signal SIGUSR2" in Path(r1["log"]).read_text()
        while time.time() < deadline:  # the requeued job pends (BeginTime): give it its time back
            if sh("squeue", "-h", "-j", r1["job_id"], "-o", "%T").strip() in ("PENDING", "REQUEUED"):
                break
            time.sleep(1)
        sh("scontrol", "update", f"JobId={r1['job_id']}", "TimeLimit=10")
        _, err = waiting.communicate(timeout=900)
        assert waiting.returncode == 0, err
        assert reference.wait(timeout=900) == 0
    finally:
        for p in (waiting, reference):
            if p.poll() is None:
                p.kill()
        sh("scancel", "--name", name)
    for run, r in ((limited, r1), (requeued, r2)):
        log = Path(r["log"]).read_text()
        assert "restart 1" in log and f"resuming {sweep / run} after epoch" in log, log[-3000:]
        assert "waiting for" not in log  # the claim of its first run did not hold it up
        got, ref = metrics(sweep / run), metrics(tmp_path / "ref" / run)
        assert got.epoch.tolist() == list(range(1, epochs + 1))
        pd.testing.assert_frame_equal(got.drop(columns="seconds"), ref.drop(columns="seconds"))
    table = pd.read_parquet(sweep / "results.parquet")
    assert (table.status == "finished").all()
