"""Claims: a run folder is trained by one process at a time, even when two identical commands start
together (a double submit on a cluster).

A process claims a run before training it by creating the folder's claim file with O_EXCL, which only
one creator can win. The file holds the claimant's pid and host and a heartbeat time, refreshed by a
background thread while the claim is held. A claim is stale, and may be taken over, when its process
is gone: on the same host its pid is dead; anywhere, its heartbeat is older than `stale_seconds()`;
and at once when it was written by an earlier run of this very SLURM job (requeued or pre-empted: the
earlier run was killed, and a SLURM job never runs twice at the same time).
The claim file is removed when the run finishes, fails or is interrupted.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from widen_cli import results
from widen_cli.errors import UserError

HEARTBEAT_SECONDS = 30.0  # how often a held claim's heartbeat is refreshed
STALE_SECONDS = 600.0  # a heartbeat older than this (plus $WIDEN_CLAIM_TIMEOUT) marks a stale claim
TIMEOUT_ENV = "WIDEN_CLAIM_TIMEOUT"


def stale_seconds() -> float:
    """10 minutes, plus $WIDEN_CLAIM_TIMEOUT seconds (for file systems or clocks that lag)."""
    extra = os.environ.get(TIMEOUT_ENV, "").strip() or "0"
    try:
        seconds = float(extra)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):  # negative: live claims would look stale and be taken
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds >= 0, got {extra!r}")
    return STALE_SECONDS + seconds


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its file says."""

    pid: int
    host: str
    heartbeat: float  # time.time() of the holder's last refresh
    slurm_job: str | None = None  # "job/restart count" of the SLURM job that wrote it, when it ran in one

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"

    @property
    def stale(self) -> bool:
        if self.host == socket.gethostname() and (self.pid == os.getpid() or not _alive(self.pid)):
            return True  # a dead process here (or a leftover of this very process)
        mine = slurm_job()
        if self.slurm_job and mine and self.slurm_job != mine \
                and self.slurm_job.split("/")[0] == mine.split("/")[0]:
            return True  # left by an earlier run of this SLURM job (it was requeued or pre-empted)
        return time.time() - self.heartbeat > stale_seconds()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def slurm_job() -> str | None:
    """This process's SLURM job and how often it was restarted, "123_4/1" (array job 123, task 4, first
    requeue); None outside SLURM. A requeued job keeps its id and counts up its restarts."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID")
    return f"{job}/{env.get('SLURM_RESTART_COUNT') or 0}" if job else None


def _me() -> dict:
    me = dict(pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
    return {**me, "slurm_job": slurm_job()} if slurm_job() else me


def read(path: Path) -> Holder | None:
    """The claim at `path`; None when there is none. A file being written (empty) counts as fresh."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        job = data.get("slurm_job")
        return Holder(int(data["pid"]), str(data["host"]), float(data["heartbeat"]), str(job) if job else None)
    except (ValueError, KeyError, TypeError):
        return Holder(-1, "?", mtime)  # just created, content not written yet: judge by its age


class Claim:
    """A claim this process holds; `release()` removes it (safe to call twice)."""

    def __init__(self, path: Path):
        self.path = path
        _heartbeats.add(self)

    def refresh(self) -> None:
        results.write_text(json.dumps(_me()), self.path)

    def release(self) -> None:
        if _heartbeats.discard(self):
            self.path.unlink(missing_ok=True)


def acquire(run_dir: Path) -> Claim | Holder:
    """Claim the run in `run_dir` (created if missing): our Claim, or the live Holder of someone else's.
    A stale claim is taken over."""
    path = Path(run_dir) / results.CLAIM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read(path)
            if holder is None:
                continue  # released meanwhile: try again
            if not holder.stale:
                return holder
            _remove_stale(path, holder)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(_me()))
        return Claim(path)


def _remove_stale(path: Path, holder: Holder) -> None:
    """Remove the stale claim `holder`, and only it: it is moved aside first and checked, so that a
    fresh claim another process made meanwhile is put back rather than deleted."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if read(aside) != holder:
        try:
            os.link(aside, path)  # not ours to remove; fails if a third claim exists already
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


class _Heartbeats:
    """One daemon thread refreshes every claim this process holds."""

    def __init__(self):
        self.held: set[Claim] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, claim: Claim) -> None:
        with self.lock:
            self.held.add(claim)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="widen-claims", daemon=True)
                self.thread.start()

    def discard(self, claim: Claim) -> bool:
        with self.lock:
            held = claim in self.held
            self.held.discard(claim)
            return held

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            with self.lock:
                for claim in list(self.held):
                    try:
                        claim.refresh()
                    except OSError:
                        pass  # a full or vanished disk: the training will say so


_heartbeats = _Heartbeats()
