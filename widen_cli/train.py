"""One training run: data -> model -> SGD epochs -> metrics and summary Parquet in the run folder.

A run checkpoints after every epoch and resumes from its checkpoint (checkpoint.py); under torchrun
it trains with DDP (distributed.py)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from widen_cli import checkpoint, distributed, hardware, results
from widen_cli.budget import Member
from widen_cli.config import OptimConfig, RunConfig, to_yaml
from widen_cli.data import load_data, spec_from_config
from widen_cli.errors import Interrupted, UserError
from widen_cli.hardware import resolve_device
from widen_cli.jobs import Job
from widen_cli.models import build_model, weight_layers
from widen_cli.sparsity import Masks, sparsify

# Epochs with more batches than this get their own (transient) progress bar.
BATCH_BAR_MIN = 50


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig):
    opt = hardware.EagerSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.schedule == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt, sched


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


def train_epoch(model, loader, opt, masks: Masks | None = None, progress: Progress | None = None) -> Totals:
    model.train()
    totals = Totals()
    task = None
    if progress is not None and len(loader) > BATCH_BAR_MIN:
        task = progress.add_task("  batches", total=len(loader), status="")
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
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


@dataclass
class RunResult:
    metrics: pd.DataFrame
    summary: dict = field(default_factory=dict)
    skipped: bool = False  # already finished before this call
    model: torch.nn.Module | None = None  # the trained model (not when skipped)


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


def train_run(run: RunConfig, member: Member, run_dir: Path, console: Console | None = None,
              state: dict | None = None) -> RunResult:
    """Train `member` as `run` says, from the checkpoint `state` when resuming. After every epoch:
    metrics.parquet and checkpoint.pt; at the end model.pt and summary.parquet (and the checkpoint goes).
    Under torchrun every rank trains its slice of each batch and only rank 0 writes or prints."""
    ctx = distributed.from_env()
    console = (console or Console(stderr=True)) if ctx.is_main else Console(stderr=True, quiet=True)
    device = resolve_device(distributed.device_for(ctx, run.device))
    hardware.setup(device, (state or {}).get("threads"))
    distributed.init(ctx, device, run.optim.batch_size)
    try:
        return _train(run, member, run_dir, console, state, ctx, device)
    finally:
        distributed.close(ctx)


def _train(run: RunConfig, member: Member, run_dir: Path, console: Console, state: dict | None,
           ctx: distributed.Context, device: torch.device) -> RunResult:
    torch.manual_seed(run.seed)
    train_loader, test_loader, spec = load_run_data(run, device, run.seed)
    train_loader.shard(ctx.rank, ctx.world)
    test_loader.shard(ctx.rank, ctx.world)
    model = build_model(run.model, run.width, spec, inner=member.inner, ranks=member.ranks).to(device)
    model = model.to(memory_format=hardware.memory_format(model, device))  # before the masks copy its layout
    built = {n: tuple(m.weight.shape) for n, m in weight_layers(model).items()}
    assert built == member.layers, f"plan and model disagree: {member.layers} vs {built}"
    masks = None
    if run.method.name == "sparse":
        masks = sparsify(model, member, run.seed, run.method.rescale_init)
        if state is not None and state["masks"] is not None:
            masks = Masks(model, state["masks"])  # go on with exactly the masks the run started with
        distributed.check_identical(ctx, masks.state(), "masks")
        if ctx.is_main and state is None:
            masks.save(run_dir / results.MASKS_FILE)
    opt, sched = make_optimizer(model, run.optim)
    rows, elapsed, first = [], 0.0, 1
    if state is not None:
        checkpoint.restore(state, model, opt, sched)
        rows, elapsed, first = list(state["rows"]), state["elapsed"], state["epoch"] + 1
        console.print(f"resuming {run_dir} after epoch {state['epoch']} of {run.optim.epochs}", soft_wrap=True,
                      highlight=False)
    # What forward passes go through (DDP, bf16 autocast, compile); `model` stays the plain module the
    # optimiser, masks and saved state refer to.
    net = hardware.accelerate(distributed.wrap(model, ctx, device), device, run.precision, run.compile)
    evaluator = hardware.accelerate(model, device, run.precision)

    status, saved = "finished", first - 1
    metrics = pd.DataFrame(rows, columns=results.METRICS_COLUMNS)
    start = time.perf_counter()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            epochs_task = progress.add_task(run.run_name(), total=run.optim.epochs, completed=first - 1, status="")
            for epoch in range(first, run.optim.epochs + 1):
                t0 = time.perf_counter()
                train_loader.set_epoch(epoch)
                lr = opt.param_groups[0]["lr"]
                tr = all_ranks(ctx, device, train_epoch(net, train_loader, opt, masks, progress))
                te = all_ranks(ctx, device, evaluate(evaluator, test_loader))
                sched.step()
                rows.append(dict(epoch=epoch, lr=lr, train_loss=tr.mean_loss, train_acc=tr.acc,
                                 test_loss=te.mean_loss, test_acc=te.acc, seconds=time.perf_counter() - t0))
                metrics = pd.DataFrame(rows, columns=results.METRICS_COLUMNS)
                diverged = not math.isfinite(tr.mean_loss)
                if ctx.is_main:
                    results.write_table(metrics, run_dir / results.METRICS_FILE, results.METRICS_COLUMNS)
                    if not diverged:  # a diverged run is over: nothing to resume
                        checkpoint.save(run_dir / checkpoint.FILENAME, identity=run.identity(), epoch=epoch,
                                        rows=rows, elapsed=elapsed + time.perf_counter() - start, model=model,
                                        optimizer=opt, scheduler=sched,
                                        masks=masks.state() if masks is not None else None)
                saved = epoch
                best = metrics.test_acc.max()
                progress.update(epochs_task, advance=1,
                                status=f"train {tr.acc:.1%}  test {te.acc:.1%}  best {best:.1%}  loss {tr.mean_loss:.3f}")
                if diverged:
                    status = "diverged"
                    console.print(f"[red]training loss is {tr.mean_loss} in epoch {epoch}: stopping this run "
                                  f"(status diverged)[/red]", soft_wrap=True)
                    break
    except KeyboardInterrupt:
        if not saved:
            raise Interrupted("interrupted before the first epoch ended; run the same command again to start") from None
        raise Interrupted(f"interrupted: epochs 1-{saved} of {run.optim.epochs} are saved in "
                          f"{run_dir / checkpoint.FILENAME}; run the same command again to resume") from None

    distributed.check_identical(ctx, dict(model.named_parameters()), "weights")
    summary = summary_row(run, member, metrics, status, elapsed + time.perf_counter() - start)
    if ctx.is_main:
        finish(run_dir, model, summary)
    return RunResult(metrics, summary, model=model)


def summary_row(run: RunConfig, member: Member, metrics: pd.DataFrame, status: str, wall_seconds: float) -> dict:
    """The run's one summary row (also made by the batched family trainer)."""
    return dict(
        dataset=run.dataset.name, model=run.model.name, method=run.method.name, width=run.width,
        base_width=run.base_width, n_weights=member.n_weights, n_weights_dense=member.n_weights_dense,
        connectivity=member.connectivity, seed=run.seed, epochs=len(metrics), status=status,
        best_test_acc=float(metrics.test_acc.max()), final_test_acc=float(metrics.test_acc.iloc[-1]),
        best_train_acc=float(metrics.train_acc.max()), final_train_acc=float(metrics.train_acc.iloc[-1]),
        wall_seconds=wall_seconds,
    )


