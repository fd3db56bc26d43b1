"""What each command does once its options are parsed: compose the config, show or plan, dispatch.

widen_cli/cli.py declares the options and calls these; each imports what it uses (torch, pandas, Hydra)
here, so that `--help` and option errors answer at once.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from widen_cli.errors import UserError
from widen_cli.terminal import console, err


def train(given: dict, experiment: str | None, overrides: list[str] | None, config_dirs: list[Path],
          show_config: bool, restart: bool) -> None:
    """`widen train`: `given` holds the options' config keys and values (widen_cli/options.py)."""
    from widen_cli import compose, fingerprint, identity

    _, run = compose.load(compose.overrides_from_options(experiment, given, overrides), config_dirs)
    run = fingerprint.attach(run, fetch=not show_config)  # once: what data this is names the run folder
    if show_config:
        console.print(identity.to_yaml(run), end="", highlight=False, markup=False, soft_wrap=True)
        console.print(f"# run folder: {identity.run_dir(run)}", highlight=False, markup=False, soft_wrap=True)
        return

    from widen_cli import claims, display, distributed, memory
    from widen_cli.datasets import spec_from_config
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


def sweep_width(given: dict, sweep: dict, experiment: str | None, overrides: list[str] | None,
                config_dirs: list[Path], launcher: str, jobs: int | None, dry_run: bool, restart: bool) -> None:
    """`widen sweep-width`: `given` as for train; `sweep` the sweep options (None: not given), by their
    names in the config's `sweep:` section (base_widths: --base-width's budgets)."""
    from widen_cli import claims, compose, display, fingerprint, plan, slurm
    from widen_cli import sweep as sweeps

    budgets = sweep["base_widths"]
    # One budget is the base_width key, as for train; several go to sweep.base_widths.
    if budgets and len(budgets) == 1:
        given = {**given, "base_width": budgets[0]}
    sweeps.check_launch(launcher, jobs)
    if given.get("method") and sweep["methods"]:
        raise UserError("give --method or --methods, not both")
    if not (given.get("dataset") or experiment or any(o.lstrip("+").startswith("dataset=") for o in overrides or ())):
        raise UserError("sweep-width needs --dataset (or a preset, --experiment); add --dry-run to see the plan "
                        "first, e.g. widen sweep-width --dataset digits --dry-run")
    claims.stale_seconds()  # a bad $WIDEN_CLAIM_TIMEOUT is refused before anything is written
    methods = sweep["methods"] or ([given["method"]] if given.get("method") else None)
    if experiment is None:
        given = {**given, **{k: v for k, v in plan.SWEEP_DEFAULTS.items() if given.get(k) is None}}
    composing = compose.overrides_from_options(experiment, given, overrides)
    cfg, composed = plan.compose_sweep(composing, config_dirs, sweep["methods"])  # every method, composed once
    run = plan.family_run(cfg, budgets[0] if budgets else None)
    run = fingerprint.attach(run, fetch=not dry_run)  # once for every member: they share the data
    settings = plan.settings(cfg, **{**sweep, "methods": methods})
    if launcher == "submitit" and not dry_run:
        slurm.check(settings)  # no SLURM here (and no explicit local executor): refused before writing
    family = plan.plan_sweep(run, settings, given.get("name"), plan.methods(composed, run, settings))
    # Refused before anything is shown or written: a member that cannot fit, data that is not there.
    needs = family.memory(refuse=not dry_run)
    if not dry_run:
        from widen_cli.data import require

        require(run.dataset)
    sweeps.claim(family.sweep_dir, family, plan.at_base_width(cfg, run.base_width), restart)
    table = family.table()
    display.plan(console, table, family.sweep_dir)
    display.sweep_cost(err, family.cost())
    err.print(needs, highlight=False, soft_wrap=True)
    sweeps.write_plan(family.sweep_dir, table)
    if dry_run:
        return
    results = sweeps.run(family.jobs(), launcher, jobs, family.sweep_dir, err, settings, restart)
    display.sweep_results(console, results, family.sweep_dir)
    if sweeps.failures(results, err):
        import typer

        raise typer.Exit(1)


def kernel_distance(given: dict, widths: list[int] | None, config_dirs: list[Path]) -> None:
    """`widen kernel-distance`: `given` holds conf/kernel.yaml's keys (and weights, dataset.root,
    dataset.download) that the options set; widths the --width and --widths together."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from widen_cli import display, kernels, memory
    from widen_cli.hardware import resolve_device
    from widen_cli.kernel_config import kernel_config

    cfg, ds = kernel_config({**given, "widths": widths}, config_dirs)
    members = kernels.family(cfg)  # refuses impossible widths before any data is read
    dev = resolve_device(cfg.device)
    memory.check("kernel-distance", memory.kernel_bytes(cfg, ds), dev, "--pairs or dense reference")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("kernel distance", total=len(members))
        table = kernels.run(cfg, ds, dev, on_width=lambda m: progress.advance(task))
    display.kernel_table(console, table, cfg.run_dir)


def report(folders: list[Path], out: Path) -> None:
    """`widen report`: read every result table under the folders, write the figures and Table 1."""
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
