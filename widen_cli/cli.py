"""The `widen` command line: options and calls, nothing else.

Only typer and rich load before an option is parsed; each command imports what it uses (torch,
pandas, Hydra), so `--help` and option errors answer at once.
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from widen_cli import completion
from widen_cli.errors import UserError, disk_error
from widen_cli.kernel_config import KERNEL_INPUTS, kernel_defaults

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
# Piped output (logs, CI) gets room for the wide tables; a terminal keeps its own width.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
console = Console(width=None if sys.stdout.isatty() else 160)


def package_version() -> str:
    """The installed distribution's version; a source checkout without one reports widen_cli.__version__."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("widen_cli")
    except PackageNotFoundError:
        from widen_cli import __version__
        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"widen {package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")):
    pass


def multirun_hint(argv: list[str]) -> str | None:
    """Hydra users type -m/--multirun for a sweep; widen has none (sweeps are sweep-width's)."""
    flags = argv[:argv.index("--")] if "--" in argv else argv  # after --, words are arguments
    if any(a in ("-m", "--multirun") for a in flags):
        return ("widen has no Hydra multirun (-m/--multirun): a sweep over widths and seeds is "
                "`widen sweep-width` (see widen sweep-width --help)")
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def user_errors(fn):
    """Print a UserError as one line and exit 2; Ctrl-C or SIGTERM (what a cluster sends before it
    pre-empts a job) prints how to resume and exits 130; everything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from widen_cli.distributed import is_main_process

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if is_main_process():
                err.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)  # text, not markup
            raise typer.Exit(2)
        except OSError as e:
            if disk_error(e) is None:
                raise
            if is_main_process():
                err.print(f"[bold red]error:[/bold red] {escape(disk_error(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:
            if is_main_process():
                err.print(str(e) or "interrupted; run the same command again to resume", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(130)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _numbers(text: str | None, kind, option: str) -> list | None:
    if text is None:
        return None
    try:
        return [None if t.strip().lower() in ("none", "null") else kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


# ---------------------------------------------------------------- options shared by train and sweep-width

# train's and sweep-width's parameters reach the config through config.OPTION_KEYS, by parameter name;
# these are the ones the commands use themselves. tests/test_cli_ux.py checks that every parameter is one
# or the other, so a renamed parameter cannot silently lose its option.
COMMAND_ONLY = {
    "train": {"overrides", "experiment", "config_dir", "show_config", "restart"},
    "sweep-width": {"overrides", "experiment", "config_dir", "restart", "methods", "widths", "factors", "seeds",
                    "last_layer_connectivity", "connectivity_floor", "dense_wide", "lrs", "select_on", "launcher",
                    "jobs", "dry_run"},
}

# Help panels, so that sweep-width's three dozen options read in groups.
FAMILY, EXTRA, DATA, TRAINING, RUN = "Family", "More runs", "Data", "Training", "Output and running"


def _opt(help: str, *flags: str, panel: str = TRAINING, **kw):
    return typer.Option(*flags, help=help, rich_help_panel=panel, **kw)


Overrides = Annotated[Optional[List[str]], typer.Argument(
    help="Hydra overrides after the options (every member's), e.g. optim.lr=0.05 method.distribution=erk; "
    "train --show-config lists the keys.", show_default=False)]
Dataset = Annotated[Optional[str], _opt("cifar10, cifar100, svhn, mnist, imagenet, imagefolder, digits or synthetic.",
                                        panel=DATA,
                                        autocompletion=completion.datasets)]
Model = Annotated[Optional[str], _opt("mlp or resnet18. Default: mlp for mnist/digits/synthetic.",
                                      autocompletion=completion.models)]
BaseWidth = Annotated[Optional[int], _opt("Width of the family's dense baseline: its weight count is the budget.")]
Epochs = Annotated[Optional[int], _opt("Default: the paper's (300; ImageNet 150).")]
BatchSize = Annotated[Optional[int], _opt("Default: the paper's (128 CIFAR/SVHN, 100 MNIST).")]
Lr = Annotated[Optional[float], _opt("Initial learning rate. Default: 0.1.")]
Device = Annotated[Optional[str], _opt("auto (CUDA when present), cpu, cuda or cuda:N.")]
Precision = Annotated[Optional[str], _opt("fp32 (default) or bf16 (autocast). Part of the run's identity.")]
Compile = Annotated[bool, _opt("torch.compile the model (pays off on long GPU runs).", "--compile")]
DataRoot = Annotated[Optional[Path], _opt("Dataset folder (torchvision layout; image folders: train/, val/).",
                                          panel=DATA)]
Download = Annotated[bool, _opt("Fetch the dataset into --data-root if missing.", "--download", panel=DATA)]
ImageSize = Annotated[Optional[int], _opt("Image side in pixels (ImageNet default 224).", panel=DATA)]
Subset = Annotated[Optional[int], _opt("Train on a fixed random subset of N samples.", panel=DATA)]
SkipBadImages = Annotated[bool, _opt("Image folders: skip (and count) files that cannot be decoded.",
                                     "--skip-bad-images", panel=DATA)]
Track = Annotated[Optional[str], _opt("tensorboard, mlflow, wandb (offline): comma-separated trackers.")]
Out = Annotated[Optional[Path], _opt("Output root; results go to <out>/<name>/. Default: runs.", panel=RUN)]
Name = Annotated[Optional[str], _opt("Folder name. Default: the settings plus a short hash.", panel=RUN)]
Experiment = Annotated[Optional[str], _opt("A preset from conf/experiment/, e.g. smoke, fig1_cifar100.", panel=RUN,
                                           autocompletion=completion.experiments)]
ConfigDir = Annotated[Optional[List[Path]], _opt(
    "Your own config folder (laid out as conf/), searched first; repeatable. Also: WIDEN_CONFIG_PATH.",
    "--config-dir", panel=RUN)]


@app.command(no_args_is_help=False)
@user_errors
def train(
    overrides: Overrides = None,
    dataset: Dataset = None,
    model: Model = None,
    method: Annotated[Optional[str], _opt("dense (default), or how a member wider than --base-width keeps its "
                                          "budget: sparse, linear-bottleneck, nonlinear-bottleneck, pruned "
                                          "(method.prune=structured|magnitude|magnitude-rewind; trains or reuses "
                                          "the dense run at --width first).",
                                          autocompletion=completion.methods)] = None,
    width: Annotated[Optional[int], _opt("MLP: hidden units; ResNet-18: output channels of the first conv "
                                         "(stages at 1:2:4:8).")] = None,
    base_width: BaseWidth = None, epochs: Epochs = None, batch_size: BatchSize = None, lr: Lr = None,
    device: Device = None, precision: Precision = None, compile_model: Compile = False, data_root: DataRoot = None,
    download: Download = False, image_size: ImageSize = None, subset: Subset = None,
    skip_bad_images: SkipBadImages = False, track: Track = None,
    seed: Annotated[Optional[int], _opt("Seeds data order, initialisation and masks. Default: 0.")] = None,
    out: Out = None, name: Name = None, experiment: Experiment = None, config_dir: ConfigDir = None,
    show_config: Annotated[bool, _opt("Print the resolved config and exit.", "--show-config", panel=RUN)] = False,
    restart: Annotated[bool, _opt("Discard an unfinished run's checkpoint and partial metrics and start it from "
                                  "epoch 1 (a finished run is kept).", "--restart", panel=RUN)] = False,
):
    """Train one model and write config.yaml, metrics.parquet and summary.parquet to <out>/<name>/.

    The run checkpoints after every epoch: the same command again resumes an interrupted run. For
    several GPUs: torchrun --nproc_per_node=N -m widen_cli train ...

    Example: widen train --dataset cifar10 --model resnet18 --width 18 --epochs 300 optim.lr=0.05
    """
    from widen_cli import config, fingerprint

    _, run = config.load(config.overrides_from_options(experiment, dict(locals()), overrides), config_dir or ())
    run = fingerprint.attach(run, fetch=not show_config)  # once: what data this is names the run folder
    if show_config:
        console.print(config.to_yaml(run), end="", highlight=False, markup=False, soft_wrap=True)
        console.print(f"# run folder: {run.run_dir}", highlight=False, markup=False, soft_wrap=True)
        return

    from widen_cli import claims, display, distributed, memory
    from widen_cli.data import spec_from_config
    from widen_cli.distributed import is_main_process
    from widen_cli.hardware import resolve_device
    from widen_cli.jobs import make_job
    from widen_cli.train import run_training

    claims.stale_seconds()  # a bad $WIDEN_CLAIM_TIMEOUT is refused before anything is written
    job = make_job(run)
    ctx = distributed.from_env()  # under torchrun: this process's GPU and its slice of each batch
    memory.check("this run", memory.run_bytes(run, spec_from_config(run.dataset), job.member, ctx.world),
                 resolve_device(distributed.device_for(ctx, run.device)))
    result = run_training(replace(job, restart=restart), err)
    if not is_main_process():
        return
    if result.skipped:
        err.print(f"{job.run_dir} is done (status {result.summary.get('status', 'finished')}); showing its summary "
                  f"(delete the folder to retrain)")
    display.summary(console, result.summary, job.run_dir)


@app.command("sweep-width")
@user_errors
def sweep_width(
    overrides: Overrides = None,
    dataset: Dataset = None,
    base_width: Annotated[Optional[str], _opt("Dense baseline width (its weights are the budget); several: 8,12,18.",
                                              panel=FAMILY)] = None,
    widths: Annotated[Optional[str], _opt("Comma-separated widths, e.g. 18,25,36,51,72.", panel=FAMILY)] = None,
    factors: Annotated[Optional[str], _opt("Or widening factors, e.g. 1,2,4. Default: powers of sqrt(2).",
                                           panel=FAMILY)] = None,
    seeds: Annotated[Optional[str], _opt("Comma-separated seeds, e.g. 0,1,2. Default: 0.", panel=FAMILY)] = None,
    method: Annotated[Optional[str], _opt("sparse (default), linear-/nonlinear-bottleneck, pruned, dense.",
                                          panel=FAMILY, autocompletion=completion.methods)] = None,
    methods: Annotated[Optional[str], _opt("Several, e.g. sparse,linear-bottleneck (same budgets).",
                                           panel=FAMILY, autocompletion=completion.method_lists)] = None,
    distribution: Annotated[Optional[str], _opt(
        "sparse: dense-last (mlp default; caps the width), staggered (resnet18 default), uniform or erk.",
        panel=FAMILY)] = None,
    last_layer_connectivity: Annotated[Optional[str], _opt(
        "sparse: classifier connectivity (several: Figure 4).", panel=FAMILY)] = None,
    connectivity_floor: Annotated[Optional[float], _opt(
        "Default widths keep connectivity above it (0.01).", panel=FAMILY)] = None,
    dense_wide: Annotated[Optional[bool], _opt("Also train dense at every width. Default on.",
                                               "--dense-wide/--no-dense-wide", panel=EXTRA)] = None,
    lrs: Annotated[Optional[str], _opt("Learning rates to train each member at; one is selected.",
                                       panel=EXTRA)] = None,
    select_on: Annotated[Optional[str], _opt("What selects the lr: test (default) or val (sweep.val_fraction).",
                                             panel=EXTRA)] = None,
    model: Model = None,
    launcher: Annotated[str, _opt("local (in turn), pool (--jobs processes) or submitit (SLURM).", panel=RUN,
                                  autocompletion=completion.launchers)] = "local",
    jobs: Annotated[Optional[int], _opt("Members at once (pool: default 1; SLURM: array parallelism).",
                                        panel=RUN, show_default=False)] = None,
    dry_run: Annotated[bool, _opt("Print and write the plan only: no data, no training.", "--dry-run",
                                  panel=RUN)] = False,
    epochs: Epochs = None, batch_size: BatchSize = None, lr: Lr = None, device: Device = None,
    precision: Precision = None, compile_model: Compile = False, data_root: DataRoot = None,
    download: Download = False, image_size: ImageSize = None, subset: Subset = None,
    skip_bad_images: SkipBadImages = False, track: Track = None, out: Out = None,
    name: Name = None, experiment: Experiment = None, config_dir: ConfigDir = None,
    restart: Annotated[bool, _opt("Start unfinished members from epoch 1 (not their checkpoints).", "--restart",
                                  panel=RUN)] = False,
):
    """Train a fixed-parameter-budget family: every member keeps the base width's weight count.

    Writes <out>/<name>/plan.parquet, runs each member and seed as a `widen train` run there,
    then writes results.parquet. The same command again runs only what is missing.

    Example: widen sweep-width --dataset cifar100 --base-width 18 --seeds 0,1,2
    """
    budgets = _numbers(base_width, int, "--base-width")
    # One budget is the base_width key, as for train; several go to sweep.base_widths.
    options = {**locals(), "base_width": budgets[0] if budgets and len(budgets) == 1 else None}
    from widen_cli import claims, config, display, fingerprint, plan, sweep

    sweep.check_launch(launcher, jobs)
    if method and methods:
        raise UserError("give --method or --methods, not both")
    if not (dataset or experiment or any(o.lstrip("+").startswith("dataset=") for o in overrides or ())):
        raise UserError("sweep-width needs --dataset (or a preset, --experiment); add --dry-run to see the plan "
                        "first, e.g. widen sweep-width --dataset digits --dry-run")
    claims.stale_seconds()  # a bad $WIDEN_CLAIM_TIMEOUT is refused before anything is written
    if experiment is None:
        options = {**options, **{k: v for k, v in plan.SWEEP_DEFAULTS.items() if options[k] is None}}
    composing = config.overrides_from_options(experiment, options, overrides)
    cfg = config.compose_config(composing, config_dir or ())
    run = plan.family_run(cfg, budgets[0] if budgets else None)
    run = fingerprint.attach(run, fetch=not dry_run)  # once for every member: they share the data
    settings = plan.settings(
        cfg, widths=_numbers(widths, int, "--widths"), factors=_numbers(factors, float, "--factors"),
        seeds=_numbers(seeds, int, "--seeds"), connectivity_floor=connectivity_floor, dense_wide=dense_wide,
        last_layer_connectivity=_numbers(last_layer_connectivity, float, "--last-layer-connectivity"),
        base_widths=budgets, methods=_names(methods) or ([method] if method else None),
        lrs=_numbers(lrs, float, "--lrs"), select_on=select_on)
    if launcher == "submitit" and not dry_run:
        sweep.slurm.check(settings)  # no SLURM here (and no explicit local executor): refused before writing
    family = plan.plan_sweep(run, settings, name, plan.methods(composing, config_dir or (), run, settings))
    # Refused before anything is shown or written: a member that cannot fit, data that is not there.
    needs = family.memory(refuse=not dry_run)
    if not dry_run:
        from widen_cli.data import require

        require(run.dataset)
    sweep.claim(family.sweep_dir, family, cfg, restart)
    table = family.table()
    display.plan(console, table, family.sweep_dir)
    display.sweep_cost(err, family.cost())
    err.print(needs, highlight=False, soft_wrap=True)
    sweep.write_plan(family.sweep_dir, table)
    if dry_run:
        return
    results = sweep.run(family.jobs(), launcher, jobs, family.sweep_dir, err, settings, restart)
    display.sweep_results(console, results, family.sweep_dir)
    if sweep.failures(results, err):
        raise typer.Exit(1)


KERNEL = kernel_defaults()  # conf/kernel.yaml: shown in --help, applied by kernel_config


def _kernel(key: str, help: str):
    # The default in the text: typer prints a show_default string in parentheses, "[default: (8)]".
    return typer.Option(help=f"{help} Default: {KERNEL[key]}.")


@app.command("kernel-distance")
@user_errors
def kernel_distance(
    width: Annotated[Optional[int], typer.Option(help="One width (hidden units).")] = None,
    widths: Annotated[Optional[str], typer.Option(
        help="Comma-separated widths, e.g. 8,32,128,216,328,512,635. Default: those (Figure 7) when they fit the "
        "budget, else 7 geometric steps from the base width to the largest possible.")] = None,
    base_width: Annotated[Optional[int], _kernel("base_width", "Dense width whose weight count, "
                                                 "base*(input_dim+outputs), is the budget (Figure 7: 6,352).")] = None,
    weights: Annotated[Optional[int], typer.Option(help="Or the budget as a weight count.")] = None,
    input_dim: Annotated[Optional[int], _kernel("input_dim", "d, for Gaussian inputs; datasets set it.")] = None,
    outputs: Annotated[Optional[int], _kernel("outputs", "Read-out units (a dataset's class count).")] = None,
    inputs: Annotated[Optional[str], _kernel("inputs", f"Input pairs: {', '.join(KERNEL_INPUTS)}. Dataset test "
                                             "images are flattened and standardised per pixel.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Where the dataset lies (torchvision layout).")] = None,
    download: Download = False,
    pairs: Annotated[Optional[int], _kernel("pairs", "Input pairs (x, y), x != y.")] = None,
    inits: Annotated[Optional[int], _kernel("inits", "Independent initialisations per width, fresh mask and "
                                            "values each.")] = None,
    mask_samples: Annotated[Optional[int], _kernel("mask_samples", "Theorem 1: Bernoulli masks per pair averaged "
                                                   "in place of the 2^d mask sum (fresh for every 64 pairs).")] = None,
    distribution: Annotated[Optional[str], _kernel("distribution", "How the budget is spread over the two layers, "
                                                   "the names of sweep-width's --distribution: dense-last (the "
                                                   "read-out stays dense, the first layer keeps the rest; the "
                                                   "paper's Figure 7 code), uniform (one connectivity in both; "
                                                   "the theory's set-up), staggered or erk. Exact counts, placed "
                                                   "at random.")] = None,
    reference: Annotated[Optional[str], _kernel("reference", "The infinite-width kernel: analytic (arc-cosine) or "
                                                "dense:N, a dense width-N network at initialisation as the paper "
                                                "did (dense:10000).")] = None,
    seed: Annotated[Optional[int], _kernel("seed", "Seeds the pairs, masks and weights.")] = None,
    device: Annotated[Optional[str], _kernel("device", "auto (CUDA when present), cpu, cuda or cuda:N.")] = None,
    out: Annotated[Optional[Path], _kernel("out", "Output root; the table goes to <out>/<name>/.")] = None,
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
    options = dict(locals())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from widen_cli import display, kernels, memory
    from widen_cli.hardware import resolve_device
    from widen_cli.kernel_config import kernel_config

    options["widths"] = ([width] if width is not None else []) + (_numbers(widths, int, "--widths") or []) or None
    cfg, ds = kernel_config(options)
    members = kernels.family(cfg)  # refuses impossible widths before any data is read
    dev = resolve_device(cfg.device)
    memory.check("kernel-distance", memory.kernel_bytes(cfg, ds), dev, "--pairs or dense reference")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("kernel distance", total=len(members))
        table = kernels.run(cfg, ds, dev, on_width=lambda m: progress.advance(task))
    display.kernel_table(console, table, cfg.run_dir)


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
    from widen_cli import display
    from widen_cli import report as report_mod

    res = report_mod.load(folders, lambda msg: err.print(f"[yellow]warning:[/yellow] {msg}", highlight=False,
                                                          markup=True, soft_wrap=True))
    plots, table = report_mod.write(res, out)
    if len(table):
        display.table1(console, report_mod.table1_display(table))
    again = f" ({res.repeats} of them repeat another's experiment, counted once)" if res.repeats else ""
    err.print(f"{len(res.runs)} runs{again}, {len(res.plans)} plans, {len(res.kernels)} kernel tables -> "
              f"{len(plots)} figures: {', '.join(p.name for p in plots) or 'none'}")
    console.print(f"wrote {out / 'index.html'}", highlight=False)


def main() -> None:
    """The console script: typer's own usage errors (an option of the wrong type, an unknown option)
    become one `error:` line with exit code 2 as well, and so does a Hydra -m/--multirun."""
    hint = multirun_hint(sys.argv[1:])
    if hint:
        err.print(f"[bold red]error:[/bold red] {hint}", highlight=False, soft_wrap=True)
        sys.exit(2)
    try:
        code = app(standalone_mode=False)
    except Exception as e:  # click's UsageError, raised by typer's vendored click
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ != "NoArgsIsHelpError":  # (the help is already shown)
            err.print(f"[bold red]error:[/bold red] {e.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
