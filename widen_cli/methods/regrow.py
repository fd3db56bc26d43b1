"""Learned connectivity: masks that drop and regrow weights during training (SET and RigL).

- `set` (Mocanu et al. 2018): at the end of every epoch but the last, each sparse layer drops the
  fraction zeta of its kept weights with the smallest magnitude and regrows as many at random positions
  that were empty before the update (never at a just-dropped or kept one).
- `rigl` (Evci et al. 2020): every delta_t steps while the step is before t_end (a fraction of all
  steps), each sparse layer drops the fraction alpha/2 * (1 + cos(pi t / T_end)) of its kept weights with
  the smallest magnitude and regrows as many where the dense gradient's magnitude is largest among the
  positions not kept after the drop. As in google-research/rigl (`_get_update_op`), a just-dropped
  position may be regrown at once; it then keeps its weight and momentum, as if never dropped.

A layer drops floor(fraction * kept) weights (rigl's rounding) and regrows exactly as many, so it holds
its count after every update. A regrown weight at a position that was empty starts at zero, with zero
momentum (SGD's `momentum_buffer`) and zero gradient for the step that follows the update, so it is
still exactly zero after that step, as in rigl (whose update steps apply no gradient). Ties in
magnitude or gradient are broken in a random order; every update draws from its own generator, seeded
from the run's seed and the update's index, so a run's masks depend on its seed alone and a resumed
run needs only the update counter (`state_dict`).

The dense gradient: `Masks` (sparsity.py) re-zeroes masked weights after each optimiser step and
leaves the gradients unmasked, so after loss.backward() every weight's .grad is the dense gradient.
Only layers in the `Masks` change; biases, BatchNorm and layers left out (a dense classifier) never
do, and a layer whose mask is full (or empty) is skipped.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch
from torch import nn

from widen_cli.errors import UserError
from widen_cli.sparsity import Masks

KINDS = ("set", "rigl")
# As published: SET's zeta; RigL's alpha, delta_t (steps) and t_end (a fraction of training).
DEFAULTS = {"set": {"zeta": 0.3}, "rigl": {"alpha": 0.3, "delta_t": 100, "t_end": 0.75}}


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _option(options, name):
    return options.get(name) if isinstance(options, Mapping) else getattr(options, name, None)


def check_options(kind: str, options=None) -> dict:
    """The method's options (a mapping or an object with the option attributes; missing or None: the
    published default), refused with a UserError naming the option (`method.zeta`) if out of range."""
    if kind not in KINDS:
        raise UserError(f"unknown mask update {kind!r}; valid: {', '.join(KINDS)}")
    resolved = {}
    for name, default in DEFAULTS[kind].items():
        value = _option(options, name) if options is not None else None
        resolved[name] = default if value is None else value
    if options is not None and _option(options, "within") == "io":
        raise UserError(f"method.within=io keeps whole kernels, and {kind} moves single weights: use "
                        f"method.within=all with {kind}")
    for name in ("zeta", "alpha"):
        if name in resolved and not (_real(resolved[name]) and 0 < resolved[name] < 1):
            raise UserError(f"method.{name} must be a number in (0, 1), the fraction of kept weights an update "
                            f"drops; got {resolved[name]!r}")
    delta_t = resolved.get("delta_t", 1)
    if not (isinstance(delta_t, int) and not isinstance(delta_t, bool) and delta_t >= 1):
        raise UserError(f"method.delta_t must be a whole number of steps >= 1; got {resolved['delta_t']!r}")
    if "t_end" in resolved and not (_real(resolved["t_end"]) and 0 < resolved["t_end"] <= 1):
        raise UserError(f"method.t_end must be a number in (0, 1], the fraction of training after which the "
                        f"mask stays fixed; got {resolved['t_end']!r}")
    return resolved


def update_seed(seed: int, index: int) -> int:
    """The seed of update `index` of a run seeded `seed` (a stable hash: the same on every machine)."""
    digest = hashlib.blake2b(f"widen-regrow:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _smallest(scores: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Indices into `scores` of its k smallest values, ties broken in a random order drawn from `gen`."""
    perm = torch.randperm(len(scores), generator=gen).to(scores.device)
    return perm[torch.argsort(scores[perm], stable=True)[:k]]


