"""Damaged files and leftovers in run and sweep folders: real files truncated or garbled on disk, read
back by real `widen` commands. Each damaged file gets one `error:` line naming it and what to do (or,
where widen can rebuild it exactly, is written again); a sweep records such a member as failed and
gathers the others; a finished run keeps nothing a kill left; atomic writes reach the disk before
their rename."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pandas as pd
import pytest
import torch

from helpers import SMALL, dead_pid, one_error_line, start, wait_for, widen, write_claim
from widen_cli import checkpoint, compose, results
from widen_cli.identity import identity_of
from widen_cli.datasets import spec_from_config
from widen_cli.models import build_model
from widen_cli.train import make_optimizer


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ---------------------------------------------------------------- a finished run's tables

@pytest.mark.parametrize("name", [results.SUMMARY_FILE, results.METRICS_FILE])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_table_of_a_finished_run_is_one_line(tmp_path, name, damage):
    assert widen(*SMALL, "--out", tmp_path, "--name", "r").exit_code == 0
    path = tmp_path / "r" / name
    truncate(path) if damage == "truncated" else path.write_bytes(b"")
    one_error_line(widen(*SMALL, "--out", tmp_path, "--name", "r"), str(path), f"delete the run folder {tmp_path / 'r'}")


DIGITS_SWEEP = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 8, "--widths", "8,16",
                "--epochs", 1]


def test_a_sweep_member_with_a_damaged_summary_fails_and_the_rest_is_gathered(tmp_path):
    args = [*DIGITS_SWEEP, "--out", tmp_path, "--name", "s"]
    assert widen(*args).exit_code == 0
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE)
    damaged = tmp_path / "s" / table.run.iloc[-1] / results.SUMMARY_FILE
    truncate(damaged)
    res = widen(*args)
    assert res.exit_code == 1 and f"1 of {len(table)} runs failed" in res.output, res.output
    again = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run")
    row = again.loc[damaged.parent.name]
    assert row.status == "failed" and str(damaged) in row.error and "delete the run folder" in row.error
    others = again.drop(index=damaged.parent.name)
    assert len(others) == len(table) - 1 and (others.status == "finished").all()


def test_a_damaged_checkpoint_in_a_batched_family_fails_that_member_only(tmp_path):
    args = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 8, "--widths", "8,16,32",
            "--no-dense-wide", "--epochs", 1, "--out", tmp_path, "--name", "s"]
    assert widen(*args).exit_code == 0
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE)
    damaged, fresh = (tmp_path / "s" / run for run in table[table.method == "sparse"].run[:2])
    for folder in (damaged, fresh):  # two members to train again, in one stacked model
        (folder / results.SUMMARY_FILE).unlink()
    (damaged / checkpoint.FILENAME).write_bytes(b"PK\x03\x04 not a whole zip archive")
    res = widen(*args)
    assert res.exit_code == 1 and f"1 of {len(table)} runs failed" in res.output, res.output
    again = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run")
    assert again.loc[damaged.name].status == "failed" and str(damaged / checkpoint.FILENAME) in again.loc[damaged.name].error
    assert (again.drop(index=damaged.name).status == "finished").all()


# ---------------------------------------------------------------- a pruned member's parent

@pytest.mark.parametrize("damage", ["truncated", "other shapes"])
def test_a_damaged_parent_model_fails_the_pruned_member_in_one_line(tmp_path, damage):
    args = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--method", "pruned", "--width", 32,
            "--base-width", 16, "--out", tmp_path, "--name", "p"]
    assert widen(*args).exit_code == 0
    [parent] = [d for d in tmp_path.iterdir() if "-dense-" in d.name]
    model = parent / results.MODEL_FILE
    if damage == "truncated":
        truncate(model)
    else:
        torch.save({"layers.0.weight": torch.zeros(3, 3)}, model)
    for name in (results.SUMMARY_FILE, checkpoint.FILENAME):
        (tmp_path / "p" / name).unlink(missing_ok=True)  # the pruned member is trained again
    one_error_line(widen(*args), str(model), "delete the parent's folder", str(parent))
    assert not (tmp_path / "p" / results.SUMMARY_FILE).exists()


# ---------------------------------------------------------------- checkpoints

MOMENTUM = "optim.momentum=0.9"  # so that the checkpoint holds momentum buffers


def write_checkpoint(path, epoch: int, damage) -> None:
    """A checkpoint of SMALL's run (with MOMENTUM) at `epoch`, as a run writes it, then damaged by damage(state)."""
    _, run = compose.load(["width=16", "optim.epochs=2", MOMENTUM])
    model = build_model(run.model, run.width, spec_from_config(run.dataset))
    opt, sched = make_optimizer(model, run.optim)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()  # momentum buffers, as after a real epoch
    row = dict(lr=0.1, train_loss=1.0, train_acc=0.5, test_loss=1.0, test_acc=0.5, val_loss=None, val_acc=None,
               seconds=0.1)
    checkpoint.save(path, identity=identity_of(run), epoch=epoch, rows=[dict(row, epoch=e + 1) for e in range(epoch)],
                    elapsed=0.1, model=model, optimizer=opt, scheduler=sched, masks=None)
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)


def _wrong_shape(state):
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 3)


def _wrong_momentum(state):
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3, 3)  # taken on trust by load_state_dict


