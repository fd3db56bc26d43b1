"""The `widen` command line: a thin typer layer that turns options into Hydra overrides."""
from __future__ import annotations

import functools
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from widen_cli import config as config_mod
from widen_cli.distributed import is_main_process
from widen_cli.errors import UserError

app = typer.Typer(
    help="Fixed-parameter-budget width experiments: is a wider network better because it is wider, "
    "or because it has more parameters?",
    no_args_is_help=True, add_completion=True, pretty_exceptions_show_locals=False,
)
# Piped output (logs, CI) gets room for the wide tables; a terminal keeps its own width.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
console = Console(width=None if sys.stdout.isatty() else 160)

PRECISION_HELP = "fp32 (default) or bf16 (autocast; on CPU too, where it is usually slower). Part of the run's identity."
SKIP_HELP = "Image folders: leave out (and count) files that cannot be decoded instead of stopping at the first."
COMPILE_HELP = "torch.compile the model (slow to start; pays off on long GPU runs). Not part of the run's identity."
OVERRIDES_HELP = ("Hydra overrides applied after the options, e.g. optim.lr=0.05 model.activation=linear "
                  "dataset.subset=2048 (see --show-config for every key).")


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
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if is_main_process():
                err.print(f"[bold red]error:[/bold red] {e}", highlight=False, soft_wrap=True)
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


QUOTED = ("name", "out", "dataset.root")


def options_to_overrides(experiment: Optional[str], options: dict, extra: Optional[List[str]]) -> list[str]:
    """Options that were given become Hydra overrides: the preset first, then options, then trailing overrides."""
    overrides = [f"+experiment={experiment}"] if experiment else []
    for key, value in options.items():
        if value is None or value is False:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif key in QUOTED and "'" not in str(value):
            value = f"'{value}'"  # a name or path stays a string: --name nan, --out "my runs"
        overrides.append(f"{key}={value}")
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
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help=SKIP_HELP),
    seed: Optional[int] = typer.Option(None, help="Seeds data order, initialisation and masks. Default: 0."),
    out: Optional[Path] = typer.Option(None, help="Output root; the run goes to <out>/<name>/. Default: runs."),
    name: Optional[str] = typer.Option(None, help="Run folder name. Default: made from the settings plus a "
                                       "short hash, so the same command always finds the same folder."),
    experiment: Optional[str] = typer.Option(None, help="A preset from conf/experiment/, e.g. smoke."),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished run's checkpoint and partial "
                                 "metrics and start it from epoch 1 (a finished run is kept)."),
):
    """Train one model and write config.yaml, metrics.parquet and summary.parquet to <out>/<name>/.

    The run checkpoints after every epoch: the same command again resumes an interrupted run. For
    several GPUs: torchrun --nproc_per_node=N -m widen_cli train ...

    Example: widen train --dataset cifar10 --model resnet18 --width 18 --epochs 300 optim.lr=0.05
    """
    options = {
        "dataset": dataset, "model": model, "method": method, "width": width, "base_width": base_width,
        "optim.epochs": epochs, "optim.batch_size": batch_size, "optim.lr": lr, "device": device,
        "precision": precision, "compile": compile_model,
        "dataset.root": data_root, "dataset.download": download, "dataset.image_size": image_size,
        "dataset.subset": subset, "seed": seed, "out": out, "name": name,
        "++dataset.skip_bad_images": skip_bad_images,  # ++: accepted (and unused) by datasets without the key
    }
    cfg, run = config_mod.load(options_to_overrides(experiment, options, overrides))
    if show_config:
        cfg.base_width, cfg.name = run.base_width, run.run_name()
        console.print(OmegaConf.to_yaml(cfg, resolve=True), end="", highlight=False, markup=False, soft_wrap=True)
        console.print(f"# run folder: {run.run_dir}", highlight=False, markup=False, soft_wrap=True)
        return

    from widen_cli.jobs import make_job
    from widen_cli.train import run_training

    result = run_training(make_job(run), err, restart=restart)
    if not is_main_process():
        return
    if result.skipped:
        err.print(f"{run.run_dir} is done (status {result.summary.get('status', 'finished')}); showing its summary "
                  f"(delete the folder to retrain)")
    print_summary(result.summary, run.run_dir)


