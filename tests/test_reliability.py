"""Interrupted runs resume exactly, bad checkpoints are refused, failures and divergence are recorded,
and a 2-process DDP run matches the single-process one. Processes are real: `widen` and `torchrun`
subprocesses killed with real signals."""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import check_ddp_matches_single_process, metrics, start, wait_for, widen
from widen_cli import checkpoint, compose, results

from widen_cli.identity import identity_of
from widen_cli.results import METRICS_COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; helpers.ENV says why


# A run slow enough (~0.1 s an epoch) that a kill lands mid-run, with everything that has state:
# momentum and weight decay, a learning-rate milestone, random crops and flips, a sparse mask.
SLOW = ["train", "--dataset", "synthetic", "--model", "mlp", "--method", "sparse", "--width", 512, "--base-width",
        128, "--epochs", 12, "dataset.train_size=4096", "dataset.test_size=256", "dataset.image_size=16",
        "dataset.augment=[crop,flip]", "optim.batch_size=64", "optim.milestones=[6]", "optim.lr=0.02"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    proc = start(*SLOW, "--out", tmp_path, "--name", "cut")
    wait_for(tmp_path / "cut" / checkpoint.FILENAME, proc)
    killed = pd.Timestamp.now(tz="UTC")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "summary.parquet").exists()  # killed mid-run
    state = torch.load(tmp_path / "cut" / checkpoint.FILENAME, weights_only=True)  # intact
    saved = state["epoch"]
    assert state["threads"] == 1  # what the resumed run will compute with

    resumed = widen(*SLOW, "--out", tmp_path, "--name", "cut")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {tmp_path / 'cut'} after epoch {saved} of 12" in resumed.output
    whole = widen(*SLOW, "--out", tmp_path, "--name", "whole")
    assert whole.exit_code == 0, whole.output

    cut, ref = tmp_path / "cut", tmp_path / "whole"
    pd.testing.assert_frame_equal(metrics(cut), metrics(ref), check_exact=True)
    assert metrics(ref).epoch.tolist() == list(range(1, 13))
    assert metrics(ref).lr.tolist() == [0.02] * 6 + [pytest.approx(0.002)] * 6
    a, b = (torch.load(r / "model.pt", weights_only=True) for r in (cut, ref))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (torch.load(r / "masks.pt", weights_only=True) for r in (cut, ref))
    assert all(torch.equal(a[k], b[k]) for k in a)
    produced = ["wall_seconds", "run", *results.PROVENANCE_COLUMNS]  # where and when, not what
    sa, sb = (pd.read_parquet(r / "summary.parquet").drop(columns=produced) for r in (cut, ref))
    pd.testing.assert_frame_equal(sa, sb)
    started = pd.read_parquet(cut / "summary.parquet").started_at.item()
    assert started < killed  # the resumed run started when its first epoch did, in the killed process
    assert sa.status.item() == "finished"
    assert not (cut / checkpoint.FILENAME).exists() and not list(cut.glob(".*.tmp"))


