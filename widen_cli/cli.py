"""The `widen` command line: options and calls, nothing else.

Each option that sets a config key declares it beside itself (widen_cli/options.py); what a command does
with its options is widen_cli/commands.py's. Only typer and rich load before an option is parsed; each
command imports what it uses (torch, pandas, Hydra), so `--help` and option errors answer at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from widen_cli import completion
from widen_cli.kernel_config import KERNEL_INPUTS, kernel_defaults
from widen_cli.options import (EXTRA, FAMILY, RUN, BatchSize, Compile, ConfigDir, DataRoot, Dataset, Device,
                               Download, Epochs, Experiment, ImageSize, Key, Lr, Model, Name, Out, Overrides,
                               Precision, SkipBadImages, Subset, Track, given, names, numbers, opt)
from widen_cli.terminal import console, run, user_errors

# Flags take no value: typer's help would show them as `<bool>`, which invites `--dry-run true`.
# (An older typer without display_type_rich keeps its own help.)
_option_type = getattr(typer.core.TyperOption, "display_type_rich", None)
if _option_type is not None:
    typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _option_type(self, ctx)

app = typer.Typer(
    help="Fixed-parameter-budget width experiments: is a wider network better because it is wider, "
    "or because it has more parameters?",
    no_args_is_help=True, add_completion=True, pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from widen_cli.provenance import widen_version

        console.print(f"widen {widen_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")):
    pass


@app.command(no_args_is_help=False)
@user_errors
def train(
    ctx: typer.Context,
    overrides: Overrides = None,
    dataset: Dataset = None,
    model: Model = None,
    method: Annotated[Optional[str], opt(
        "dense (default), or how a member wider than --base-width keeps its budget: sparse, linear-bottleneck, "
        "nonlinear-bottleneck, pruned (method.prune=structured|magnitude|magnitude-rewind; trains or reuses the dense "
        "run at --width first).", autocompletion=completion.methods), Key("method")] = None,
    width: Annotated[Optional[int], opt("MLP: hidden units; ResNet-18: output channels of the first conv "
                                        "(stages at 1:2:4:8)."), Key("width")] = None,
    base_width: Annotated[Optional[int], opt("Width of the family's dense baseline: its weight count is the budget."),
                          Key("base_width")] = None,
    epochs: Epochs = None, batch_size: BatchSize = None, lr: Lr = None,
    device: Device = None, precision: Precision = None, compile_model: Compile = False, data_root: DataRoot = None,
    download: Download = False, image_size: ImageSize = None, subset: Subset = None,
    skip_bad_images: SkipBadImages = False, track: Track = None,
    seed: Annotated[Optional[int], opt("Seeds data order, initialisation and masks. Default: 0."),
                    Key("seed")] = None,
    out: Out = None, name: Name = None, experiment: Experiment = None, config_dir: ConfigDir = None,
    show_config: Annotated[bool, opt("Print the resolved config and exit.", "--show-config", panel=RUN)] = False,
    restart: Annotated[bool, opt("Discard an unfinished run's checkpoint and partial metrics and start it from "
                                 "epoch 1 (a finished run is kept).", "--restart", panel=RUN)] = False,
):
    """Train one model and write config.yaml, metrics.parquet and summary.parquet to <out>/<name>/.

    The run checkpoints after every epoch: the same command again resumes an interrupted run. For
    several GPUs: torchrun --nproc_per_node=N -m widen_cli train ...

    Example: widen train --dataset cifar10 --model resnet18 --width 18 --epochs 300 optim.lr=0.05
    """
    from widen_cli import commands

    commands.train(given(ctx), experiment, overrides, config_dir or (), show_config, restart)


@app.command("sweep-width")
@user_errors
def sweep_width(
    ctx: typer.Context,
    overrides: Overrides = None,
    dataset: Dataset = None,
    base_width: Annotated[Optional[str], opt("Dense baseline width (its weights are the budget); several: 8,12,18.",
                                             panel=FAMILY)] = None,
    widths: Annotated[Optional[str], opt("Comma-separated widths, e.g. 18,25,36,51,72.", panel=FAMILY)] = None,
    factors: Annotated[Optional[str], opt("Or widening factors, e.g. 1,2,4. Default: powers of sqrt(2).",
                                          panel=FAMILY)] = None,
    seeds: Annotated[Optional[str], opt("Comma-separated seeds, e.g. 0,1,2. Default: 0.", panel=FAMILY)] = None,
    method: Annotated[Optional[str], opt("sparse (default), linear-/nonlinear-bottleneck, pruned, dense.",
                                         panel=FAMILY, autocompletion=completion.methods), Key("method")] = None,
    methods: Annotated[Optional[str], opt("Several, e.g. sparse,linear-bottleneck (same budgets).",
                                          panel=FAMILY, autocompletion=completion.method_lists)] = None,
    distribution: Annotated[Optional[str], opt(
        "sparse: dense-last (mlp default; caps the width), staggered (resnet18 default), uniform or erk.",
        panel=FAMILY), Key("method.distribution")] = None,
    last_layer_connectivity: Annotated[Optional[str], opt(
        "sparse: classifier connectivity (several: Figure 4).", panel=FAMILY)] = None,
    connectivity_floor: Annotated[Optional[float], opt(
        "Default widths keep connectivity above it (0.01).", panel=FAMILY)] = None,
    dense_wide: Annotated[Optional[bool], opt("Also train dense at every width. Default on.",
                                              "--dense-wide/--no-dense-wide", panel=EXTRA)] = None,
    lrs: Annotated[Optional[str], opt("Learning rates to train each member at; one is selected.",
                                      panel=EXTRA)] = None,
    select_on: Annotated[Optional[str], opt("What selects the lr: test (default) or val (sweep.val_fraction).",
                                            panel=EXTRA)] = None,
    model: Model = None,
    launcher: Annotated[str, opt("local (in turn), pool (--jobs processes) or submitit (SLURM).", panel=RUN,
                                 autocompletion=completion.launchers)] = "local",
    jobs: Annotated[Optional[int], opt("Members at once (pool: default 1; SLURM: array parallelism).",
                                       panel=RUN, show_default=False)] = None,
    dry_run: Annotated[bool, opt("Print and write the plan only: no data, no training.", "--dry-run",
                                 panel=RUN)] = False,
    epochs: Epochs = None, batch_size: BatchSize = None, lr: Lr = None, device: Device = None,
    precision: Precision = None, compile_model: Compile = False, data_root: DataRoot = None,
    download: Download = False, image_size: ImageSize = None, subset: Subset = None,
    skip_bad_images: SkipBadImages = False, track: Track = None, out: Out = None,
    name: Name = None, experiment: Experiment = None, config_dir: ConfigDir = None,
    restart: Annotated[bool, opt("Start unfinished members from epoch 1 (not their checkpoints).", "--restart",
                                 panel=RUN)] = False,
):
    """Train a fixed-parameter-budget family: every member keeps the base width's weight count.

    Writes <out>/<name>/plan.parquet, runs each member and seed as a `widen train` run there,
    then writes results.parquet. The same command again runs only what is missing.

    Example: widen sweep-width --dataset cifar100 --base-width 18 --seeds 0,1,2
    """
    from widen_cli import commands

    # The sweep options, by their names in the config's `sweep:` section (widen_cli/schema.py: SweepConfig).
    sweep = dict(base_widths=numbers(base_width, int, "--base-width"), widths=numbers(widths, int, "--widths"),
                 factors=numbers(factors, float, "--factors"), seeds=numbers(seeds, int, "--seeds"),
                 methods=names(methods), connectivity_floor=connectivity_floor, dense_wide=dense_wide,
                 last_layer_connectivity=numbers(last_layer_connectivity, float, "--last-layer-connectivity"),
                 lrs=numbers(lrs, float, "--lrs"), select_on=select_on)
    commands.sweep_width(given(ctx), sweep, experiment, overrides, config_dir or (), launcher, jobs, dry_run, restart)


KERNEL = kernel_defaults()  # conf/kernel.yaml: shown in --help, applied by kernel_config


def _kernel(key: str, help: str):
    """A kernel-distance option of conf/kernel.yaml's `key`: its default shown in the text (typer
    prints a show_default string in parentheses, "[default: (8)]")."""
    return typer.Option(help=f"{help} Default: {KERNEL[key]}.")


@app.command("kernel-distance")
@user_errors
def kernel_distance(
    ctx: typer.Context,
    width: Annotated[Optional[int], typer.Option(help="One width (hidden units).")] = None,
    widths: Annotated[Optional[str], typer.Option(
        help="Comma-separated widths, e.g. 8,32,128,216,328,512,635. Default: those (Figure 7) when they fit the "
        "budget, else 7 geometric steps from the base width to the largest possible.")] = None,
    base_width: Annotated[Optional[int], _kernel("base_width", "Dense width whose weight count, "
                                                 "base*(input_dim+outputs), is the budget (Figure 7: 6,352)."),
                          Key("base_width")] = None,
    weights: Annotated[Optional[int], typer.Option(help="Or the budget as a weight count."), Key("weights")] = None,
    input_dim: Annotated[Optional[int], _kernel("input_dim", "d, for Gaussian inputs; datasets set it."),
                         Key("input_dim")] = None,
    outputs: Annotated[Optional[int], _kernel("outputs", "Read-out units (a dataset's class count)."),
                       Key("outputs")] = None,
    inputs: Annotated[Optional[str], _kernel("inputs", f"Input pairs: {', '.join(KERNEL_INPUTS)}. Dataset test "
                                             "images are flattened and standardised per pixel."), Key("inputs")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Where the dataset lies (torchvision layout)."),
                         Key("dataset.root")] = None,
    download: Download = False,
    pairs: Annotated[Optional[int], _kernel("pairs", "Input pairs (x, y), x != y."), Key("pairs")] = None,
    inits: Annotated[Optional[int], _kernel("inits", "Independent initialisations per width, fresh mask and "
                                            "values each."), Key("inits")] = None,
    mask_samples: Annotated[Optional[int], _kernel("mask_samples", "Theorem 1: Bernoulli masks per pair averaged "
                                                   "in place of the 2^d mask sum (fresh for every 64 pairs)."),
                            Key("mask_samples")] = None,
    distribution: Annotated[Optional[str], _kernel("distribution", "How the budget is spread over the two layers, "
                                                   "the names of sweep-width's --distribution: dense-last (the "
                                                   "read-out stays dense, the first layer keeps the rest; the "
                                                   "paper's Figure 7 code), uniform (one connectivity in both; "
                                                   "the theory's set-up), staggered or erk. Exact counts, placed "
                                                   "at random."), Key("distribution")] = None,
    reference: Annotated[Optional[str], _kernel("reference", "The infinite-width kernel: analytic (arc-cosine) or "
                                                "dense:N, a dense width-N network at initialisation as the paper "
                                                "did (dense:10000)."), Key("reference")] = None,
    seed: Annotated[Optional[int], _kernel("seed", "Seeds the pairs, masks and weights."), Key("seed")] = None,
    device: Annotated[Optional[str], _kernel("device", "auto (CUDA when present), cpu, cuda or cuda:N."),
                      Key("device")] = None,
    out: Annotated[Optional[Path], _kernel("out", "Output root; the table goes to <out>/<name>/."),
                   Key("out")] = None,
    name: Name = None, config_dir: ConfigDir = None,
):
    """How far a sparse one-hidden-layer ReLU network's GP kernel is from the infinite-width kernel.

    At a fixed weight budget, for every width: the empirical distance over input pairs and independent
    initialisations (with its standard error), Theorem 1's exact expression (with its bias part), the
    paper's approximation eq. (6) and the leading-order formula; then the width minimising each. Writes
    <out>/<name>/kernel_distance.parquet. The work is batched over initialisations and pairs in chunks,
    so memory stays bounded (a few blocks of about 64 MB) whatever --pairs, --inits and the widths are.
    Defaults: conf/kernel.yaml.

    Example: widen kernel-distance --widths 8,32,128,216,328,512,635 --inputs mnist --data-root data
    """
    from widen_cli import commands

    several = ([width] if width is not None else []) + (numbers(widths, int, "--widths") or [])
    commands.kernel_distance(given(ctx), several or None, config_dir or ())


@app.command()
@user_errors
def report(
    folders: Annotated[List[Path], typer.Argument(help="Run, sweep or kernel-distance folders (or Parquet files); "
                                                  "every result table under them is read.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Output folder for the figures, table.md/.csv and index.html.")] = Path(
        "report"),
):
    """The paper's figures and Table 1 from any mix of Parquet results.

    Writes one PNG and one SVG per figure whose data is present, table.md and table.csv (best test accuracy
    per method and width) and a self-contained index.html into --out.

    Example: widen report runs/cifar100-b18 runs/kernel-fig7 --out report
    """
    from widen_cli import commands

    commands.report(folders, out)


def main() -> None:
    """The console script (widen_cli/terminal.py: how a command line's errors end it)."""
    run(app)


if __name__ == "__main__":
    main()
