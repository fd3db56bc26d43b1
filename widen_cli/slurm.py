"""`--launcher submitit`: the members as one SLURM job array (through submitit), waited for here.

Each member's SLURM job id, array task and log are recorded in the sweep folder's slurm_jobs.json as
soon as the array is submitted, so that the same command run again (after the waiting process was
killed, or Ctrl-C) waits for the members SLURM still holds instead of submitting them a second time.
Waiting polls the queue (squeue, then sacct for a job that has left it): members are taken in the order
they end, a line is printed whenever the pending/running/done counts change, and a member SLURM will
never start (a pending reason such as PartitionTimeLimit) is named. A failed member's error is its
cause (the exception's last line, or SLURM's final state when it left no result), the state and its log.
Without SLURM the launcher is refused unless sweep.submitit.cluster=local asks for local processes.
"""
from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import submitit.helpers

from widen_cli import results
from widen_cli.schema import SweepConfig
from widen_cli.errors import Interrupted, UserError
from widen_cli.jobs import Job

JOBS_FILE = "slurm_jobs.json"  # in the sweep folder: {run folder name: job id, array, task, log, member}
CLUSTERS = ("slurm", "local")
LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
        "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}
# Pending reasons that mean SLURM will not start the job as it was asked for.
NEVER = ("PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig", "ReqNodeNotAvail", "BadConstraints",
         "InvalidAccount", "InvalidQOS", "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
         "PartitionDown", "PartitionInactive", "DependencyNeverSatisfied")
POLL_SECONDS = 5.0
SIGNAL_DELAY_S = 90  # submitit's default: USR2 this long before the time limit
MAX_NUM_TIMEOUT = 3  # submitit's default: time-limit requeues before a member fails


class MemberJob(submitit.helpers.Checkpointable):
    """A member as a SLURM job. A job that is pre-empted or times out is requeued, and the requeued job
    resumes the member from its last checkpoint. Its start and resume lines go to stdout, which
    submitit writes to the member's SLURM log."""

    def __call__(self, job: Job, threads: int | None = None) -> str:
        from rich.console import Console

        from widen_cli.train import run_training

        if threads:
            os.environ["WIDEN_THREADS"] = str(threads)
        env = os.environ
        slurm_job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if env.get("SLURM_ARRAY_TASK_ID")
                     else env.get("SLURM_JOB_ID", "?"))
        print(f"widen: member {job.run_dir.name} (SLURM job {slurm_job}, restart "
              f"{env.get('SLURM_RESTART_COUNT', '0')})", flush=True)
        run_training(job, Console(file=sys.stdout, soft_wrap=True))
        return str(job.run_dir)

    def checkpoint(self, job: Job, threads: int | None = None):
        # the requeued job resumes from the checkpoint: never restart again
        return submitit.helpers.DelayedSubmission(self, replace(job, restart=False), threads)


class MemberFailed(UserError):
    """A member's cause of failure, in one line (its full report is the exception's __cause__)."""


def check(s: SweepConfig) -> str:
    """The submitit cluster this sweep would use; a setting that cannot work is refused before anything
    is written. Without SLURM here only an explicit sweep.submitit.cluster=local runs."""
    c = s.submitit
    if c.cluster is not None and c.cluster not in CLUSTERS:
        raise UserError(f"sweep.submitit.cluster must be one of {', '.join(CLUSTERS)} or null, got {c.cluster!r}")
    least = dict(timeout_min=1, slurm_max_num_timeout=0, slurm_signal_delay_s=1, gpus_per_node=0, cpus_per_task=1)
    for key, lowest in least.items():
        value = getattr(c, key)
        if value is not None and value < lowest:
            raise UserError(f"sweep.submitit.{key} must be >= {lowest}, got {value}")
    if c.mem_gb is not None and c.mem_gb <= 0:
        raise UserError(f"sweep.submitit.mem_gb must be > 0, got {c.mem_gb}")
    cluster = c.cluster or "slurm"
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError("--launcher submitit needs SLURM and there is no sbatch/srun on PATH here; run it where "
                        "SLURM is, or pass sweep.submitit.cluster=local to run the members as processes on this "
                        "machine (--jobs at a time)")
    return cluster


def parameters(s: SweepConfig, name: str) -> dict:
    """sweep.submitit's keys as AutoExecutor.update_parameters takes them (null ones left out)."""
    c = s.submitit
    keys = ("timeout_min", "slurm_partition", "gpus_per_node", "cpus_per_task", "mem_gb", "slurm_account",
            "slurm_qos", "slurm_constraint", "slurm_exclude", "slurm_signal_delay_s")
    params = {k: getattr(c, k) for k in keys if getattr(c, k) is not None}
    params["name"] = c.name or name
    if c.slurm_setup:
        params["slurm_setup"] = list(c.slurm_setup)
    if c.slurm_requeue is not None:
        params["slurm_additional_parameters"] = {"requeue" if c.slurm_requeue else "no_requeue": True}
    return params


