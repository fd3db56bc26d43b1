"""One training run: data -> model -> SGD epochs -> metrics and summary Parquet in the run folder."""
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

from widen_cli import results
from widen_cli.config import OptimConfig, RunConfig
from widen_cli.data import load_data
from widen_cli.errors import UserError
from widen_cli.models import build_model, count_weights

# Epochs with more batches than this get their own (transient) progress bar.
BATCH_BAR_MIN = 50


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig):
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.schedule == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt, sched


@dataclass
class Totals:
    loss: float = 0.0
    correct: int = 0
    count: int = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        self.loss += loss.item() * len(y)
        self.correct += (logits.argmax(1) == y).sum().item()
        self.count += len(y)

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.count, 1)

    @property
    def acc(self) -> float:
        return self.correct / max(self.count, 1)


def train_epoch(model, loader, opt, progress: Progress | None = None) -> Totals:
    model.train()
    totals = Totals()
    task = None
    if progress is not None and len(loader) > BATCH_BAR_MIN:
        task = progress.add_task("  batches", total=len(loader))
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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


def train_run(run: RunConfig, run_dir: Path, console: Console | None = None) -> RunResult:
    """Train one model as `run` says, writing metrics.parquet each epoch and summary.parquet at the end."""
    console = console or Console(stderr=True)
    device = resolve_device(run.device)
    torch.manual_seed(run.seed)
    train_loader, test_loader, spec = load_data(run.dataset, run.optim.batch_size, device, run.seed)
    model = build_model(run.model, run.width, spec).to(device)
    n_weights = count_weights(model)
    opt, sched = make_optimizer(model, run.optim)

    rows: list[dict] = []
    start = time.perf_counter()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        epochs_task = progress.add_task(run.run_name(), total=run.optim.epochs, status="")
        for epoch in range(1, run.optim.epochs + 1):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]
            tr = train_epoch(model, train_loader, opt, progress)
            te = evaluate(model, test_loader)
            sched.step()
            rows.append(dict(epoch=epoch, lr=lr, train_loss=tr.mean_loss, train_acc=tr.acc,
                             test_loss=te.mean_loss, test_acc=te.acc, seconds=time.perf_counter() - t0))
            metrics = pd.DataFrame(rows, columns=results.METRICS_COLUMNS)
            results.write_table(metrics, run_dir / "metrics.parquet", results.METRICS_COLUMNS)
            best = metrics.test_acc.max()
            progress.update(epochs_task, advance=1,
                            status=f"train {tr.acc:.1%}  test {te.acc:.1%}  best {best:.1%}  loss {tr.mean_loss:.3f}")
            if not math.isfinite(tr.mean_loss):
                console.print(f"[red]training loss is {tr.mean_loss}: stopping this run[/red]")
                break

    summary = dict(
        dataset=run.dataset.name, model=run.model.name, method=run.method.name, width=run.width,
        base_width=run.base_width, n_weights=n_weights, n_weights_dense=n_weights,
        connectivity=1.0, seed=run.seed, epochs=len(rows),
        best_test_acc=float(metrics.test_acc.max()), final_test_acc=float(metrics.test_acc.iloc[-1]),
        best_train_acc=float(metrics.train_acc.max()), final_train_acc=float(metrics.train_acc.iloc[-1]),
        wall_seconds=time.perf_counter() - start,
    )
    results.write_table(pd.DataFrame([summary]), run_dir / "summary.parquet", results.SUMMARY_COLUMNS)
    return RunResult(metrics, summary)
