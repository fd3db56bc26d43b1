"""The `widen` command line: a thin typer layer that turns options into Hydra overrides."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from widen_cli import config as config_mod
from widen_cli.errors import UserError

app = typer.Typer(
    help="Fixed-parameter-budget width experiments: is a wider network better because it is wider, "
    "or because it has more parameters?",
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
)
err = Console(stderr=True)
console = Console()

PRECISION_HELP = "fp32 (default) or bf16 (autocast; on CPU too, where it is usually slower). Part of the run's identity."
COMPILE_HELP = "torch.compile the model (slow to start; pays off on long GPU runs). Not part of the run's identity."
OVERRIDES_HELP = ("Hydra overrides applied after the options, e.g. optim.lr=0.05 model.activation=linear "
                  "dataset.subset=2048 (see --show-config for every key).")


def user_errors(fn):
    """Print a UserError as one line and exit 2; everything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


def options_to_overrides(experiment: Optional[str], options: dict, extra: Optional[List[str]]) -> list[str]:
    """Options that were given become Hydra overrides: the preset first, then options, then trailing overrides."""
    overrides = [f"+experiment={experiment}"] if experiment else []
    for key, value in options.items():
        if value is None or value is False:
            continue
        overrides.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return overrides + list(extra or [])


@app.command(no_args_is_help=False)
@user_errors
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    dataset: Optional[str] = typer.Option(
        None, help=f"One of {', '.join(config_mod.DATASETS)}. Default: digits (built in, offline)."),
    model: Optional[str] = typer.Option(None, help="mlp or resnet18. Default: mlp."),
    method: Optional[str] = typer.Option(None, help="dense (default), or how a member wider than --base-width "
                                         "keeps its budget: sparse, linear-bottleneck, nonlinear-bottleneck."),
    width: Optional[int] = typer.Option(
        None, help="MLP: hidden units; ResNet-18: output channels of the first conv (stages at 1:2:4:8)."),
    base_width: Optional[int] = typer.Option(None, help="Width of the family's dense baseline (the budget)."),
    epochs: Optional[int] = typer.Option(None, help="Default: the paper's recipe for the dataset (300; ImageNet 150)."),
    batch_size: Optional[int] = typer.Option(None, help="Default: the paper's recipe (128 CIFAR/SVHN, 100 MNIST)."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate. Default: 0.1."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    data_root: Optional[Path] = typer.Option(None, help="Where the dataset lies (torchvision layout; "
                                             "ImageNet/imagefolder: a folder with train/ and val/)."),
    download: bool = typer.Option(False, "--download", help="Fetch the dataset into --data-root if missing."),
    image_size: Optional[int] = typer.Option(
        None, help="Image side in pixels (ImageNet default 224). ResNet stem: CIFAR-style up to 64 px."),
    subset: Optional[int] = typer.Option(None, help="Train on a fixed random subset of N training samples."),
    seed: Optional[int] = typer.Option(None, help="Seeds data order, initialisation and masks. Default: 0."),
    out: Optional[Path] = typer.Option(None, help="Output root; the run goes to <out>/<name>/. Default: runs."),
    name: Optional[str] = typer.Option(None, help="Run folder name. Default: made from the settings plus a "
                                       "short hash, so the same command always finds the same folder."),
    experiment: Optional[str] = typer.Option(None, help="A preset from conf/experiment/, e.g. smoke."),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
):
    """Train one model and write config.yaml, metrics.parquet and summary.parquet to <out>/<name>/.

    Example: widen train --dataset cifar10 --model resnet18 --width 18 --epochs 300 optim.lr=0.05
    """
    options = {
        "dataset": dataset, "model": model, "method": method, "width": width, "base_width": base_width,
        "optim.epochs": epochs, "optim.batch_size": batch_size, "optim.lr": lr, "device": device,
        "precision": precision, "compile": compile_model,
        "dataset.root": data_root, "dataset.download": download, "dataset.image_size": image_size,
        "dataset.subset": subset, "seed": seed, "out": out, "name": name,
    }
    cfg, run = config_mod.load(options_to_overrides(experiment, options, overrides))
    if show_config:
        cfg.base_width, cfg.name = run.base_width, run.run_name()
        console.print(OmegaConf.to_yaml(cfg, resolve=True), end="", highlight=False, markup=False)
        console.print(f"# run folder: {run.run_dir}", highlight=False, markup=False)
        return

    from widen_cli.train import run_training

    result = run_training(cfg, run, err)
    if result.skipped:
        err.print(f"{run.run_dir} has already finished; showing its summary (delete the folder to retrain)")
    print_summary(result.summary, run.run_dir)


