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
from widen_cli.errors import MemberError

FILENAME = results.CHECKPOINT_FILE
FORMAT = "widen-checkpoint/1"


def save(path: Path, *, identity: dict, epoch: int, rows: list[dict], elapsed: float, model: torch.nn.Module,
         optimizer, scheduler, masks: dict[str, torch.Tensor] | None, batched: bool = False, check=None) -> None:
    """`batched`: a batched family's stacked model wrote it (the member resumes in one again, stacked_training.py).
    check: as for results.atomic_write."""
    state = dict(
        format=FORMAT, identity=json.dumps(identity, sort_keys=True), epoch=epoch, rows=rows, elapsed=elapsed,
        batched=batched,
        model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        masks=masks, threads=torch.get_num_threads(), rng=dict(torch=torch.get_rng_state(),
                              cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
    )
    results.atomic_write(path, lambda tmp: torch.save(state, tmp), check)


RESTART = "pass --restart to discard it and start the run over"
# What a checkpoint holds, and of which type (a file that lacks any of it is refused, not half-used).
FIELDS = dict(identity=str, epoch=int, rows=list, elapsed=(int, float), model=dict, optimizer=dict,
              scheduler=dict, masks=(dict, type(None)), threads=(int, type(None)), rng=dict)


def load(path: Path) -> dict | None:
    """The checkpoint at `path` (None if there is none); anything unreadable, or lacking what a checkpoint
    holds, is a MemberError that says how to start over. Whose run it is (its `identity`) the caller
    checks (lifecycle.py), then its epoch (check_epoch)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle refused by weights_only, not a torch file, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MemberError(f"cannot read checkpoint {path} ({reason[:200]}); {RESTART}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MemberError(f"{path} is not a widen checkpoint; {RESTART}")
    wrong = [k for k, t in FIELDS.items() if not isinstance(state.get(k), t)]
    if wrong or not isinstance(state["rng"].get("torch"), torch.Tensor):
        raise MemberError(f"checkpoint {path} is damaged (missing or wrong: {', '.join(wrong) or 'rng'}); {RESTART}")
    return state


def check_epoch(state: dict, epochs: int, path: Path) -> None:
    """Refuse a checkpoint of this run whose epoch is not one of its `epochs` (it would pass for finished)
    or does not match its metrics rows."""
    epoch = state["epoch"]
    if not 1 <= epoch <= epochs or len(state["rows"]) != epoch:
        raise MemberError(f"checkpoint {path} is damaged (it says epoch {epoch} with {len(state['rows'])} rows of "
                          f"metrics, in a run of {epochs} epochs); {RESTART}")


def check_fits(state: dict, model: torch.nn.Module, path: Path) -> None:
    """Refuse a checkpoint whose model state lacks keys of `model`, has others, or other shapes, or
    whose momentum buffers do not match the parameters (loading takes those on trust)."""
    saved = {k: tuple(getattr(v, "shape", ())) for k, v in state["model"].items()}
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    params = [tuple(p.shape) for p in model.parameters()]
    buffers = {k: tuple(getattr(v.get("momentum_buffer"), "shape", ())) for k, v in
               state["optimizer"].get("state", {}).items() if isinstance(v, dict) and v.get("momentum_buffer") is not None}
    momentum = sorted(str(k) for k, shape in buffers.items()
                      if not isinstance(k, int) or not 0 <= k < len(params) or params[k] != shape)
    if saved != wanted or momentum:
        missing, extra = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
        shapes = sorted(k for k in wanted.keys() & saved.keys() if wanted[k] != saved[k])
        what = "; ".join(f"{label}: {', '.join(keys[:5])}" for label, keys in
                         (("missing", missing), ("unexpected", extra), ("other shapes", shapes),
                          ("momentum of other shapes", momentum)) if keys)
        raise MemberError(f"checkpoint {path} does not fit this run's model ({what}); {RESTART}")


def restore(state: dict, model: torch.nn.Module, optimizer, scheduler, path: Path) -> None:
    """Put model, optimiser, scheduler and RNGs back as they were at the end of the saved epoch (after
    check_fits); a state that still does not fit them is a MemberError."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        reason = str(e).strip().replace("\n", " ").replace("\t", "")
        raise MemberError(f"checkpoint {path} does not fit this run's model ({reason[:300]}); {RESTART}") from None
    if torch.cuda.is_available() and len(state["rng"]["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def saved_masks(state: dict, expected: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's masks, refused unless they are bool masks of the run's layers and shapes."""
    masks = state["masks"]
    shapes = {n: (tuple(m.shape), m.dtype) for n, m in masks.items() if isinstance(m, torch.Tensor)}
    if shapes != {n: (tuple(m.shape), m.dtype) for n, m in expected.items()}:
        raise MemberError(f"checkpoint {path} holds masks that do not fit this run's layers; {RESTART}")
    return masks


def discard(run_dir: Path) -> None:
    """--restart: forget an unfinished run's progress (its checkpoint and partial metrics)."""
    for name in (FILENAME, results.METRICS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files left by a process killed while writing (a checkpoint's can be large)."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def tidy_finished(run_dir: Path) -> None:
    """A finished run keeps no checkpoint, temporaries or claim of a dead holder: a kill just after its
    summary was written leaves them (best effort: a read-only folder keeps them)."""
    from widen_cli import claims

    try:
        (run_dir / FILENAME).unlink(missing_ok=True)
        for tmp in results.stale_temporaries(run_dir, claims.stale_seconds()):
            tmp.unlink(missing_ok=True)
        claims.remove_stale(run_dir)
    except OSError:
        pass


def file_holds(path: Path, tensors: dict[str, torch.Tensor], exactly: bool) -> bool:
    """Whether the tensor file at `path` (masks.pt, weights-epoch0.pt) loads and holds `tensors`' keys and
    shapes (`exactly`: and values). False for a missing, truncated or garbled file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return isinstance(saved, dict) and saved.keys() == tensors.keys() and all(
            isinstance(saved[k], torch.Tensor) and saved[k].shape == v.shape and (not exactly or torch.equal(saved[k], v))
            for k, v in tensors.items())
    except Exception:  # noqa: BLE001 - whatever is wrong with it, it is written again
        return False