def warn_limits(s: SweepConfig, console) -> None:
    """A time limit no longer than submitit's signal delay signals every member as it starts."""
    c = s.submitit
    delay = c.slurm_signal_delay_s if c.slurm_signal_delay_s is not None else SIGNAL_DELAY_S
    if c.timeout_min is not None and c.timeout_min * 60 <= delay:
        console.print(f"[yellow]warning: sweep.submitit.timeout_min={c.timeout_min} is not longer than the signal "
                      f"delay ({delay} s, sweep.submitit.slurm_signal_delay_s): each member is signalled to "
                      f"checkpoint and requeue as soon as it starts[/yellow]", highlight=False)


# ---------------------------------------------------------------- the queue

def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def queue() -> dict[str, tuple[str, str]]:
    """{job id: (state, pending reason)} of this user's jobs in the queue, array tasks one by one."""
    out = _run("squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r")
    rows = (line.split("|") for line in out.splitlines() if line.count("|") == 2)
    return {job_id: (state, reason) for job_id, state, reason in rows}


def final_state(job_id: str) -> str | None:
    """The job's state in SLURM's accounting (sacct), e.g. COMPLETED, TIMEOUT, OUT_OF_MEMORY, CANCELLED."""
    out = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State")
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id and state:
            return state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return None


# ---------------------------------------------------------------- the record of submitted members

def read_jobs(sweep_dir: Path) -> dict:
    try:
        data = json.loads((sweep_dir / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _label(job: Job) -> str:
    m = job.member
    return f"{m.method} width={m.width} base={m.base_width} seed={job.run.seed} lr={job.run.optim.lr:g}"


def _record(sweep_dir: Path, todo: list[Job], subs: list) -> None:
    data = read_jobs(sweep_dir)
    for task, (job, sub) in enumerate(zip(todo, subs)):
        data[job.run_dir.name] = dict(job_id=str(sub.job_id), array=str(sub.job_id).split("_")[0], task=task,
                                      log=str(sub.paths.stdout), member=_label(job))
    results.write_text(json.dumps(data, indent=1), sweep_dir / JOBS_FILE)


# ---------------------------------------------------------------- launching and waiting

def launch(todo: list[Job], done, s: SweepConfig, n_jobs: int, sweep_dir: Path, console) -> None:
    """Submit the members SLURM does not hold already as one array (--jobs at a time), then wait for
    them and for the held ones, calling done(job, error) as each ends."""
    import submitit

    cluster = check(s)
    warn_limits(s, console)
    folder = sweep_dir / ".submitit"
    c = s.submitit
    timeouts = c.slurm_max_num_timeout if c.slurm_max_num_timeout is not None else MAX_NUM_TIMEOUT
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=timeouts)
    executor.update_parameters(**parameters(s, sweep_dir.name))
    if cluster == "local":
        return _local(todo, done, executor, n_jobs, console)

    held, todo_new = [], []  # (job, submitit job) pairs: a Job is not hashable
    in_queue = queue() if todo else {}
    recorded = read_jobs(sweep_dir)
    for job in todo:
        job_id = str(recorded.get(job.run_dir.name, {}).get("job_id", ""))
        if job_id and in_queue.get(job_id, ("",))[0] in LIVE:
            held.append((job, submitit.SlurmJob(folder=folder, job_id=job_id)))
        else:
            todo_new.append(job)
    if held:
        arrays = sorted({sub.job_id.split("_")[0] for _, sub in held})
        console.print(f"{len(held)} members are still queued or running in SLURM array {', '.join(arrays)} "
                      f"(an earlier run of this command): waiting for them, not submitting them again",
                      highlight=False)
    subs = []
    if todo_new:
        parallel = min(n_jobs, len(todo_new))
        executor.update_parameters(slurm_array_parallelism=parallel)
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):  # submitit echoes sbatch's complaint: we say it once
                subs = executor.map_array(MemberJob(), todo_new, [None] * len(todo_new))
        except Exception as e:  # noqa: BLE001 - sbatch refused: its reason, one line
            raise UserError(f"sbatch refused the job array: {_sbatch_reason(e, stderr.getvalue())}") from None
        _record(sweep_dir, todo_new, subs)
        array = str(subs[0].job_id).split("_")[0]
        console.print(f"submitted {len(subs)} members as SLURM array {array}, job name "
                      f"{executor.parameters.get('name', sweep_dir.name)}, {parallel} at a time"
                      + (" (--jobs sets how many)" if parallel < len(subs) else ""), highlight=False)
        logs = f"{folder}/{array}_<task>_0_log.out" if len(subs) > 1 else str(subs[0].paths.stdout)
        console.print(f"member logs: {logs}; which task is which member: {sweep_dir / JOBS_FILE}", highlight=False,
                      soft_wrap=True)
        windows = f"{timeouts + 1} windows of {c.timeout_min} min" if c.timeout_min else f"{timeouts + 1} time limits"
        console.print(f"a member that reaches its time limit is requeued and resumes, {timeouts} times at most "
                      f"({windows}; sweep.submitit.slurm_max_num_timeout)", highlight=False)
    _wait(held + list(zip(todo_new, subs)), done, console)


