"""One training run (`train`, in one screen): data -> model and masks -> SGD epochs, each epoch's totals
and state handed to the loop's helper (epochs.py) and the run's lifecycle (lifecycle.py), which write
the run folder, checkpoint and resume. Under torchrun it trains with DDP (distributed.py)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress

from widen_cli import checkpoint, distributed, hardware, lifecycle, prune, results
from widen_cli.schema import OptimConfig, RunConfig
from widen_cli.data import load_data
from widen_cli.datasets import spec_from_config
from widen_cli.errors import UserError
from widen_cli.hardware import resolve_device
from widen_cli.identity import run_name
from widen_cli.jobs import Job
from widen_cli.epochs import Epochs
from widen_cli.lifecycle import EpochTotals, RunResult
from widen_cli.methods import MaskUpdater, method_of
from widen_cli.models import InputSpec, build_model, weight_layers
from widen_cli.schedules import SCHEDULES
from widen_cli.sparsity import Masks

# Epochs with more batches than this get their own (transient) progress bar.
BATCH_BAR_MIN = 50


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig):
    # cfg.schedule is one of SCHEDULES: validation checked it (with their names, from schedules.py)
    opt = hardware.EagerSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return opt, SCHEDULES[cfg.schedule](opt, cfg)


@dataclass
class Totals:
    """Sums kept as tensors on the training device: no host sync per step, one when read."""

    loss: torch.Tensor | float = 0.0
    correct: torch.Tensor | int = 0
    count: int = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, class_dim: int = -1) -> None:
        self.loss = self.loss + loss.detach().double() * y.shape[-1]
        # max().indices is argmax (the first maximum), and far faster when classes are not the last dim
        self.correct = self.correct + (logits.max(class_dim).indices == y).sum(-1)
        self.count += y.shape[-1]

    @property
    def mean_loss(self) -> float:
        return float(self.loss) / max(self.count, 1)

    @property
    def acc(self) -> float:
        return int(self.correct) / max(self.count, 1)


def train_epoch(model, loader, opt, masks: Masks | None = None, progress: Progress | None = None,
                updater: MaskUpdater | None = None, first_step: int = 0) -> Totals:
    """One epoch of SGD; `updater` (Method.updater) sees every step between backward and the optimiser
    step, numbered from `first_step`."""
    model.train()
    totals = Totals()
    task = None
    if progress is not None and len(loader) > BATCH_BAR_MIN:
        task = progress.add_task("  batches", total=len(loader), status="")
    for i, (x, y) in enumerate(loader):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if updater is not None:
            updater.after_backward(first_step + i)
        opt.step()
        if masks is not None:
            masks.apply_()
        totals.add(logits.detach(), y, loss.detach())
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    return totals


@torch.no_grad()
def evaluate(model, loader) -> Totals:
    model.eval()
    totals = Totals()
    for x, y in loader:
        logits = model(x)
        totals.add(logits, y, F.cross_entropy(logits, y))
    return totals


def all_ranks(ctx: distributed.Context, device: torch.device, t: Totals) -> Totals:
    """An epoch's totals over every rank's slice of the data (DDP); unchanged in a single process."""
    loss, correct, count = distributed.sum_all(ctx, [float(t.loss), int(t.correct), t.count], device)
    return Totals(loss, int(correct), int(count))


def load_run_data(run: RunConfig, device: torch.device, seed: int):
    """The run's loaders and InputSpec; data that disagrees with the config (channels, classes) is refused."""
    train_loader, test_loader, spec = load_data(run.dataset, run.optim.batch_size, device, seed)
    expected = spec_from_config(run.dataset)
    if spec != expected:
        raise UserError(f"{run.dataset.name}: the data holds {spec} but the config says {expected}; "
                        f"fix dataset.channels / num_classes")
    return train_loader, test_loader, spec


def run_training(job: Job, console: Console | None = None) -> RunResult:
    """Train `job` in its run folder, resuming from its checkpoint if there is one (the job's `restart`:
    discard it and start over). A finished run is read back instead of retrained (lifecycle.start)."""
    with lifecycle.start(job, console) as run:
        if run.result is not None:
            return run.result
        parent = None
        if job.parent is not None:  # its dense parent first: read back, waited for, or trained here
            parent = (job.parent.run_dir, run_training(job.parent, run.console).summary.get("status", "finished"))
        return train(run, parent)


