"""End-of-epoch checkpoints: everything a run needs to go on exactly where it stopped.

A checkpoint holds the model, optimiser and scheduler states, the masks, the RNG states, the CPU
thread count, the last complete epoch and the metrics rows so far. It is written to a temporary name and renamed, so a
kill at any moment leaves the previous checkpoint intact, and read with `weights_only=True`, so a
foreign file can never run code. The data order needs no state: each epoch's is drawn from
(seed, epoch) (data.epoch_seed).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from widen_cli import results
from widen_cli.errors import UserError

FILENAME = results.CHECKPOINT_FILE
FORMAT = "widen-checkpoint/1"


def save(path: Path, *, identity: dict, epoch: int, rows: list[dict], elapsed: float, model: torch.nn.Module,
         optimizer, scheduler, masks: dict[str, torch.Tensor] | None, batched: bool = False) -> None:
    """`batched`: a batched family's stacked model wrote it (the member resumes in one again, family.py)."""
    state = dict(
        format=FORMAT, identity=json.dumps(identity, sort_keys=True), epoch=epoch, rows=rows, elapsed=elapsed,
        batched=batched,
        model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        masks=masks, threads=torch.get_num_threads(), rng=dict(torch=torch.get_rng_state(),
                              cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
    )
    results.atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> dict | None:
    """The checkpoint at `path` (None if there is none); anything unreadable is a UserError that says
    how to start over. Whose run it is (its `identity`) the caller checks (lifecycle.py)."""
    if not path.exists():
        return None
    restart = "pass --restart to discard it and start the run over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle refused by weights_only, not a torch file, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path} ({reason[:200]}); {restart}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a widen checkpoint; {restart}")
    return state


def restore(state: dict, model: torch.nn.Module, optimizer, scheduler) -> None:
    """Put model, optimiser, scheduler and RNGs back as they were at the end of the saved epoch."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and len(state["rng"]["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def discard(run_dir: Path) -> None:
    """--restart: forget an unfinished run's progress (its checkpoint and partial metrics)."""
    for name in (FILENAME, results.METRICS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files left by a process killed while writing (a checkpoint's can be large)."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
