"""`make bench` case `regrow`: what SET and RigL mask updates (widen_cli/methods/regrow.py) cost, on CPU or GPU.

1. A sparse MLP member at width 128, base width 8 (connectivity 1/16) on the built-in digits (1,437
   training images, the digits recipe's batch size): the cost of one update (ms, the median of those
   made while timing the epochs, timed in place: cold caches make them ~2x a repeated update) and of
   whole training epochs with each method's updates at its schedule against static `sparse` epochs (as
   ratios). SET updates once per epoch; RigL (delta_t 100 steps) once every few epochs on digits, so its
   epochs are timed over a whole schedule's span and reported per epoch.
2. The batched family path (widen_cli/stacked_training.py, models/stacked.py: each layer's kept weights and their
   index, built from the masks): `rebuild_stack` builds the stacked model and its optimiser's momentum
   again from new masks, as a batched SET/RigL family would after each update. Its cost against one
   stacked training step and one stacked epoch; and, for RigL, the dense gradient the stack does not
   compute (each member's plain MLP forward and backward on one batch).

Timings: the fastest of `rounds` rounds (the one least disturbed by other work on the machine).
    python bench/mask_updates.py [--device cpu] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's widen_cli, whatever is installed

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from widen_cli import hardware  # noqa: E402
from widen_cli import stacked_training as family  # noqa: E402 (the batched family path)
from widen_cli.budget import plan_member  # noqa: E402
from widen_cli.compose import load  # noqa: E402
from widen_cli.data import load_data  # noqa: E402
from widen_cli.datasets import spec_from_config  # noqa: E402
from widen_cli.models import build_model  # noqa: E402
from widen_cli.models.stacked import StackedMLP  # noqa: E402
from widen_cli.methods.regrow import Updater, update_layer  # noqa: E402
from widen_cli.sparsity import sparsify  # noqa: E402
from widen_cli.train import make_optimizer  # noqa: E402

DIGITS = ["dataset=digits", "model=mlp", "method=sparse", "method.distribution=staggered", "base_width=8", "seed=0"]
WIDTH, FAMILY_WIDTHS = 128, (8, 16, 32, 64, 128)


def _runs(device: str, widths):
    runs = [load([*DIGITS, f"width={w}", f"device={device}"])[1] for w in widths]
    spec = spec_from_config(runs[0].dataset)
    return runs, [plan_member(r.model, spec, r.base_width, r.width, r.method) for r in runs]


def _best(fn, rounds: int, device: torch.device, warm: bool = True) -> float:
    """Seconds of fn's fastest round, after one warm-up call (`warm`)."""
    if warm:
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _side_by_side(fns: dict, rounds: int, device: torch.device) -> dict:
    """Each fn's fastest round in seconds, the fns taking turns in rotating order (as bench.py times)."""
    names = list(fns)
    for fn in fns.values():
        fn()
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(_best(fns[n], 1, device, warm=False))
    return {n: min(t) for n, t in times.items()}