def finish(run_dir: Path, model: torch.nn.Module, summary: dict) -> None:
    """model.pt, then summary.parquet, which marks the run as done; then the checkpoint goes."""
    results.atomic_write(run_dir / results.MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    results.write_table(pd.DataFrame([summary]), run_dir / results.SUMMARY_FILE, results.SUMMARY_COLUMNS)
    (run_dir / checkpoint.FILENAME).unlink(missing_ok=True)


def run_training(job: Job, console: Console | None = None, restart: bool = False) -> RunResult:
    """Prepare the run folder (config.yaml) and train the planned member, resuming from its checkpoint
    if there is one (`restart`: discard it and start over). A finished run (summary.parquet present) is
    read back instead of retrained."""
    run, run_dir = job.run, job.run_dir
    summary_path = run_dir / results.SUMMARY_FILE
    if summary_path.exists():
        return RunResult(results.read_table(run_dir / results.METRICS_FILE),
                         results.read_table(summary_path).iloc[0].to_dict(), skipped=True)
    prepare_run(job, restart)
    state = None if restart else checkpoint.load(run_dir / checkpoint.FILENAME, run.identity())
    return train_run(run, job.member, run_dir, console, state)


def prepare_run(job: Job, restart: bool = False) -> None:
    """Write the run folder's config.yaml from the validated RunConfig (`restart`: discard its checkpoint)."""
    run_dir = job.run_dir
    if distributed.is_main_process():
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if restart:
                checkpoint.discard(run_dir)
            checkpoint.remove_stale_temporaries(run_dir)
            results.write_text(to_yaml(job.run), run_dir / results.CONFIG_FILE)
        except OSError as e:
            raise UserError(f"cannot write to output folder {run_dir}: {e.strerror or e}") from None
