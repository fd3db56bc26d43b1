"""The pool launcher: --jobs worker processes on this machine, each training one member at a time.

Every worker is a spawned process with a pipe of its own: the sweep hands it a member, it answers
with the outcome and gets the next. So the sweep knows its workers and what each is doing, and:

- SIGTERM or Ctrl-C to the sweep stops it within an epoch: every worker gets SIGTERM and stops as a
  single run does on Ctrl-C (its checkpoint holds its last whole epoch), queued members never start,
  and the sweep gathers what there is (sweep.run) and exits 130. A second Ctrl-C kills the workers.
- Workers die with the sweep, even when it is killed with SIGKILL: on Linux the kernel sends a
  worker SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG); a thread watching the parent's pid
  does the same elsewhere, and ends a worker that has not stopped ORPHAN_GRACE_SECONDS later.
- A worker that dies (the out-of-memory killer, a segfault) fails its member alone; a fresh worker
  takes its place for the members still queued.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from widen_cli.errors import Interrupted

ORPHAN_GRACE_SECONDS = 60.0  # a worker whose sweep died and that has not stopped by then is ended
WATCH_SECONDS = 1.0  # how often a worker checks that its sweep is alive
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def gpu_of(slot: int, gpus: int) -> str | None:
    """The GPU worker `slot` trains on: GPU slot mod `gpus` among those visible here
    (CUDA_VISIBLE_DEVICES), so --jobs equal to the GPU count gives each member a GPU of its own.
    None when there are none to share out (device cpu, or a fixed cuda:N)."""
    if not gpus:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
    return ids[slot % len(ids)]


class WorkerTraceback(Exception):
    """A worker's traceback, chained to the error it sent back: error.txt shows where it was raised."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


# ---------------------------------------------------------------- in the worker

def _die_with(parent: int) -> None:
    """SIGTERM when the sweep dies: from the kernel (Linux), and from a thread watching its pid."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watching thread still does it
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="watch sweep").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # stop as on SIGTERM, the last epoch saved
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(1)


def _stop_on_signals() -> None:
    """The first SIGINT or SIGTERM stops the member in training (KeyboardInterrupt); later ones are
    ignored, so a Ctrl-C that reaches the worker and the sweep's SIGTERM stop it once, cleanly."""
    seen = []

    def handler(signum, frame):
        if not seen:
            seen.append(signum)
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _portable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a RuntimeError saying what it was."""
    import pickle

    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - anything an exception's pickling may raise
        return RuntimeError(f"{type(error).__name__}: {error}")


def _worker(conn, parent: int, gpu: str | None, threads: int) -> None:
    """A worker's life: members from `conn` until None, each answered with its outcome."""
    _die_with(parent)
    _stop_on_signals()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts in this process
    try:
        while True:
            item = conn.recv()
            if item is None:
                return
            run_member, job = item  # run_member: the sweep's (pool never imports sweep: no cycle)
            try:
                run_member(job, threads)
                outcome = ("finished",)
            except KeyboardInterrupt as e:
                outcome = ("interrupted", str(e))
            except Exception as e:  # noqa: BLE001 - the sweep records it as the member's failure
                outcome = ("failed", _portable(e), traceback.format_exc())
            conn.send(outcome)
            if outcome[0] == "interrupted":
                return
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the sweep is gone, or stopped while this worker was between members


# ---------------------------------------------------------------- in the sweep

@dataclass
class Worker:
    process: object
    conn: object
    slot: int
    job: object = None  # the member it trains now


def launch(todo: list, done, n_jobs: int, threads: int, gpus: int, console, run_member) -> None:
    """Train `todo` on up to `n_jobs` workers with `threads` CPU threads each, each member by
    run_member(job, threads) (a top-level function: it is pickled); done(job[, error]) as each
    member ends. Interrupted (after the running members have stopped) on SIGTERM or Ctrl-C."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    queue = deque(todo)
    workers: list[Worker] = []
    stopped: list[str] = []  # what each interrupted member saved, as its worker said

    def start(slot: int) -> None:
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, os.getpid(), gpu_of(slot, gpus), threads),
                                  name=f"widen pool worker {slot}")
        process.start()
        theirs.close()
        worker = Worker(process, ours, slot)
        workers.append(worker)
        give(worker)

    def give(worker: Worker) -> None:
        worker.job = queue.popleft() if queue else None
        try:
            worker.conn.send(None if worker.job is None else (run_member, worker.job))
        except OSError:
            pass  # it died: its sentinel says so next

    def settle(stopping: bool) -> None:
        """Wait until some worker answers or ends, and act on it."""
        from multiprocessing.connection import wait

        ready = set(wait([w.conn for w in workers] + [w.process.sentinel for w in workers]))
        for worker in list(workers):
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            try:
                outcome = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                outcome = None
            job, worker.job = worker.job, None
            if outcome is None:  # it ended without an answer
                worker.process.join()
                workers.remove(worker)
                worker.conn.close()
                code = worker.process.exitcode
                if job is not None and stopping:
                    stopped.append(f"{job.run_dir.name} stopped ({_death(code)})")
                elif job is not None:
                    done(job, RuntimeError(f"its worker process died ({_death(code)})"))
                if queue:
                    start(worker.slot)
            elif outcome[0] == "finished":
                done(job)
            elif outcome[0] == "failed":
                error = outcome[1]
                error.__cause__ = WorkerTraceback(outcome[2])
                done(job, error)
            elif stopping:
                stopped.append(outcome[1])
            else:  # a signal to this worker alone stopped it: it has ended, and a fresh one takes its place
                done(job, RuntimeError(f"its worker process was stopped by a signal ({outcome[1]})"))
            if outcome is not None and outcome[0] != "interrupted":
                give(worker)  # the next member, or None once the queue is empty (or cleared: stopping)

    try:
        for slot in range(min(n_jobs, len(queue))):
            start(slot)
        while workers:
            settle(stopping=False)
    except KeyboardInterrupt:
        queued = len(queue)
        queue.clear()
        for w in workers:
            _signal(w, signal.SIGTERM)
        running = sum(w.job is not None for w in workers)
        console.print(f"stopping: {running} running member{'s' if running != 1 else ''} save their last epoch and "
                      f"stop; {queued} queued will not start (Ctrl-C again to kill them now)", highlight=False)
        while workers:
            try:
                settle(stopping=True)
            except KeyboardInterrupt:
                for w in workers:
                    _signal(w, signal.SIGKILL)
        for line in stopped:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise Interrupted(f"interrupted: {len(stopped)} member{'s' if len(stopped) != 1 else ''} stopped, their "
                          f"finished epochs saved, and {queued} did not start; results.parquet lists them as "
                          f"interrupted; run the same command again to resume") from None
    finally:
        for w in workers:  # only after an error of the sweep's own: nothing may outlive it
            _signal(w, signal.SIGKILL)
            w.process.join()


def _signal(worker: Worker, sig: int) -> None:
    try:
        os.kill(worker.process.pid, sig)
    except (ProcessLookupError, TypeError):
        pass


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"