def _sbatch_reason(error: BaseException, echoed: str) -> str:
    text = f"{echoed}\n{error}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[-1] if lines else type(error).__name__


def _wait(jobs: list, done, console) -> None:
    """Poll until every job has ended; counts are printed as they change. Ctrl-C (or SIGTERM) leaves
    the jobs to SLURM and says how to wait for them again or cancel them."""
    remaining = dict(enumerate(jobs))  # {index: (job, submitit job)}
    finished = failed = 0
    last, named = None, set()
    try:
        while remaining:
            in_queue = queue()
            for key, (job, sub) in list(remaining.items()):
                state = in_queue.get(str(sub.job_id), (None,))[0]
                if not sub.paths.result_pickle.exists():
                    if state is not None:
                        continue
                    state = final_state(str(sub.job_id))
                    if state is None or state in LIVE or sub.paths.result_pickle.exists():
                        if not sub.paths.result_pickle.exists():
                            continue  # accounting lags the queue a moment
                error = _outcome(sub, state)
                del remaining[key]
                finished, failed = finished + (error is None), failed + (error is not None)
                done(job, error)
            states = [in_queue.get(str(sub.job_id), ("",))[0] for _, sub in remaining.values()]
            counts = (sum(s_ in ("PENDING", "REQUEUED", "REQUEUE_HOLD") for s_ in states),
                      sum(s_ == "RUNNING" for s_ in states), finished, failed)
            if counts != last and remaining:
                console.print(f"SLURM: {counts[0]} pending, {counts[1]} running, {counts[2]} done, {counts[3]} failed",
                              highlight=False)
                last = counts
            for job, sub in remaining.values():
                state, reason = in_queue.get(str(sub.job_id), ("", ""))
                if state == "PENDING" and reason in NEVER and sub.job_id not in named:
                    named.add(sub.job_id)
                    console.print(f"[yellow]SLURM job {sub.job_id} ({job.run_dir.name}) is pending with reason "
                                  f"{reason}: SLURM will not start it as asked (scancel {sub.job_id}, then change "
                                  f"sweep.submitit)[/yellow]", highlight=False)
            if remaining:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        arrays = sorted({str(sub.job_id).split("_")[0] for _, sub in remaining.values()})
        raise Interrupted(f"stopped waiting; the {len(remaining)} unfinished members keep running in SLURM "
                          f"(array {', '.join(arrays)}): run the same command again to wait for them (nothing "
                          f"is submitted twice), or cancel them with: scancel {' '.join(arrays)}") from None


def _outcome(sub, state: str | None, slurm: bool = True) -> MemberFailed | None:
    """None for a member that returned; otherwise its cause, SLURM's state and the log, in one line."""
    try:
        if slurm and not sub.paths.result_pickle.exists():  # killed, out of memory, cancelled: no result
            raise RuntimeError(f"SLURM job {sub.job_id} ended without a result")
        sub.result()
        return None
    except Exception as e:  # noqa: BLE001
        if slurm:
            state = state or final_state(str(sub.job_id)) or "UNKNOWN"
        where = f"SLURM {state}" if slurm else "local process"
        failure = MemberFailed(f"{cause(e, state or 'no result')} ({where}; log {sub.paths.stdout})")
        failure.__cause__ = e
        return failure


def cause(error: BaseException, state: str) -> str:
    """The exception's last line in the member (a UserError's or submitit's message alone), or the
    SLURM state when the job ended without a result."""
    text = str(error)
    trace = re.search(r"with trace:\n-+\n(.*?)\n-+\n", text, re.S)
    if trace is None:
        return f"ended without a result, {state}"
    lines = [line for line in trace.group(1).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "failed"
    name, sep, message = last.partition(": ")
    if sep and re.fullmatch(r"[\w.]+", name):
        short = name.rsplit(".", 1)[-1]
        if short in ("UncompletedJobError", *_user_error_names()):
            if "timed-out too many times" in message:
                message += " (more time: raise sweep.submitit.timeout_min or slurm_max_num_timeout)"
            return message
        return f"{short}: {message}"
    return last


def _user_error_names(kind: type = UserError) -> set[str]:
    """UserError and its kinds (MemberError, ...): their message alone says what went wrong."""
    return {kind.__name__}.union(*(_user_error_names(sub) for sub in kind.__subclasses__()))


def _local(todo: list[Job], done, executor, n_jobs: int, console) -> None:
    """sweep.submitit.cluster=local: processes on this machine, --jobs at a time."""
    console.print(f"submitit's local executor: members run as processes on this machine, {n_jobs} at a time",
                  highlight=False)
    waiting, running = list(enumerate(todo)), {}  # running: {index: (job, submitit job)}
    try:
        while waiting or running:
            while waiting and len(running) < n_jobs:
                key, job = waiting.pop(0)
                running[key] = job, executor.submit(MemberJob(), job, None)
            for key, (job, sub) in list(running.items()):
                if sub.done():
                    del running[key]
                    error = _outcome(sub, None, slurm=False)
                    done(job, error)
            if running:
                time.sleep(0.5)
    except KeyboardInterrupt:
        for _, sub in running.values():
            sub.cancel(check=False)
        raise
