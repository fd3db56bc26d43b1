"""One training run: data -> model -> SGD epochs, each epoch's totals handed to the run's lifecycle
(lifecycle.py), which writes the run folder, checkpoints and resumes. Under torchrun it trains with
DDP (distributed.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress

from widen_cli import checkpoint, distributed, hardware, jobs, lifecycle, prune, results
from widen_cli.schema import OptimConfig, RunConfig
from widen_cli.data import load_data, spec_from_config
from widen_cli.errors import UserError
from widen_cli.hardware import resolve_device
from widen_cli.identity import run_name
from widen_cli.jobs import Job
from widen_cli.lifecycle import EpochTotals, RunResult
from widen_cli.methods import MaskUpdater, method_of
from widen_cli.models import build_model, weight_layers
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


def run_training(job: Job, console: Console | None = None, restart: bool = False) -> RunResult:
    """Train `job` in its run folder, resuming from its checkpoint if there is one (`restart`: discard
    it and start over). A finished run is read back instead of retrained (lifecycle.start)."""
    opened = lifecycle.start(job, console, restart)
    if isinstance(opened, RunResult):
        return opened
    with opened as run:
        parent = None
        if method_of(job.run).has_parent:  # its dense parent first: read back, waited for, or trained here
            parent_job = jobs.parent_job(job.run)
            parent = (parent_job.run_dir, run_training(parent_job, run.console).summary.get("status", "finished"))
        return train_run(run, parent)


def train_run(run: lifecycle.Run, parent: tuple[Path, str] | None = None) -> RunResult:
    """Train the opened `run` from its checkpoint, if any (a pruned run: from its parent's folder and
    status). Under torchrun every rank trains its slice of each batch (DDP); the run (lifecycle.py)
    writes and prints on rank 0 only."""
    ctx = distributed.from_env()
    device = resolve_device(distributed.device_for(ctx, run.job.run.device))
    hardware.setup(device, (run.state or {}).get("threads"))
    distributed.init(ctx, device, run.job.run.optim.batch_size)
    try:
        return _train(run, ctx, device, parent)
    finally:
        distributed.close(ctx)


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


def _train(opened: lifecycle.Run, ctx: distributed.Context, device: torch.device,
           parent: tuple[Path, str] | None) -> RunResult:
    run, member, state = opened.job.run, opened.job.member, opened.state
    torch.manual_seed(run.seed)
    train_loader, test_loader, spec = load_run_data(run, device, run.seed)
    val_loader = getattr(train_loader, "val", None)  # dataset.val_fraction's held-out part
    opened.uses(device, train_loader, test_loader, val_loader)
    for loader in (train_loader, test_loader, val_loader):
        if loader is not None:
            loader.shard(ctx.rank, ctx.world)
    if parent is None:
        model, kept = build_model(run.model, run.width, spec, inner=member.inner, ranks=member.ranks), None
    else:
        model, kept = prune.pruned_model(run, member, spec, *parent)
    model = model.to(device)
    model = model.to(memory_format=hardware.memory_format(model, device))  # before the masks copy its layout
    built = {n: tuple(m.weight.shape) for n, m in weight_layers(model).items()}
    assert built == member.layers, f"plan and model disagree: {member.layers} vs {built}"
    method = method_of(run)
    masks = method.masks(run, model, member, kept)  # sparse: drawn from the seed; pruned: the parent's
    if masks is not None:
        if state is not None and state["masks"] is not None:  # go on with exactly the masks the run started with
            masks = Masks(model, checkpoint.saved_masks(state, masks.state(), opened.dir / checkpoint.FILENAME))
        distributed.check_identical(ctx, masks.state(), "masks")
        opened.save_masks(masks)
    if state is not None:  # refused before anything is written from this model
        checkpoint.check_fits(state, model, opened.dir / checkpoint.FILENAME)
    keep_weights(opened, model, 0)
    opt, sched = make_optimizer(model, opened.job.optim)
    updater = method.updater(run, model, masks, opt, len(train_loader))  # a mask that changes as it trains
    if state is not None:
        checkpoint.restore(state, model, opt, sched, opened.dir / checkpoint.FILENAME)
    # What forward passes go through (DDP, bf16 autocast, compile); `model` stays the plain module the
    # optimiser, masks and saved state refer to.
    net = hardware.accelerate(distributed.wrap(model, ctx, device), device, run.precision, run.compile)
    evaluator = hardware.accelerate(model, device, run.precision)

    def step(epoch: int, progress) -> tuple[float, list[EpochTotals]]:
        train_loader.set_epoch(epoch)
        lr = opt.param_groups[0]["lr"]
        tr = all_ranks(ctx, device, train_epoch(net, train_loader, opt, masks, progress, updater,
                                                (epoch - 1) * len(train_loader)))
        keep_weights(opened, model, epoch)
        te = all_ranks(ctx, device, evaluate(evaluator, test_loader))
        va = all_ranks(ctx, device, evaluate(evaluator, val_loader)) if val_loader is not None else None
        sched.step()
        return lr, [EpochTotals(tr.mean_loss, tr.acc, te.mean_loss, te.acc,
                                *((va.mean_loss, va.acc) if va is not None else ()))]

    def snapshot(_) -> dict:
        return dict(model=model, optimizer=opt, scheduler=sched, masks=masks.state() if masks is not None else None)

    def trained(_) -> torch.nn.Module:
        distributed.check_identical(ctx, dict(model.named_parameters()), "weights")
        return model

    return lifecycle.drive([opened], run_name(run), step, snapshot, trained)[0]