def train(run: lifecycle.Run, parent: tuple[Path, str] | None = None) -> RunResult:
    """The training of the opened `run`, from its checkpoint if it has one (a pruned run: from its
    parent's folder and status): the model and masks, the optimiser, then each epoch trained, evaluated
    and handed to the loop's helper (epochs.py), which has the run record and checkpoint it. Under
    torchrun every rank trains its slice of each batch (DDP); only rank 0 writes and prints."""
    cfg = run.job.run
    with _process(run) as (ctx, device):
        torch.manual_seed(cfg.seed)
        data = _data(run, ctx, device)
        model, masks = _model_and_masks(run, ctx, device, data.spec, parent)
        keep_weights(run, model, 0)
        opt, sched = make_optimizer(model, run.job.optim)
        updater = method_of(cfg).updater(cfg, model, masks, opt, len(data.train))  # a mask that changes as it trains
        if run.state is not None:
            checkpoint.restore(run.state, model, opt, sched, run.dir / checkpoint.FILENAME)
        # Forward passes go through `net` (DDP, bf16 autocast, compile); `model` stays the plain module
        # that the optimiser, masks and checkpoints refer to.
        net = hardware.accelerate(distributed.wrap(model, ctx, device), device, cfg.precision, cfg.compile)
        evaluator = hardware.accelerate(model, device, cfg.precision)
        with Epochs([run], run_name(cfg)) as loop:
            for epoch in loop:
                data.train.set_epoch(epoch)
                lr = opt.param_groups[0]["lr"]
                tr = all_ranks(ctx, device, train_epoch(net, data.train, opt, masks, loop.progress, updater,
                                                        (epoch - 1) * len(data.train)))
                keep_weights(run, model, epoch)
                te = all_ranks(ctx, device, evaluate(evaluator, data.test))
                va = all_ranks(ctx, device, evaluate(evaluator, data.val)) if data.val is not None else None
                sched.step()
                loop.end_epoch(lr, [epoch_totals(tr, te, va)],
                               [dict(model=model, optimizer=opt, scheduler=sched, masks=masks)])
        distributed.check_identical(ctx, dict(model.named_parameters()), "weights")
        return loop.finish([model])[0]


@contextmanager
def _process(run: lifecycle.Run):
    """This process's device and threads, and under torchrun its process group (distributed.py)."""
    ctx = distributed.from_env()
    device = resolve_device(distributed.device_for(ctx, run.job.run.device))
    hardware.setup(device, (run.state or {}).get("threads"))
    distributed.init(ctx, device, run.job.run.optim.batch_size)
    try:
        yield ctx, device
    finally:
        distributed.close(ctx)


class Data(NamedTuple):
    train: object
    test: object
    val: object | None  # dataset.val_fraction's held-out part of the training split
    spec: InputSpec


def _data(run: lifecycle.Run, ctx: distributed.Context, device: torch.device) -> Data:
    """The run's loaders, each rank's slice of them under torchrun; their sizes go in its provenance."""
    train_loader, test_loader, spec = load_run_data(run.job.run, device, run.job.run.seed)
    data = Data(train_loader, test_loader, getattr(train_loader, "val", None), spec)
    run.uses(device, data.train, data.test, data.val)
    for loader in (data.train, data.test, data.val):
        if loader is not None:
            loader.shard(ctx.rank, ctx.world)
    return data


def epoch_totals(tr: Totals, te: Totals, va: Totals | None) -> EpochTotals:
    return EpochTotals(tr.mean_loss, tr.acc, te.mean_loss, te.acc, *((va.mean_loss, va.acc) if va is not None else ()))


def _model_and_masks(run: lifecycle.Run, ctx: distributed.Context, device: torch.device, spec: InputSpec,
                     parent: tuple[Path, str] | None) -> tuple[torch.nn.Module, Masks | None]:
    """The run's model as planned, on its device, with its masks: drawn from its seed (sparse), kept from
    its parent (pruned), or its checkpoint's; masks.pt written (lifecycle.Run.save_masks)."""
    cfg, member, state = run.job.run, run.job.member, run.state
    if parent is None:
        model, kept = build_model(cfg.model, cfg.width, spec, inner=member.inner, ranks=member.ranks), None
    else:
        model, kept = prune.pruned_model(cfg, member, spec, *parent)
    model = model.to(device)
    model = model.to(memory_format=hardware.memory_format(model, device))  # before the masks copy its layout
    built = {n: tuple(m.weight.shape) for n, m in weight_layers(model).items()}
    assert built == member.layers, f"plan and model disagree: {member.layers} vs {built}"
    masks = method_of(cfg).masks(cfg, model, member, kept)  # sparse: drawn from the seed; pruned: the parent's
    if masks is not None:
        if state is not None and state["masks"] is not None:  # go on with exactly the masks the run started with
            masks = Masks(model, checkpoint.saved_masks(state, masks.state(), run.dir / checkpoint.FILENAME))
        distributed.check_identical(ctx, masks.state(), "masks")
        run.save_masks(masks)
    if state is not None:  # refused before anything is written from this model
        checkpoint.check_fits(state, model, run.dir / checkpoint.FILENAME)
    return model, masks


def keep_weights(run: lifecycle.Run, model: torch.nn.Module, epoch: int, initial: bool = True) -> None:
    """A dense run keeps its initial weights (epoch 0) and those of the epochs its job asks for: what
    magnitude-rewind members pruned from it go back to. `initial`: at epoch 0 of a resumed run, whether
    `model` still holds the initial weights (drawn again from the seed; not yet restored)."""
    job = run.job
    if not run.main or not method_of(job.run).dense or not (epoch == 0 or epoch in job.keep_weights):
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = results.weights_at_epoch(run.dir, epoch)
    if epoch == 0 and run.state is not None:  # resuming: the file was written when the run started
        if checkpoint.file_holds(path, state, exactly=False):
            return
        # Damaged or missing (a crash, a disk fault): the initial weights are drawn on the CPU from the
        # run's seed, so a model not yet restored holds the very same ones again.
        again = "written again from the run's seed" if initial else \
            "members rewound to epoch 0 from this run will fail (train it again with --restart to keep it)"
        run.console.print(f"[yellow]warning:[/yellow] {path} was damaged or missing; {again}", highlight=False,
                          soft_wrap=True)
        if not initial:
            return
    results.atomic_write(path, lambda tmp: torch.save(state, tmp), run.check_claim)
