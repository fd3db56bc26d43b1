"""A run folder's lifecycle (lifecycle.py, claims.py): a finished or unfinished run is never mixed with
other settings, two processes never train one run twice, a stale claim is recovered, and Ctrl-C names
what each member really saved. Processes are real `widen` subprocesses."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pandas as pd
import pytest
import torch

# helpers.start: Ctrl-C must reach these subprocesses however the suite was started
from helpers import ENV, SMALL, WIDEN, dead_pid, one_error_line, start, wait_for, widen, write_claim
from widen_cli import checkpoint, compose, results

from widen_cli.identity import identity_of


# ---------------------------------------------------------------- identity before reuse

def test_finished_run_with_other_settings_is_refused(tmp_path):
    first = widen(*SMALL, "--out", tmp_path, "--name", "x")
    assert first.exit_code == 0, first.output
    summary = results.read_table(tmp_path / "x" / results.SUMMARY_FILE).iloc[0]  # missing text: None
    _, run = compose.load(["width=16", "optim.epochs=2", f"out={tmp_path}", "name=x"])
    assert summary.identity == json.dumps(identity_of(run), sort_keys=True)
    assert (summary.activation, summary.distribution, summary.within) == ("relu", None, None)
    assert pd.isna(summary.last_layer_connectivity)  # a number column (typed, not null-typed): NaN
    before = (tmp_path / "x" / results.SUMMARY_FILE).stat().st_mtime_ns

    changed = widen(*SMALL[:-1], 3, "--out", tmp_path, "--name", "x", "optim.lr=0.05")
    one_error_line(changed, f"optim.epochs: 3 here, 2 in {tmp_path / 'x'}", f"optim.lr: 0.05 here, ")
    same = widen(*SMALL, "--out", tmp_path, "--name", "x", "--device", "cpu")  # where it runs is no setting
    assert same.exit_code == 0 and "is done" in same.output, same.output
    assert (tmp_path / "x" / results.SUMMARY_FILE).stat().st_mtime_ns == before


def test_unfinished_run_with_other_settings_names_them(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    _, other = compose.load(["width=16", "optim.epochs=2", "model.hidden_layers=2"])
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(folder / checkpoint.FILENAME, identity=identity_of(other), epoch=1, rows=[], elapsed=0.0,
                    model=model, optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
                    masks=None)
    one_error_line(widen(*SMALL, "--out", tmp_path, "--name", "r"), "was written by a run with a different config",
                   f"model.hidden_layers: 1 here, 2 in {folder / checkpoint.FILENAME}", "--restart")
    assert not (folder / results.CLAIM_FILE).exists()  # released on the error


# ---------------------------------------------------------------- claims

@pytest.mark.parametrize("holder", ["dead pid here", "silent elsewhere"])
def test_stale_claim_is_recovered(tmp_path, holder):
    if holder == "dead pid here":
        write_claim(tmp_path / "r", dead_pid(), socket.gethostname(), time.time())
    else:
        write_claim(tmp_path / "r", 1, "another-host", time.time() - 3600)
    res = widen(*SMALL, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 0, res.output
    assert f"training {tmp_path / 'r'}" in res.output
    assert (tmp_path / "r" / results.SUMMARY_FILE).exists() and not (tmp_path / "r" / results.CLAIM_FILE).exists()


def test_run_claimed_by_a_live_process_is_waited_for(tmp_path):
    folder = tmp_path / "r"
    write_claim(folder, 1, "another-host", time.time())  # fresh heartbeat: alive
    proc = start(*SMALL, "--out", tmp_path, "--name", "r")
    line = proc.stderr.readline()
    assert f"waiting for {folder}: pid 1 on another-host is training it" in line, line + proc.communicate()[1]
    assert proc.poll() is None and not (folder / results.CONFIG_FILE).exists()  # nothing touched meanwhile
    (folder / results.CLAIM_FILE).unlink()  # the holder stopped without finishing: this process takes over
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"training {folder}" in stderr and (folder / results.SUMMARY_FILE).exists()


@pytest.mark.parametrize("content", ["", "{\"pid\": 12", "not json at all"])
def test_an_empty_or_garbled_claim_is_a_crash_leftover_and_taken_over_at_once(tmp_path, content):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / results.CLAIM_FILE).write_text(content)  # claims are written whole: only a crash leaves these
    res = widen(*SMALL, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 0 and "waiting for" not in res.output, res.output
    assert (folder / results.SUMMARY_FILE).exists() and not (folder / results.CLAIM_FILE).exists()


def test_a_paused_holder_that_was_taken_over_stops_without_writing(tmp_path):
    folder = tmp_path / "r"
    args = ["train", "--dataset", "digits", "--model", "mlp", "--width", 16, "--epochs", 40, "--out", tmp_path,
            "--name", "r"]
    first = start(*args)
    wait_for(folder / checkpoint.FILENAME, first)
    os.kill(first.pid, signal.SIGSTOP)  # a frozen node: its heartbeat stops
    try:
        claim = json.loads((folder / results.CLAIM_FILE).read_text())
        assert claim["pid"] == first.pid
        write_claim(folder, claim["pid"], claim["host"], claim["heartbeat"] - 3600)  # as it looks 1 h later
        second = subprocess.run([WIDEN, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0 and f"resuming {folder}" in second.stderr, second.stderr
        done = {name: (folder / name).read_bytes() for name in (results.SUMMARY_FILE, results.METRICS_FILE,
                                                                 results.MODEL_FILE)}
        assert not (folder / results.CLAIM_FILE).exists() and not (folder / checkpoint.FILENAME).exists()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: another process took over"), stderr
    assert "Traceback" not in stderr
    # The run is the second process's, untouched: no file rewritten, no claim or checkpoint put back.
    assert {name: (folder / name).read_bytes() for name in done} == done
    assert not (folder / results.CLAIM_FILE).exists() and not (folder / checkpoint.FILENAME).exists()
    assert pd.read_parquet(folder / results.METRICS_FILE).epoch.tolist() == list(range(1, 41))


SWEEP = ["sweep-width", "--dataset", "synthetic", "--model", "mlp", "--base-width", 32, "--widths", "32,128",
         "--epochs", 12, "dataset.train_size=2048", "dataset.test_size=256", "dataset.image_size=16",
         "optim.batch_size=64"]


def test_two_identical_sweeps_train_each_member_once(tmp_path):
    args = [*SWEEP, "--out", tmp_path, "--name", "twice"]
    procs = [start(*args), start(*args)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    logs = "\n".join(err for _, err in outputs).splitlines()
    table = pd.read_parquet(tmp_path / "twice" / results.RESULTS_FILE)
    assert sorted(zip(table.method, table.width)) == [("dense", 128), ("sparse", 32), ("sparse", 128)]
    assert set(table.status) == {"finished"}
    for run in table.run:
        folder = tmp_path / "twice" / run
        started = [line for line in logs if line.startswith((f"training {folder} ", f"resuming {folder} "))]
        assert len(started) == 1, (run, outputs)  # trained by exactly one of the two processes
        assert not (folder / results.CLAIM_FILE).exists()


def test_interrupted_family_names_the_epochs_each_member_saved(tmp_path):
    sweep = ["sweep-width", "--dataset", "synthetic", "--model", "mlp", "--base-width", 32, "--widths", "32,64,128",
             "--no-dense-wide", "--epochs", 400, "dataset.train_size=2048", "dataset.image_size=16",
             "--out", tmp_path, "--name", "fam"]
    proc = start(*sweep)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "fam").glob("*/" + checkpoint.FILENAME))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    saved: dict[int, list[str]] = {}
    for path in sorted((tmp_path / "fam").glob("*/" + checkpoint.FILENAME)):
        saved.setdefault(torch.load(path, weights_only=True)["epoch"], []).append(path.parent.name)
    message = " ".join(stderr.split())
    if len(saved) == 1:
        [(epoch, names)] = saved.items()
        assert f"epochs 1-{epoch} of 400 are saved for each of the {len(names)} members" in message, message
    for epoch, names in saved.items():
        assert f"epochs 1-{epoch} of 400" in message and all(n in message or len(saved) == 1 for n in names), message
    assert "run the same command again to resume" in message and "Traceback" not in stderr
    assert not list((tmp_path / "fam").glob("*/" + results.CLAIM_FILE))  # released on Ctrl-C
