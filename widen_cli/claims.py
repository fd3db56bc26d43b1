"""Claims: a run folder is trained by one process at a time, even when two identical commands start
together (a double submit on a cluster).

A process claims a run before training it by creating the folder's claim file (a hard link, which
fails where the name exists, so only one creator can win). The file holds the claimant's pid and host,
a token unique to the claim and a heartbeat time, refreshed by a background thread while the claim is
held. A claim is stale, and may be taken over, when its process is gone: on the same host its pid is
dead; anywhere, its heartbeat is older than `stale_seconds()`; and at once when it was written by an
earlier run of this very SLURM job (requeued or pre-empted: the earlier run was killed, and a SLURM job
never runs twice at the same time). The claim file is removed when the run finishes, fails or is
interrupted.

A claim file is only ever created or replaced whole (written to a temporary name, then linked or
renamed into place), so no reader sees one half-written: an empty or garbled claim file was left by a
crash (or a damaged disk) and is stale at once. A holder that was paused past the stale time (SIGSTOP,
a frozen node) may have been taken over meanwhile: `Claim.check()` (before each write to the run
folder, and again just before its rename) and the heartbeat notice that the file names someone else,
and the holder stops (`ClaimLost`) without writing or removing anything of the new holder's.
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from widen_cli import results
from widen_cli.errors import MemberError, UserError

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


class ClaimLost(MemberError):
    """Another process took over a run this process was training (this one was paused past the stale time)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its file says."""

    pid: int
    host: str
    heartbeat: float  # time.time() of the holder's last refresh
    token: str = ""  # unique per claim: tells a holder its own claim from a later one of the same pid
    garbled: bool = False  # empty or unreadable: left by a crash, never by a live holder
    slurm_job: str | None = None  # "job/restart count" of the SLURM job that wrote it, when it ran in one

    def __str__(self) -> str:
        return "an unreadable claim file" if self.garbled else f"pid {self.pid} on {self.host}"

    @property
    def stale(self) -> bool:
        if self.garbled:
            return True
        if self.host == socket.gethostname() and (self.pid == os.getpid() or not results.pid_alive(self.pid)):
            return True  # a dead process here (or a leftover of this very process)
        mine = slurm_job()
        if self.slurm_job and mine and self.slurm_job != mine \
                and self.slurm_job.split("/")[0] == mine.split("/")[0]:
            return True  # left by an earlier run of this SLURM job (it was requeued or pre-empted)
        return time.time() - self.heartbeat > stale_seconds()


def slurm_job() -> str | None:
    """This process's SLURM job and how often it was restarted, "123_4/1" (array job 123, task 4, first
    requeue); None outside SLURM. A requeued job keeps its id and counts up its restarts."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job = env.get("SLURM_JOB_ID")
    return f"{job}/{env.get('SLURM_RESTART_COUNT') or 0}" if job else None


def _me(token: str) -> str:
    me = dict(pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time(), token=token)
    return json.dumps({**me, "slurm_job": slurm_job()} if slurm_job() else me)


def read(path: Path) -> Holder | None:
    """The claim at `path`; None when there is none. Claim files are written whole (see the module
    docstring), so an empty or garbled one is a crash's leftover: `garbled`, and stale."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return Holder(-1, "?", 0.0, garbled=True)
    try:
        data = json.loads(text)
        job = data.get("slurm_job")
        return Holder(int(data["pid"]), str(data["host"]), float(data["heartbeat"]), str(data.get("token", "")),
                      slurm_job=str(job) if job else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Holder(-1, "?", mtime, garbled=True)


class Claim:
    """A claim this process holds; `release()` removes it (safe to call twice), unless it was lost."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token
        self.lost: Holder | None = None  # who holds the run instead, once the heartbeat saw it lost
        _heartbeats.add(self)

    def owned(self) -> bool:
        holder = read(self.path)
        return holder is not None and not holder.garbled and holder.token == self.token \
            and holder.pid == os.getpid() and holder.host == socket.gethostname()

    def check(self) -> None:
        """Raise ClaimLost when the claim file no longer names this claim: another process took the run
        over while this one was paused (or the file was removed by hand)."""
        if self.lost is None and self.owned():
            return
        _heartbeats.discard(self)
        holder = read(self.path)
        who = f"{holder}" if holder is not None else "another process (it has finished or stopped since)"
        raise ClaimLost(f"another process took over {self.path.parent} while this one was paused past the stale "
                        f"time ({who} holds it now); this process stops without writing to it")

    def refresh(self) -> bool:
        """A new heartbeat; False (nothing written) when the claim was lost."""
        if not self.owned():  # never overwrite the claim of a process that took the run over
            self.lost = read(self.path) or Holder(-1, "?", 0.0)
            return False
        results.write_text(_me(self.token), self.path)
        return True

    def release(self) -> None:
        if _heartbeats.discard(self) and self.lost is None:
            _remove_if(self.path, lambda holder: holder is not None and holder.token == self.token)


def acquire(run_dir: Path) -> Claim | Holder:
    """Claim the run in `run_dir` (created if missing): our Claim, or the live Holder of someone else's.
    A stale claim is taken over."""
    path = Path(run_dir) / results.CLAIM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    while True:
        if results.create_new(path, _me(token)):
            return Claim(path, token)
        holder = read(path)
        if holder is None:
            continue  # released meanwhile: try again
        if not holder.stale:
            return holder
        _remove_if(path, lambda now: now == holder)


def remove_stale(run_dir: Path) -> None:
    """Remove the run's claim file if its holder is gone (a kill left it)."""
    path = Path(run_dir) / results.CLAIM_FILE
    holder = read(path)
    if holder is not None and holder.stale:
        _remove_if(path, lambda now: now == holder)


def _remove_if(path: Path, mine) -> None:
    """Remove the claim file if mine(its holder): it is moved aside first and checked, so that a claim
    another process made meanwhile is put back rather than deleted."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if not mine(read(aside)):
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
                        if not claim.refresh():
                            self.held.discard(claim)  # lost: check() says so before the next write
                    except OSError:
                        pass  # a full or vanished disk: the training will say so


_heartbeats = _Heartbeats()
