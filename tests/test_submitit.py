"""The submitit launcher's parts that need no cluster (tests/test_slurm.py runs it against a real one)."""
import json
import time

import pytest

from widen_cli import claims


def _claim_by(path, slurm_job):
    path.write_text(json.dumps(dict(pid=1, host="another-node", heartbeat=time.time(), slurm_job=slurm_job)))


@pytest.mark.parametrize("env,ours", [
    ({"SLURM_ARRAY_JOB_ID": "26", "SLURM_ARRAY_TASK_ID": "1", "SLURM_RESTART_COUNT": "1"}, True),  # requeued
    ({"SLURM_ARRAY_JOB_ID": "26", "SLURM_ARRAY_TASK_ID": "2", "SLURM_RESTART_COUNT": "1"}, False),  # another task
    ({}, False),  # outside SLURM
])
def test_claim_of_an_earlier_run_of_this_slurm_job_is_stale_at_once(tmp_path, monkeypatch, env, ours):
    """A requeued member (possibly on another node) takes over the fresh-looking claim its killed first
    run left, instead of waiting 10 minutes for its heartbeat to age; anyone else still waits."""
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _claim_by(tmp_path / "claim.json", "26_1/0")
    got = claims.acquire(tmp_path)
    assert isinstance(got, claims.Claim) == ours
    if ours:
        assert json.loads((tmp_path / "claim.json").read_text())["slurm_job"] == "26_1/1"
        got.release()


@pytest.mark.parametrize("override,needle", [
    ("sweep.submitit.cluster=debug", "sweep.submitit.cluster must be one of slurm, local or null, got 'debug'"),
    ("sweep.submitit.slurm_setup=5", "sweep.submitit.slurm_setup must be a list of (a string) or null, got 5"),
    ("sweep.submitit.timeout_min=0", "sweep.submitit.timeout_min must be >= 1, got 0"),
])
def test_bad_submitit_settings_are_refused_before_anything_is_written(tmp_path, override, needle):
    from typer.testing import CliRunner

    from widen_cli.cli import app

    res = CliRunner().invoke(app, ["sweep-width", "--dataset", "digits", "--base-width", "8", "--widths", "8",
                                   "--launcher", "submitit", "--out", str(tmp_path), "--name", "s", override])
    assert res.exit_code == 2, res.output
    assert f"error: {needle}" in " ".join(res.output.split())
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("timeout_min,delay,warned", [(1, None, True), (2, None, False), (2, 120, True)])
def test_time_limit_within_the_signal_delay_is_warned(timeout_min, delay, warned):
    """SLURM signals USR2 `delay` seconds before the limit: a shorter limit signals every member at start."""
    from types import SimpleNamespace

    from rich.console import Console

    from widen_cli import slurm
    from widen_cli.schema import SubmititConfig

    console = Console(record=True, width=300)
    slurm.warn_limits(SimpleNamespace(submitit=SubmititConfig(timeout_min=timeout_min, slurm_signal_delay_s=delay)),
                      console)
    assert ("signalled to checkpoint and requeue as soon as it starts" in console.export_text()) == warned


@pytest.mark.parametrize("kind", ["UserError", "MemberError", "MemberFailed"])
def test_a_failed_members_cause_is_widens_message_alone(kind):
    """What submitit reports of a member that raised one of widen's own errors: its message alone, as
    `widen train` prints it; another exception keeps its type."""
    from widen_cli import slurm

    def reported(last_line: str) -> Exception:
        return Exception(f"Job 1_0 failed with trace:\n----\nTraceback (most recent call last):\n{last_line}\n----\n")

    assert slurm.cause(reported(f"widen_cli.errors.{kind}: cannot read checkpoint /r/checkpoint.pt"),
                       "FAILED") == "cannot read checkpoint /r/checkpoint.pt"
    assert slurm.cause(reported("RuntimeError: boom"), "FAILED") == "RuntimeError: boom"
    assert slurm.cause(Exception("no trace"), "OUT_OF_MEMORY") == "ended without a result, OUT_OF_MEMORY"