@torch.no_grad()
def update_layer(weight: torch.Tensor, mask: torch.Tensor, fraction: float, kind: str, gen: torch.Generator,
                 grad: torch.Tensor | None = None, momentum: torch.Tensor | None = None) -> int:
    """Drop and regrow in one layer, in place: `mask` (any dtype, nonzero = kept), the weight (dropped and
    regrown positions zeroed), the gradient and momentum (zeroed at regrown positions). `grad`: the dense
    gradient (RigL's growth score). Returns the number of positions newly kept."""
    old = (mask != 0).reshape(-1)
    kept = old.nonzero().squeeze(1)
    total = old.numel()
    n = int(len(kept) * fraction)
    if kind == "set":
        n = min(n, total - len(kept))  # SET grows only at positions empty before the update
    if n == 0 or len(kept) == total:
        return 0
    drop = kept[_smallest(weight.detach().abs().reshape(-1)[kept], n, gen)]
    new = old.clone()
    new[drop] = False
    if kind == "set":
        empty = (~old).nonzero().squeeze(1)
        grow = empty[torch.randperm(len(empty), generator=gen)[:n].to(empty.device)]
    else:
        if grad is None:
            raise RuntimeError("rigl needs the weights' gradients: call after_backward after loss.backward()")
        free = (~new).nonzero().squeeze(1)
        grow = free[_smallest(-grad.abs().reshape(-1)[free], n, gen)]
    new[grow] = True
    new, old = new.view(mask.shape), old.view(mask.shape)
    born = new & ~old
    weight.masked_fill_(born | (old & ~new), 0)
    for t in (grad, momentum):
        if t is not None:
            t.masked_fill_(born, 0)
    mask.copy_(new)
    return int(born.sum())


class Updater:
    """Updates a run's `Masks` during training. Call `after_backward(step)` at every step, after
    loss.backward() and before optimizer.step() (then `masks.apply_()` after the step, as for static
    masks); `step` counts the run's optimiser steps from 0 (epoch * steps_per_epoch + batch index)."""

    def __init__(self, masks: Masks, model: nn.Module, optimizer: torch.optim.Optimizer, kind: str, options,
                 steps_per_epoch: int, epochs: int, seed: int):
        self.options = check_options(kind, options)
        self.kind, self.masks, self.model, self.optimizer = kind, masks, model, optimizer
        self.steps_per_epoch, self.epochs, self.seed = steps_per_epoch, epochs, seed
        total = steps_per_epoch * epochs
        self.end = self.options["t_end"] * total if kind == "rigl" else None
        # Layers an update can change: masks neither full nor empty.
        self.layers = [i for i, m in enumerate(masks.masks) if 0 < int((m != 0).sum()) < m.numel()]
        self.kept = sum(int((masks.masks[i] != 0).sum()) for i in self.layers)
        self.initial = {masks.names[i]: (masks.masks[i] != 0).cpu() for i in self.layers}
        self.updates = 0
        self.changed: dict[int, float] = {}  # epoch (from 1) -> fraction of the kept positions newly kept in it

    def fraction(self, step: int) -> float | None:
        """The fraction of kept weights dropped at `step`; None: no update at that step."""
        if self.kind == "set":
            last_of_epoch = (step + 1) % self.steps_per_epoch == 0
            epoch = step // self.steps_per_epoch
            return self.options["zeta"] if last_of_epoch and epoch < self.epochs - 1 else None
        if step == 0 or step % self.options["delta_t"] or step >= self.end:
            return None
        return self.options["alpha"] / 2 * (1 + math.cos(math.pi * step / self.end))

    def after_backward(self, step: int) -> None:
        fraction = self.fraction(step)
        if fraction is None or not self.layers:
            return
        gen = torch.Generator().manual_seed(update_seed(self.seed, self.updates))
        born = 0
        for i in self.layers:
            w = self.masks.weights[i]
            momentum = self.optimizer.state.get(w, {}).get("momentum_buffer")
            born += update_layer(w, self.masks.masks[i], fraction, self.kind, gen, w.grad, momentum)
        epoch = step // self.steps_per_epoch + 1  # numbered from 1, as metrics rows are
        self.changed[epoch] = self.changed.get(epoch, 0.0) + born / self.kept
        self.updates += 1

    def kept_from_initial(self) -> float:
        """The fraction of the initially kept positions (in the layers that change) still kept."""
        if not self.kept:
            return 1.0
        still = sum(int(((self.masks.masks[i] != 0).cpu() & self.initial[self.masks.names[i]]).sum())
                    for i in self.layers)
        return still / self.kept

    def log(self) -> dict:
        """`mask_changed`: epoch (from 1, as metrics rows) -> the fraction of kept positions newly kept by
        that epoch's updates (summed over them; epochs without an update absent); the totals
        `mask_updates` and `mask_kept_initial` (the fraction of the initial kept positions still kept)."""
        return {"mask_changed": dict(self.changed), "mask_updates": self.updates,
                "mask_kept_initial": self.kept_from_initial()}

    def state_dict(self) -> dict:
        """What resuming needs besides the current masks (the checkpoint's `masks`) and the step."""
        return {"kind": self.kind, "options": dict(self.options), "updates": self.updates,
                "changed": dict(self.changed), "initial": dict(self.initial)}

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] != self.kind or state["options"] != self.options:
            raise ValueError(f"saved mask updates are {state['kind']} {state['options']}, "
                             f"this run's {self.kind} {self.options}")
        shapes = {n: tuple(m.shape) for n, m in self.initial.items()}
        if {n: tuple(m.shape) for n, m in state["initial"].items()} != shapes:
            raise ValueError("saved initial masks do not fit this run's layers")
        self.updates, self.changed = int(state["updates"]), {int(k): float(v) for k, v in state["changed"].items()}
        self.initial = {n: m.bool().cpu() for n, m in state["initial"].items()}