# Far longer than the test waits (minutes), so that the signal lands mid-run however loaded the machine is.
DIGITS = ["train", "--dataset", "digits", "--model", "mlp", "--width", 16, "--epochs", 5000]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_saves_and_says_how_to_resume(tmp_path, sig):
    proc = start(*DIGITS, "--out", tmp_path, "--name", "r")
    wait_for(tmp_path / "r" / checkpoint.FILENAME, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "run the same command again to resume" in stderr and str(tmp_path / "r" / checkpoint.FILENAME) in stderr
    state = torch.load(tmp_path / "r" / checkpoint.FILENAME, weights_only=True)
    assert 1 <= state["epoch"] < 5000 and len(state["rows"]) == state["epoch"]
    assert not (tmp_path / "r" / "summary.parquet").exists()


# ---------------------------------------------------------------- unreadable checkpoints

SMALL = ["train", "--dataset", "digits", "--model", "mlp", "--width", 16, "--epochs", 3]


class Exploit:
    """A pickle that would create a folder when unpickled without weights_only."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


def real_checkpoint(path: Path, overrides: list[str]) -> None:
    """A checkpoint as a run writes it (epoch 1 of the config that `overrides` compose)."""
    _, run = compose.load(overrides)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    checkpoint.save(path, identity=identity_of(run), epoch=1, rows=[], elapsed=0.0, model=model, optimizer=opt,
                    scheduler=sched, masks=None)


@pytest.mark.parametrize("case,needle", [
    ("truncated", "cannot read checkpoint"),
    ("foreign", "is not a widen checkpoint"),
    ("pickle", "cannot read checkpoint"),
    ("other-config", "was written by a run with a different config"),
])
def test_unreadable_checkpoint_is_refused(tmp_path, case, needle):
    run = tmp_path / "r"
    run.mkdir()
    path = run / checkpoint.FILENAME
    if case == "truncated":
        real_checkpoint(path, ["width=16", "optim.epochs=3"])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    elif case == "pickle":
        torch.save(Exploit(tmp_path / "pwned"), path)
    else:
        real_checkpoint(path, ["width=16", "optim.epochs=3", "optim.lr=0.05"])
    res = widen(*SMALL, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert needle in res.output and str(path) in res.output and "--restart" in res.output
    assert not (tmp_path / "pwned").exists()  # the pickle was refused, never run
    assert not (run / "summary.parquet").exists()

    restarted = widen(*SMALL, "--out", tmp_path, "--name", "r", "--restart")
    assert restarted.exit_code == 0, restarted.output
    assert metrics(run).epoch.tolist() == [1, 2, 3]
    assert not path.exists() and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- divergence and failures

def test_nan_loss_is_recorded_as_diverged_and_not_retried(tmp_path):
    res = widen(*SMALL, "--out", tmp_path, "--name", "nan", "optim.lr=1e30")
    assert res.exit_code == 0, res.output
    assert "diverged" in res.output
    run = tmp_path / "nan"
    s = pd.read_parquet(run / "summary.parquet").iloc[0]
    assert s.status == "diverged" and s.epochs == 1
    m = pd.read_parquet(run / "metrics.parquet")
    assert list(m.columns) == METRICS_COLUMNS and len(m) == 1 and not m.train_loss.between(-1e300, 1e300).any()
    assert not (run / checkpoint.FILENAME).exists()
    before = (run / "summary.parquet").stat().st_mtime_ns
    again = widen(*SMALL, "--out", tmp_path, "--name", "nan", "optim.lr=1e30")
    assert again.exit_code == 0 and "status diverged" in again.output
    assert (run / "summary.parquet").stat().st_mtime_ns == before


SWEEP = ["sweep-width", "--dataset", "synthetic", "--model", "mlp", "--base-width", 8, "--widths", "8,32",
         "--seeds", "0", "--epochs", 2, "dataset.train_size=128", "dataset.test_size=64", "dataset.image_size=8",
         "optim.batch_size=32"]


def test_sweep_records_diverged_members_and_goes_on(tmp_path):
    res = widen(*SWEEP, "--out", tmp_path, "--name", "nan", "optim.lr=1e30")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "nan" / "results.parquet")
    assert sorted(zip(df.method, df.width)) == [("dense", 32), ("sparse", 8), ("sparse", 32)]
    assert (df.status == "diverged").all() and (df.epochs == 1).all() and df.error.isna().all()
    assert "3 of 3 runs diverged" in res.output
    again = widen(*SWEEP, "--out", tmp_path, "--name", "nan", "optim.lr=1e30")
    assert "3 of 3 runs already finished; running 0" in again.output


def test_parallel_sweep_records_a_failed_member_and_the_others(tmp_path):
    # The member sparse w=32 finds a damaged checkpoint in its folder (a disk that filled up, say).
    show = widen("train", "--show-config", "--dataset", "synthetic", "--model", "mlp", "--method", "sparse",
                 "--width", 32, "--base-width", 8, "--seed", 0, "--epochs", 2, "dataset.train_size=128",
                 "dataset.test_size=64", "dataset.image_size=8", "optim.batch_size=32", "--out", tmp_path / "s")
    folder = Path(show.output.split("# run folder:")[1].strip())
    folder.mkdir(parents=True)
    (folder / checkpoint.FILENAME).write_bytes(b"PK\x03\x04 not a whole zip archive")

    res = widen(*SWEEP, "--out", tmp_path, "--name", "s", "--launcher", "pool", "--jobs", 2)
    assert res.exit_code == 1, res.output
    assert "1 of 3 runs failed" in res.output
    df = pd.read_parquet(tmp_path / "s" / "results.parquet").set_index("run")
    assert len(df) == 3
    failed = df.loc[folder.name]
    assert (failed.status, failed.method, failed.width, failed.seed, failed.base_width) == ("failed", "sparse", 32, 0, 8)
    assert failed.n_weights == 3 * 8 * 8 * 8 + 8 * 10 and failed.epochs == 0 and pd.isna(failed.best_test_acc)
    assert "--restart" in failed.error and str(folder / checkpoint.FILENAME) in failed.error
    assert "MemberError" in (folder / "error.txt").read_text()  # a UserError of this member only
    others = df.drop(index=folder.name)
    assert (others.status == "finished").all() and others.best_test_acc.between(0, 1).all()
    assert others.error.isna().all()

    # Starting the damaged member over runs only it.
    fixed = widen(*SWEEP, "--out", tmp_path, "--name", "s", "--restart")
    assert fixed.exit_code == 0, fixed.output
    assert "2 of 3 runs already finished; running 1" in fixed.output
    df = pd.read_parquet(tmp_path / "s" / "results.parquet")
    assert (df.status == "finished").all() and not (folder / "error.txt").exists()


# ---------------------------------------------------------------- DDP

def test_two_process_ddp_matches_single_process(tmp_path):
    check_ddp_matches_single_process(tmp_path, "cpu")  # gloo (helpers.py); tests/test_gpu.py runs it with NCCL on two GPUs


# Batched digits families (sweep-width trains each as one stacked model, stacked_training.py) with everything that
# has state: momentum, weight decay, an lr milestone after the kill; sparse members of several widths and
# seeds, or dense members of one width and several seeds.
FAMILY = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--epochs", 30, "--no-dense-wide",
          "optim.momentum=0.9", "optim.weight_decay=5e-4", "optim.schedule=multistep", "optim.milestones=[15]",
          "optim.batch_size=32"]
MEMBERS = {"sparse": ["--base-width", 8, "--widths", "8,16,32", "--seeds", "0,1"],
           "dense": ["--method", "dense", "--base-width", 16, "--widths", 16, "--seeds", "0,1,2"]}


def saved_epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_killed_batched_family_resumes_batched_as_if_never_interrupted(tmp_path, method):
    sweep = [*FAMILY, *MEMBERS[method], "--out", tmp_path]
    n = 6 if method == "sparse" else 3
    cut = tmp_path / "cut"
    proc = start(*sweep, "--name", "cut")

    def checkpoints() -> list[Path]:
        return sorted(cut.glob("*/" + checkpoint.FILENAME))

    deadline = time.monotonic() + 120
    while len(checkpoints()) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.005)
    behind = checkpoints()[0]
    shutil.copy(behind, tmp_path / "behind.pt")  # one member's checkpoint, kept to rewind it to
    rewound = saved_epoch(tmp_path / "behind.pt")
    while min(saved_epoch(p) for p in checkpoints()) < rewound + 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training stalled"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(cut.glob("*/summary.parquet"))  # killed mid-run
    assert all(torch.load(p, weights_only=True)["batched"] for p in checkpoints())
    # Members at three different epochs, as a kill while the members' checkpoints were being written, or
    # members added to an interrupted family, leave them: one rewound, one with no epoch saved.
    shutil.copy(tmp_path / "behind.pt", behind)
    checkpoints()[-1].unlink()
    ahead = max(saved_epoch(p) for p in checkpoints())
    saved = {p.parent.name: saved_epoch(p) for p in checkpoints()}
    shutil.copytree(cut, tmp_path / "alone")

    resumed = widen(*sweep, "--name", "cut")
    assert resumed.exit_code == 0, resumed.output
    output = " ".join(resumed.output.split())
    assert f"{n} members in one stacked model, resuming after epoch {ahead}" in output, output  # batched again
    assert f"resuming {behind.parent} after epoch {rewound} of 30" in output
    whole = widen(*sweep, "--name", "whole")
    assert whole.exit_code == 0, whole.output
    table = pd.read_parquet(cut / "results.parquet")
    assert len(table) == n and set(table.status) == {"finished"}
    for run in table.run:
        pd.testing.assert_frame_equal(metrics(cut / run), metrics(tmp_path / "whole" / run), check_exact=True)
        a, b = (torch.load(d / run / "model.pt", weights_only=True) for d in (cut, tmp_path / "whole"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert not (cut / run / checkpoint.FILENAME).exists()

    # Without batching (sweep.batch_members=false, as with `widen train`) the same checkpoints resume alone.
    alone = widen(*sweep, "--name", "alone", "sweep.batch_members=false")
    assert alone.exit_code == 0, alone.output
    assert "stacked model" not in alone.output and f"resuming {tmp_path / 'alone' / behind.parent.name} " in alone.output
    for run, epoch in saved.items():
        rows = metrics(tmp_path / "alone" / run)
        assert rows.epoch.tolist() == list(range(1, 31))
        pd.testing.assert_frame_equal(rows[:epoch], metrics(tmp_path / "whole" / run)[:epoch], check_exact=True)
