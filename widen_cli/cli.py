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
    method: Optional[str] = typer.Option(None, help="How a wider member keeps the weight budget: dense."),
    width: Optional[int] = typer.Option(
        None, help="MLP: hidden units; ResNet-18: output channels of the first conv (stages at 1:2:4:8)."),
    base_width: Optional[int] = typer.Option(None, help="Width of the family's dense baseline (the budget)."),
    epochs: Optional[int] = typer.Option(None, help="Default: the paper's recipe for the dataset (300; ImageNet 150)."),
    batch_size: Optional[int] = typer.Option(None, help="Default: the paper's recipe (128 CIFAR/SVHN, 100 MNIST)."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate. Default: 0.1."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda or cuda:N."),
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
        "dataset.root": data_root, "dataset.download": download, "dataset.image_size": image_size,
        "dataset.subset": subset, "seed": seed, "out": out, "name": name,
    }
    cfg, run = config_mod.load(options_to_overrides(experiment, options, overrides))
    cfg.base_width, cfg.name = run.base_width, run.run_name()
    if show_config:
        console.print(OmegaConf.to_yaml(cfg, resolve=True), end="", highlight=False, markup=False)
        console.print(f"# run folder: {run.run_dir}", highlight=False, markup=False)
        return

    from widen_cli import results
    from widen_cli.train import train_run

    run_dir = run.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        results.write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
    except OSError as e:
        raise UserError(f"cannot write to output folder {run_dir}: {e.strerror or e}") from None
    result = train_run(run, run_dir, err)
    print_summary(result.summary, run_dir)


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


@app.command("sweep-width")
def sweep_width():
    """Train a fixed-parameter-budget family of widths (not implemented yet)."""
    _not_implemented("sweep-width")


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