class Single:
    """One member trained alone, as `widen train` does, with `kind`'s updates (None: static sparse)."""

    def __init__(self, device: str, kind: str | None, epochs: int):
        [run], [member] = _runs(device, [WIDTH])
        self.device = hardware.resolve_device(device)
        self.loader, _, spec = load_data(run.dataset, run.optim.batch_size, self.device, run.seed)
        torch.manual_seed(run.seed)
        self.model = build_model(run.model, run.width, spec).to(self.device)
        self.masks = sparsify(self.model, member, run.seed)
        self.opt, _ = make_optimizer(self.model, run.optim)
        self.steps_per_epoch, self.epochs = len(self.loader), epochs
        self.update_times: list[float] = []
        self.updater = Updater(self.masks, self.model, self.opt, kind, None, len(self.loader), epochs, run.seed) \
            if kind else None

    def epochs_(self, first: int, n: int) -> None:
        """Epochs first .. first + n - 1 of the schedule."""
        self.model.train()
        for epoch in range(first, first + n):
            self.loader.set_epoch(epoch)
            for i, (x, y) in enumerate(self.loader):
                loss = F.cross_entropy(self.model(x), y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.updater is not None:
                    before, t0 = self.updater.updates, time.perf_counter()
                    self.updater.after_backward(epoch * self.steps_per_epoch + i)
                    if self.updater.updates > before:
                        self.update_times.append(time.perf_counter() - t0)
                self.opt.step()
                self.masks.apply_()
        float(loss.detach())

    def update_ms(self) -> float:
        """The median time of this object's updates so far, timed where training makes them (ms)."""
        return 1e3 * statistics.median(self.update_times)


def rebuild_stack(stack: family.Stack, opt: torch.optim.Optimizer, masks: list[dict[str, torch.Tensor]]):
    """The stacked model and a new optimiser with the same momentum, rebuilt for new masks: what a
    batched SET/RigL family needs after each update (the kept weights' index changes with the masks).
    Momentum at newly kept positions comes out zero; weights there zero (regrown from zero)."""
    model = stack.model
    n = model.n_members
    buffers = {name: opt.state[p]["momentum_buffer"] for name, p in model.named_parameters()
               if opt.state.get(p, {}).get("momentum_buffer") is not None}
    members = []
    for i in range(n):
        plain = build_model(stack.runs[i].model, stack.runs[i].width, stack.spec).to(model.layers[0].rows.device)
        plain.load_state_dict(model.member_state(i))
        members.append(plain)
    new = StackedMLP(members, masks, model.streams, model.n_streams, True).to(model.layers[0].rows.device)
    group = opt.param_groups[0]
    new_opt = torch.optim.SGD(new.parameters(), lr=group["lr"], momentum=group["momentum"],
                              weight_decay=group["weight_decay"])
    if buffers:
        momentum = new.stack_members([model.member_state(i, buffers) for i in range(n)])
        for name, p in new.named_parameters():
            new_opt.state[p]["momentum_buffer"] = momentum[name]
    return new, new_opt


def _stack(device: str):
    runs, members = _runs(device, FAMILY_WIDTHS)
    stack = family.build(runs, members)
    stack.runs = runs
    opt, _ = make_optimizer(stack.model, runs[0].optim)
    return stack, opt


def _stack_step(stack: family.Stack, opt, batches) -> None:
    x, y = family._inputs(batches, stack.model.streams)
    losses = family._losses(stack.model(x), y)
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()


def _set_masks(stack: family.Stack, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each member's masks after one SET update (zeta 0.3), from the stack's current weights."""
    out = []
    gen = torch.Generator().manual_seed(seed)
    for i in range(stack.model.n_members):
        state = stack.model.member_state(i)
        masks = {}
        for j, layer in enumerate(stack.model.layers):
            w = state[f"layers.{j}.weight"]
            m = stack.masks[i].state()[f"layers.{j}"].float()
            if m.sum() < m.numel():
                update_layer(w, m, 0.3, "set", gen)
            masks[f"layers.{j}"] = m.bool()
        out.append(masks)
    return out


def run(device_name: str = "cpu", rounds: int = 5) -> list[tuple]:
    """Rows for bench.py's table: (name, speeds, result, target, met)."""
    device = hardware.resolve_device(device_name)
    rows = []
    # 1. one member alone
    probe = Single(device_name, None, 1)
    spe = probe.steps_per_epoch
    span = -(-100 // spe) + 1  # epochs to cover one RigL update (delta_t 100)
    epochs = 4 * span
    variants = {kind: Single(device_name, kind, epochs) for kind in (None, "set", "rigl")}
    updates = {kind: sum(v.updater.fraction(t) is not None for t in range(span * spe))
               for kind, v in variants.items() if kind}
    per_epoch = _side_by_side({k: (lambda v=v: v.epochs_(0, span)) for k, v in variants.items()}, rounds, device)
    per_epoch = {k: t / span for k, t in per_epoch.items()}
    static = per_epoch[None]
    ms = {kind: variants[kind].update_ms() for kind in ("set", "rigl")}
    rows.append((f"7a. MLP width {WIDTH} (connectivity 1/16), digits, {spe} steps/epoch: one mask update, "
                 "SET vs RigL (ms)", f"{ms['set']:.2f} vs {ms['rigl']:.2f}",
                 f"{ms['set'] / (1e3 * static):.1%} vs {ms['rigl'] / (1e3 * static):.1%} of a static epoch; per "
                 f"epoch at their schedules: +{ms['set'] / (1e3 * static):.1%} vs "
                 f"+{ms['rigl'] * spe / 100 / (1e3 * static):.1%}",
                 "-", None))
    rows.append((f"7b. the same, epochs with updates at their schedule (first {span} epochs: SET {updates['set']} "
                 f"updates, RigL {updates['rigl']}): "
                 "static vs SET vs RigL, epochs/s",
                 f"{1 / static:.1f} vs {1 / per_epoch['set']:.1f} vs {1 / per_epoch['rigl']:.1f}",
                 f"{per_epoch['set'] / static:.2f}x vs {per_epoch['rigl'] / static:.2f}x epoch time", "-", None))
    # 2. the batched family path
    stack, opt = _stack(device_name)
    batches = [next(iter(loader)) for loader in stack.loaders]
    step = _best(lambda: _stack_step(stack, opt, batches), rounds, device)
    new_masks = _set_masks(stack, 0)
    rebuild = _best(lambda: rebuild_stack(stack, opt, new_masks), rounds, device)
    new, new_opt = rebuild_stack(stack, opt, new_masks)
    for i, masks in enumerate(new_masks):  # the rebuilt stack holds each member's new masks and weights
        for j, layer in enumerate(new.layers):
            assert torch.equal(layer.member_weight(i) != 0, (new.member_state(i)[f"layers.{j}.weight"] != 0))
            assert int(masks[f"layers.{j}"].sum()) == int(stack.masks[i].state()[f"layers.{j}"].sum())
    plain = []
    for i, r in enumerate(stack.runs):
        p = build_model(r.model, r.width, stack.spec).to(device)
        p.load_state_dict(stack.model.member_state(i))
        plain.append(p)
    x, y = batches[0]

    def dense_grads():
        for p in plain:
            p.zero_grad(set_to_none=True)
            F.cross_entropy(p(x), y).backward()

    grads = _best(dense_grads, rounds, device)
    epoch = step * spe
    rows.append((f"7c. batched family (widths {','.join(map(str, FAMILY_WIDTHS))}, digits): rebuild the stacked "
                 "index and momentum from new masks, vs one stacked step (ms)",
                 f"{1e3 * rebuild:.1f} vs {1e3 * step:.2f}",
                 f"{rebuild / step:.1f} steps; {rebuild / epoch:.0%} of a stacked epoch (SET: once per epoch)",
                 "-", None))
    rows.append(("7d. RigL in the batched path also needs each member's dense gradient (plain MLP forward + "
                 "backward, one batch), vs one stacked step (ms)", f"{1e3 * grads:.2f} vs {1e3 * step:.2f}",
                 f"{(rebuild + grads) / (100 * step):.1%} extra at delta_t 100 (rebuild + gradient)", "-", None))
    return rows


def standalone(doc: str, cases) -> None:
    """A case run on its own (`python bench/<case>.py`): its rows as bench.py prints them."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    hardware.setup(hardware.resolve_device(args.device))
    print("| benchmark | speeds | result | target | met |\n|---|---|---|---|---|")
    for name, speeds, result, target, met in cases(args.device, args.rounds):
        print(f"| {name} | {speeds} | {result} | {target} | {'-' if met is None else 'yes' if met else 'NO'} |")


if __name__ == "__main__":
    standalone(__doc__, run)