def print_summary(s: dict, run_dir: Path) -> None:
    table = Table(title=f"[bold]{run_dir}[/bold]", show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column()
    for key in ("dataset", "model", "method", "width", "base_width", "n_weights", "connectivity", "epochs",
                "best_test_acc", "final_test_acc", "final_train_acc", "wall_seconds"):
        value = s[key]
        text = (f"{value:.2%}" if key.endswith("_acc") else f"{value:,}" if key.startswith("n_weights")
                else f"{value:.1f} s" if key == "wall_seconds" else str(value))
        table.add_row(key, text)
    console.print(table)


def _not_implemented(command: str):
    err.print(f"widen {command}: not implemented yet")
    raise typer.Exit(1)


def _numbers(text: str | None, kind, option: str) -> list | None:
    if text is None:
        return None
    try:
        return [None if t.strip().lower() in ("none", "null") else kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None


@app.command("sweep-width")
@user_errors
def sweep_width(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides applied to every member, "
                                                    "e.g. optim.lr=0.05 method.distribution=erk.",
                                                    show_default=False),
    dataset: Optional[str] = typer.Option(None, help=f"One of {', '.join(config_mod.DATASETS)}."),
    model: Optional[str] = typer.Option(None, help="resnet18 (default) or mlp."),
    method: Optional[str] = typer.Option(None, help="sparse (default), linear-bottleneck, nonlinear-bottleneck "
                                         "or dense."),
    base_width: Optional[int] = typer.Option(None, help="Width of the dense baseline: its weight count is the "
                                             "family's budget."),
    widths: Optional[str] = typer.Option(None, help="Comma-separated widths, e.g. 18,25,36,51,72."),
    factors: Optional[str] = typer.Option(None, help="Or widening factors, e.g. 1,1.41,2,2.83,4. Default: "
                                          "powers of sqrt(2) down to the connectivity floor."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2. Default: 0."),
    distribution: Optional[str] = typer.Option(None, help="sparse: staggered (default), proportional or erk."),
    last_layer_connectivity: Optional[str] = typer.Option(
        None, help="sparse: the classifier's connectivity; several values make the Figure 4 grid."),
    connectivity_floor: Optional[float] = typer.Option(None, help="Default widths stop before connectivity "
                                                       "(n_weights / n_weights_dense) falls below this. 0.01."),
    dense_wide: Optional[bool] = typer.Option(None, "--dense-wide/--no-dense-wide",
                                              help="Also train the dense model at every wider width. Default on."),
    launcher: str = typer.Option("local", help="local (one after another), pool (--jobs processes here) "
                                 "or submitit (SLURM on a cluster, local processes elsewhere)."),
    jobs: int = typer.Option(1, help="Members run at once (pool processes; SLURM array parallelism)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print and write the plan only: no data, no training."),
    epochs: Optional[int] = typer.Option(None, help="Default: the paper's recipe for the dataset."),
    batch_size: Optional[int] = typer.Option(None, help="Default: the paper's recipe."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate. Default: 0.1."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, help=PRECISION_HELP),
    compile_model: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    data_root: Optional[Path] = typer.Option(None, help="Where the dataset lies."),
    download: bool = typer.Option(False, "--download", help="Fetch the dataset if missing."),
    image_size: Optional[int] = typer.Option(None, help="Image side in pixels."),
    subset: Optional[int] = typer.Option(None, help="Train on a fixed random subset of N samples."),
    out: Optional[Path] = typer.Option(None, help="Output root; the sweep goes to <out>/<name>/. Default: runs."),
    name: Optional[str] = typer.Option(None, help="Sweep folder name. Default: from the settings plus a hash."),
    experiment: Optional[str] = typer.Option(None, help="A preset from conf/experiment/, e.g. fig1_cifar100."),
):
    """Train a fixed-parameter-budget family: every member keeps the base width's weight count.

    Prints the plan and writes <out>/<name>/plan.parquet, then runs each member (and seed) as a
    `widen train` run under <out>/<name>/ and writes <out>/<name>/results.parquet. Running the same
    command again runs only what is missing.

    Example: widen sweep-width --dataset cifar100 --base-width 18 --seeds 0,1,2
    """
    from omegaconf import OmegaConf

    from widen_cli import budget, results, sweep
    from widen_cli.data import spec_from_config

    if launcher not in sweep.LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; valid: {', '.join(sweep.LAUNCHERS)}")
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if experiment is None:  # without a preset, sweeps default to the paper's main set-up
        method = method or "sparse"
        model = model or "resnet18"
    shared = {
        "dataset": dataset, "model": model, "method": method, "method.distribution": distribution,
        "optim.epochs": epochs, "optim.batch_size": batch_size, "optim.lr": lr, "device": device,
        "precision": precision, "compile": compile_model,
        "dataset.root": data_root, "dataset.download": download, "dataset.image_size": image_size,
        "dataset.subset": subset,
    }
    member_overrides = options_to_overrides(experiment, shared, overrides)
    cfg = config_mod.compose_config(member_overrides)
    base = next(b for b in (base_width, cfg.base_width, cfg.width) if b is not None)
    member_overrides.append(f"base_width={base}")
    cfg, run = config_mod.load([*member_overrides, f"width={base}"])
    s = cfg.sweep
    seed_list = _numbers(seeds, int, "--seeds") or list(s.seeds)
    llcs = _numbers(last_layer_connectivity, float, "--last-layer-connectivity") or list(s.last_layer_connectivity)
    floor = connectivity_floor if connectivity_floor is not None else s.connectivity_floor
    dense_wide = s.dense_wide if dense_wide is None else dense_wide
    spec = spec_from_config(run.dataset)
    width_list = _numbers(widths, int, "--widths") or (list(s.widths) if s.widths else None)
    factor_list = _numbers(factors, float, "--factors") or (list(s.factors) if s.factors else None)
    if width_list is None and factor_list is not None:
        width_list = budget.widths_from_factors(base, factor_list)
    if width_list is None:
        width_list = budget.default_widths(run.model, spec, base, run.method, floor)
    if not width_list:
        raise UserError("no widths to run")
    for w in width_list:
        if w < 1:
            raise UserError(f"widths must be integers >= 1, got {w}")

    members = sweep.plan_family(run, spec, sorted(set(width_list)), dense_wide, llcs)
    plan = sweep.plan_table(members)
    sweep_dir = Path(out or cfg.out) / (name or sweep.sweep_name(run))
    print_plan(plan, sweep_dir)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        results.write_table(plan, sweep_dir / "plan.parquet")
        results.write_text(OmegaConf.to_yaml(cfg, resolve=True), sweep_dir / "sweep.yaml")
    except OSError as e:
        raise UserError(f"cannot write to output folder {sweep_dir}: {e.strerror or e}") from None
    if dry_run:
        return
    job_list = sweep.make_jobs(member_overrides, members, seed_list, sweep_dir)
    sweep.launch(job_list, launcher, jobs, sweep_dir, err, OmegaConf.to_container(s.submitit))
    table = sweep.gather(job_list, sweep_dir)
    print_results(table, sweep_dir)
    missing = len(job_list) - len(table)
    if missing:
        err.print(f"[red]{missing} of {len(job_list)} runs did not finish; run the same command again to retry "
                  f"them[/red]")
        raise typer.Exit(1)


def print_plan(plan, sweep_dir: Path) -> None:
    import pandas as pd

    table = Table(title=f"[bold]plan: {sweep_dir}[/bold]", header_style="bold")
    for col in ("width", "factor", "method", "connectivity", "n_weights", "n_weights_dense", "deviation",
                "bottleneck"):
        table.add_column(col, justify="right")
    for r in plan.itertuples():
        method = r.method + (f" (last layer {r.last_layer_connectivity:g})"
                             if pd.notna(r.last_layer_connectivity) else "")
        table.add_row(str(r.width), f"{r.widening_factor:.2f}", method, f"{r.connectivity:.4f}",
                      f"{r.n_weights:,}", f"{r.n_weights_dense:,}", f"{r.deviation:+,}",
                      f"{r.bottleneck_ratio:.3f}" if pd.notna(r.bottleneck_ratio) else "")
    console.print(table)
    sparse = plan[plan.method == "sparse"]
    if len(sparse):
        kept = Table(title="kept fraction per layer (sparse members)", header_style="bold")
        kept.add_column("layer")
        for r in sparse.itertuples():
            kept.add_column(f"w={r.width}" + (f" last={r.last_layer_connectivity:g}"
                                               if pd.notna(r.last_layer_connectivity) else ""), justify="right")
        for i, layer in enumerate(sparse.iloc[0].layers):
            kept.add_row(layer, *(f"{r.layer_kept_fraction[i]:.3f}" for r in sparse.itertuples()))
        console.print(kept)


def print_results(df, sweep_dir: Path) -> None:
    table = Table(title=f"[bold]results: {sweep_dir / 'results.parquet'}[/bold]", header_style="bold")
    for col in ("method", "width", "seed", "connectivity", "n_weights", "best_test_acc", "final_train_acc"):
        table.add_column(col, justify="right")
    for r in df.sort_values(["method", "width", "seed"]).itertuples():
        table.add_row(r.method, str(r.width), str(r.seed), f"{r.connectivity:.4f}", f"{r.n_weights:,}",
                      f"{r.best_test_acc:.2%}", f"{r.final_train_acc:.2%}")
    console.print(table)


@app.command("kernel-distance")
def kernel_distance():
    """Distance of a sparse network's GP kernel from the infinite-width kernel (not implemented yet)."""
    _not_implemented("kernel-distance")


@app.command()
def report():
    """Figures and tables from Parquet results (not implemented yet)."""
    _not_implemented("report")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