@pytest.mark.parametrize("case,damage,needle", [
    ("missing key", lambda s: s["model"].pop(next(iter(s["model"]))), "does not fit"),
    ("wrong shape", _wrong_shape, "does not fit"),
    ("wrong momentum", _wrong_momentum, "momentum of other shapes"),
    ("no rows", lambda s: s.pop("rows"), "missing or wrong: rows"),
    ("epoch 99", lambda s: s.update(epoch=99, rows=s["rows"] * 99), "epoch 99"),
])
def test_a_checkpoint_that_does_not_fit_the_run_is_one_line(tmp_path, case, damage, needle):
    path = tmp_path / "r" / checkpoint.FILENAME
    path.parent.mkdir()
    write_checkpoint(path, 1, damage)
    one_error_line(widen(*SMALL, MOMENTUM, "--out", tmp_path, "--name", "r"), str(path), needle, "--restart")
    assert not (tmp_path / "r" / results.SUMMARY_FILE).exists()


def test_an_intact_checkpoint_written_the_same_way_resumes(tmp_path):
    path = tmp_path / "r" / checkpoint.FILENAME
    path.parent.mkdir()
    write_checkpoint(path, 1, lambda state: None)  # the cases above differ from this only by their damage
    res = widen(*SMALL, MOMENTUM, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 0 and f"resuming {tmp_path / 'r'} after epoch 1 of 2" in res.output, res.output


# ---------------------------------------------------------------- files a resumed run goes on from

def start_args(method, out):
    return ["train", "--dataset", "digits", "--model", "mlp", "--method", method, "--width", 32, "--base-width", 16,
            "--epochs", 40, "--out", out, "--name", "r"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run of `method` killed (SIGKILL) once it saved a checkpoint: one process per method, its folder
    copied for each damage (the run's identity holds no folder, so a copy resumes as the run itself)."""
    made = {}

    def folder(method):
        if method not in made:
            out = tmp_path_factory.mktemp(f"killed-{method}")
            proc = start(*start_args(method, out))
            wait_for(out / "r" / checkpoint.FILENAME, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            made[method] = out / "r"
        return made[method]
    return folder


@pytest.mark.parametrize("method,name", [("sparse", results.MASKS_FILE), ("dense", "weights-epoch0.pt")])
@pytest.mark.parametrize("damage", ["truncated", "garbled", "missing"])
def test_a_damaged_start_file_is_written_again_exactly_when_a_run_resumes(tmp_path, killed, method, name, damage):
    args = start_args(method, tmp_path)
    shutil.copytree(killed(method), tmp_path / "r")
    path = tmp_path / "r" / name
    original = torch.load(path, weights_only=True)
    if damage == "truncated":
        truncate(path)
    elif damage == "garbled":
        torch.save({k: torch.zeros_like(v) if k == next(iter(original)) else v for k, v in original.items()}, path) \
            if name == results.MASKS_FILE else path.write_bytes(b"\x00" * 100)
    else:
        path.unlink()
    res = widen(*args)
    assert res.exit_code == 0 and "resuming" in res.output, res.output
    assert f"{path} was damaged or missing" in " ".join(res.output.split()), res.output
    again = torch.load(path, weights_only=True)
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)


# ---------------------------------------------------------------- leftovers of a kill

def test_a_finished_run_keeps_nothing_a_kill_left(tmp_path):
    folder = tmp_path / "r"
    assert widen(*SMALL, "--out", tmp_path, "--name", "r").exit_code == 0
    # As a kill just after summary.parquet was written leaves it: the checkpoint and a dead holder's claim.
    (folder / checkpoint.FILENAME).write_bytes(b"an old checkpoint")
    write_claim(folder, dead_pid(), socket.gethostname(), time.time())
    tmp = folder / f".metrics.parquet.{socket.gethostname()}.{dead_pid()}.tmp"
    tmp.write_bytes(b"half")
    res = widen(*SMALL, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 0 and "is done" in res.output, res.output
    assert not any(p.exists() for p in (folder / checkpoint.FILENAME, folder / results.CLAIM_FILE, tmp))


def test_a_sweep_removes_temporaries_of_writers_that_are_gone(tmp_path):
    args = [*DIGITS_SWEEP, "--out", tmp_path, "--name", "s"]
    assert widen(*args).exit_code == 0
    folder, host = tmp_path / "s", socket.gethostname()
    gone = [folder / f".results.parquet.{host}.{dead_pid()}.tmp", folder / ".plan.parquet.other-host.7.tmp",
            folder / ".results.parquet.123.tmp"]  # a dead pid here; elsewhere, 2 h old; an older version's name
    alive = [folder / f".results.parquet.{host}.{os.getppid()}.tmp", folder / ".sweep.yaml.other-host.7.tmp"]
    for path in gone + alive:
        path.write_bytes(b"partial")
    for path in gone[1:]:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert widen(*args).exit_code == 0
    assert not any(p.exists() for p in gone) and all(p.exists() for p in alive)


# ---------------------------------------------------------------- durability

def test_an_atomic_write_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    target = tmp_path / "summary.parquet"
    results.write_table(pd.DataFrame([dict(epoch=1)]).reindex(columns=results.METRICS_COLUMNS), target, "metrics")
    tmp = str(results.temporary(target))
    assert events == [("fsync", tmp), ("replace", str(target)), ("fsync", str(tmp_path))], events
    assert pd.read_parquet(target).epoch.tolist() == [1]
