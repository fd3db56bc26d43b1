"""`make bench` case `learned`: the cost per epoch of the `set` and `rigl` methods against `sparse`,
through the real training code: each method's own masks and updater (Method.masks, Method.updater)
and train.train_epoch, as `widen train` runs them (alone: set and rigl never train stacked).

The digits MLP of the demonstration (base width 8, method.distribution=staggered, 30 epochs of the
digits recipe: 15 steps an epoch) at widths 32 and 128 (connectivity 1/4 and 1/16). Each variant
trains a span of epochs of its schedule (the first seven: SET updates at the end of each, RigL with
the published delta_t = 100 steps twice in them, with delta_t = 15 once an epoch); the variants take
turns, the fastest of `rounds` rounds counts, and each is given per epoch and as a multiple of
`sparse`'s epoch at that width.
    python bench/learned.py [--device cpu] [--rounds 5]
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's widen_cli, whatever is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from mask_updates import _side_by_side, standalone  # noqa: E402
from widen_cli import hardware, train  # noqa: E402
from widen_cli.budget import plan_member  # noqa: E402
from widen_cli.compose import load  # noqa: E402
from widen_cli.data import load_data  # noqa: E402
from widen_cli.datasets import spec_from_config  # noqa: E402
from widen_cli.methods import method_of  # noqa: E402
from widen_cli.models import build_model  # noqa: E402

DIGITS = ["dataset=digits", "model=mlp", "method.distribution=staggered", "base_width=8", "seed=0", "optim.epochs=30"]
WIDTHS, SPAN = (32, 128), 7
VARIANTS = {"sparse": ["method=sparse"], "set": ["method=set"], "rigl": ["method=rigl"],
            "rigl dt15": ["method=rigl", "method.delta_t=15"]}


class Member:
    """One run's model, masks, optimiser and updater, made by its method as train.py makes them."""

    def __init__(self, device: str, width: int, overrides: list[str]):
        run = load([*overrides, *DIGITS, f"width={width}", f"device={device}"])[1]
        method = method_of(run)
        self.device = hardware.resolve_device(device)
        self.loader, _, spec = load_data(run.dataset, run.optim.batch_size, self.device, run.seed)
        member = plan_member(run.model, spec_from_config(run.dataset), run.base_width, run.width, run.method)
        torch.manual_seed(run.seed)
        self.model = build_model(run.model, run.width, spec).to(self.device)
        self.masks = method.masks(run, self.model, member)
        self.opt, _ = train.make_optimizer(self.model, run.optim)
        self.updater = method.updater(run, self.model, self.masks, self.opt, len(self.loader))

    def epochs(self) -> None:
        for epoch in range(SPAN):
            self.loader.set_epoch(epoch)
            train.train_epoch(self.model, self.loader, self.opt, self.masks, None, self.updater,
                              epoch * len(self.loader))

    def updates(self) -> int:
        return 0 if self.updater is None else sum(self.updater.fraction(t) is not None
                                                  for t in range(SPAN * len(self.loader)))


def run(device_name: str = "cpu", rounds: int = 5) -> list[tuple]:
    """Rows for bench.py's table: (name, speeds, result, target, met)."""
    device = hardware.resolve_device(device_name)
    rows = []
    for width in WIDTHS:
        members = {name: Member(device_name, width, o) for name, o in VARIANTS.items()}
        times = _side_by_side({n: m.epochs for n, m in members.items()}, rounds, device)
        per_epoch = {n: t / SPAN for n, t in times.items()}
        updates = {n: m.updates() for n, m in members.items()}
        names = list(VARIANTS)
        rows.append((f"8. learned vs static masks, digits MLP width {width} (base 8), train_epoch with each method's "
                     f"updater, first {SPAN} epochs (updates: " + ", ".join(f"{n} {updates[n]}" for n in names[1:])
                     + "): " + " vs ".join(names) + ", ms/epoch",
                     " vs ".join(f"{1e3 * per_epoch[n]:.1f}" for n in names),
                     " vs ".join(f"{per_epoch[n] / per_epoch['sparse']:.2f}x" for n in names), "-", None))
    return rows


if __name__ == "__main__":
    standalone(__doc__, run)