def print_summary(s: dict, run_dir: Path) -> None:
    table = Table(title=f"[bold]{run_dir}[/bold]", show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column()
    for key in ("dataset", "model", "method", "width", "base_width", "n_weights", "connectivity", "epochs",
                "status", "best_test_acc", "final_test_acc", "final_train_acc", "wall_seconds"):
        value = s.get(key, "finished") if key == "status" else s[key]  # older summaries have no status
        text = (f"{value:.2%}" if key.endswith("_acc") else f"{value:,}" if key.startswith("n_weights")
                else f"{value:.1f} s" if key == "wall_seconds" else str(value))
        table.add_row(key, text)
    console.print(table)


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
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help=SKIP_HELP),
    out: Optional[Path] = typer.Option(None, help="Output root; the sweep goes to <out>/<name>/. Default: runs."),
    name: Optional[str] = typer.Option(None, help="Sweep folder name. Default: from the settings plus a hash."),
    experiment: Optional[str] = typer.Option(None, help="A preset from conf/experiment/, e.g. fig1_cifar100."),
    restart: bool = typer.Option(False, "--restart", help="Start unfinished members from epoch 1 instead of "
                                 "resuming their checkpoints (finished members are kept)."),
):
    """Train a fixed-parameter-budget family: every member keeps the base width's weight count.

    Prints the plan and writes <out>/<name>/plan.parquet, then runs each member (and seed) as a
    `widen train` run under <out>/<name>/ and writes <out>/<name>/results.parquet. Running the same
    command again runs only what is missing, resuming interrupted members.

    Example: widen sweep-width --dataset cifar100 --base-width 18 --seeds 0,1,2
    """
    from omegaconf import OmegaConf

    from widen_cli import budget, distributed, results, sweep
    from widen_cli.data import spec_from_config

    if distributed.from_env().enabled:
        raise UserError("sweep-width launches its members itself; use torchrun with widen train, one member "
                        "at a time")
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
        "++dataset.skip_bad_images": skip_bad_images,
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
    if not 0 < floor <= 1:
        raise UserError(f"--connectivity-floor must be in (0, 1], got {floor}")
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
        results.write_table(plan, sweep_dir / results.PLAN_FILE, "plan")
        results.write_text(OmegaConf.to_yaml(cfg, resolve=True), sweep_dir / results.SWEEP_FILE)
    except OSError as e:
        raise UserError(f"cannot write to output folder {sweep_dir}: {e.strerror or e}") from None
    if dry_run:
        return
    job_list = sweep.make_jobs(member_overrides, members, seed_list, sweep_dir)
    errors = sweep.launch(job_list, launcher, jobs, sweep_dir, err, OmegaConf.to_container(s.submitit), restart)
    table = sweep.gather(job_list, sweep_dir, errors)
    print_results(table, sweep_dir)
    diverged, failed = (int((table.status == status).sum()) for status in ("diverged", "failed"))
    if diverged:
        err.print(f"{diverged} of {len(job_list)} runs diverged (non-finite loss; status diverged, not retried)")
    if failed:
        err.print(f"[red]{failed} of {len(job_list)} runs failed (status failed, the error in results.parquet "
                  f"and error.txt); run the same command again to retry them[/red]")
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
    for col in ("method", "width", "seed", "connectivity", "n_weights", "status", "best_test_acc",
                "final_train_acc"):
        table.add_column(col, justify="right")

    def pct(x):
        return f"{x:.2%}" if x == x else "-"  # NaN: a failed run

    for r in df.sort_values(["method", "width", "seed"]).itertuples():
        table.add_row(r.method, str(r.width), str(r.seed), f"{r.connectivity:.4f}", f"{r.n_weights:,}",
                      r.status, pct(r.best_test_acc), pct(r.final_train_acc))
    console.print(table)


@app.command("kernel-distance")
@user_errors
def kernel_distance(
    width: Optional[int] = typer.Option(None, help="One width (hidden units)."),
    widths: Optional[str] = typer.Option(None, help="Comma-separated widths, e.g. 8,32,128,216,328,512,635. "
                                         "Default: those (Figure 7) when they fit the budget, else 7 geometric "
                                         "steps from the base width to the largest possible."),
    base_width: Optional[int] = typer.Option(None, help="Dense width whose weight count, base*(input_dim+outputs), "
                                             "is the budget. Default: 8 (the paper's Figure 7: 6,352 weights)."),
    weights: Optional[int] = typer.Option(None, help="Or the budget as a weight count."),
    input_dim: Optional[int] = typer.Option(None, help="d, for Gaussian inputs. Default 784; datasets set it."),
    outputs: Optional[int] = typer.Option(None, help="Read-out units. Default: 10 (a dataset's class count)."),
    inputs: str = typer.Option("gaussian", help=f"Input pairs: {', '.join(config_mod.KERNEL_INPUTS)}. Dataset "
                               "test images are flattened and standardised per pixel."),
    data_root: Optional[Path] = typer.Option(None, help="Where the dataset lies (torchvision layout)."),
    download: bool = typer.Option(False, "--download", help="Fetch the dataset into --data-root if missing."),
    pairs: int = typer.Option(10_000, help="Input pairs (x, y), x != y."),
    inits: int = typer.Option(10, help="Independent initialisations per width, fresh mask and values each."),
    mask_samples: int = typer.Option(64, help="Theorem 1: Bernoulli masks per pair averaged in place of the 2^d mask sum (fresh for every 64 pairs)."),
    allocation: str = typer.Option("first-layer", help="first-layer: the last layer stays dense and the first "
                                   "keeps an exact count (the paper's code); uniform: both layers at one "
                                   "connectivity, Bernoulli masks (the theory's set-up)."),
    reference: str = typer.Option("analytic", help="The infinite-width kernel: analytic (arc-cosine) or dense:N, "
                                  "a dense width-N network at initialisation as the paper did (dense:10000)."),
    seed: int = typer.Option(0, help="Seeds the pairs, masks and weights."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    out: Path = typer.Option(Path("runs"), help="Output root; the table goes to <out>/<name>/."),
    name: Optional[str] = typer.Option(None, help="Folder name. Default: from the settings plus a hash."),
):
    """How far a sparse one-hidden-layer ReLU network's GP kernel is from the infinite-width kernel.

    At a fixed weight budget, for every width: the empirical distance over input pairs and independent
    initialisations (with its standard error), Theorem 1's exact expression (with its bias part), the
    paper's approximation eq. (6) and the leading-order formula; then the width minimising each. Writes
    <out>/<name>/kernel_distance.parquet. The work is batched over initialisations and pairs in chunks,
    so memory stays bounded (a few blocks of about 64 MB) whatever --pairs, --inits and the widths are.

    Example: widen kernel-distance --widths 8,32,128,216,328,512,635 --inputs mnist --data-root data
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from widen_cli import kernels
    from widen_cli.hardware import resolve_device

    width_list = ([width] if width is not None else []) + (_numbers(widths, int, "--widths") or [])
    cfg, ds = config_mod.kernel_config(
        widths=width_list or None, base_width=base_width, weights=weights, input_dim=input_dim, outputs=outputs,
        inputs=inputs, data_root=None if data_root is None else str(data_root), download=download,
        reference=reference, allocation=allocation, pairs=pairs, inits=inits, mask_samples=mask_samples,
        seed=seed, device=device, out=str(out), name=name)
    members = kernels.family(cfg)  # refuses impossible widths before any data is read
    dev = resolve_device(cfg.device)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("kernel distance", total=len(members))
        table = kernels.run(cfg, ds, dev, on_width=lambda m: progress.advance(task))
    print_kernel_table(table, cfg.run_dir)


def print_kernel_table(df, run_dir: Path) -> None:
    from rich import box

    from widen_cli.kernels import DISTANCES

    r0 = df.iloc[0]
    table = Table(title=f"[bold]{run_dir / 'kernel_distance.parquet'}[/bold]", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption=f"{r0.n_weights:,} weights, d={r0.input_dim}, {r0.outputs} outputs, {r0.inputs} inputs, "
                          f"{r0.allocation} allocation, {r0.reference} reference, {r0.pairs:,} pairs x "
                          f"{r0.inits} inits; * = minimum", header_style="bold")
    for col in ("width", "p1", "p1*d", "empirical", "s.e.", "Theorem 1", "bias", "eq. (6)", "leading"):
        table.add_column(col, justify="right")
    star = {k: df[f"min_{k}"] & (len(df) > 1) for k in DISTANCES}
    for i, r in enumerate(df.itertuples()):
        mark = {k: "*" if v.iloc[i] else " " for k, v in star.items()}
        table.add_row(
            str(r.width), f"{r.first_layer_connectivity:.2e}", f"{r.first_layer_connectivity * r.input_dim:.3g}",
            f"{r.distance_empirical:.2e}{mark['empirical']}", f"{r.distance_empirical_se:.1e}",
            f"{r.distance_theorem1:.2e}{mark['theorem1']}", f"{r.distance_theorem1_bias:+.0e}",
            f"{r.distance_eq6:.2e}{mark['eq6']}", f"{r.distance_leading_order:.2e}{mark['leading_order']}")
    console.print(table)
    if len(df) > 1:
        best = ", ".join(f"{k.replace('_', ' ')} {int(df.width[df[f'min_{k}']].iloc[0])}"
                         for k in DISTANCES)
        console.print(f"minimising width: {best}")


@app.command()
@user_errors
def report(
    folders: List[Path] = typer.Argument(..., help="Run, sweep or kernel-distance folders (or Parquet files); "
                                         "every result table under them is read.", show_default=False),
    out: Path = typer.Option(Path("report"), help="Output folder for the figures, table.md/.csv and index.html."),
):
    """The paper's figures and Table 1 from any mix of Parquet results.

    Writes one PNG and one SVG per figure whose data is present, table.md and table.csv (best test accuracy
    per method and width) and a self-contained index.html into --out.

    Example: widen report runs/cifar100-b18 runs/kernel-fig7 --out report
    """
    from widen_cli import report as report_mod

    res = report_mod.load(folders, lambda msg: err.print(f"[yellow]warning:[/yellow] {msg}", highlight=False,
                                                          markup=True, soft_wrap=True))
    plots, table = report_mod.write(res, out)
    if len(table):
        print_table1(report_mod.table1_display(table))
    err.print(f"{len(res.runs)} runs, {len(res.plans)} plans, {len(res.kernels)} kernel tables -> "
              f"{len(plots)} figures: {', '.join(p.name for p in plots) or 'none'}")
    console.print(f"wrote {out / 'index.html'}", highlight=False)


def print_table1(shown) -> None:
    """One table per setting; a cell is the accuracy over its weight count, so many widths still fit."""
    for setting, rows in shown.groupby("setting", sort=False):
        rows = rows.drop(columns="setting").loc[:, lambda d: (d != "").any()]
        table = Table(title=f"[bold]{setting}[/bold]: best test accuracy (%) and weights", header_style="bold")
        for col in rows.columns:
            table.add_column(col, justify="left" if col == "row" else "right")
        for row in rows.itertuples(index=False):
            table.add_row(*(cell.replace(" (", "\n(") for cell in row))
        console.print(table)


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
