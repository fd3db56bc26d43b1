"""The plan of `widen sweep-width`: one composed config -> the family's base run -> its widths ->
every member planned once -> one Job per member and seed. Pure: no data read, no training."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from widen_cli import budget, config, results
from widen_cli.config import RunConfig, SweepConfig
from widen_cli.errors import UserError
from widen_cli.jobs import Job

# Without a preset, sweeps default to the paper's main method (the model follows the dataset, as for train).
SWEEP_DEFAULTS = {"method": "sparse"}
# Dense members: exactly what composing method=dense gives, without the family's method options (so
# their folders are those of plain dense runs).
DENSE = config.DENSE


def family_run(cfg, base_width: int | None) -> RunConfig:
    """The family's base run, validated: the base width is the option's, else the config's base_width,
    else its width; the base run is the member at that width."""
    base = next((b for b in (base_width, cfg.base_width, cfg.width) if b is not None), None)
    cfg.width = cfg.base_width = base
    return config.validate(cfg)


def settings(cfg, **given) -> SweepConfig:
    """The config's `sweep:` section with the sweep options that were given (None: not given), validated."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.sweep, resolve=True)
    data.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if v is not None})
    cfg = OmegaConf.create({"sweep": data})
    return config.sweep_config(cfg)


def widths(run: RunConfig, spec, s: SweepConfig) -> list[int]:
    """Explicit widths, else the widening factors of the base width, else powers of sqrt(2) down to the
    connectivity floor."""
    if s.widths:
        found = list(s.widths)
    elif s.factors:
        found = budget.widths_from_factors(run.base_width, list(s.factors))
    else:
        found = budget.default_widths(run.model, spec, run.base_width, run.method, s.connectivity_floor)
    if not found:
        raise UserError("no widths to run")
    return sorted(set(found))


def plan_family(run: RunConfig, spec, widths: list[int], dense_wide: bool,
                last_layer_connectivities=(None,)) -> list[tuple[budget.Member, float | None]]:
    """Every member: the family's method at each width, plus dense models at the wider widths.

    The sparse and non-linear bottleneck members at the base width are the dense baseline itself; the
    linear bottleneck's is its full-rank factorisation, so the unmodified dense baseline is added too.
    Pruned members (wider than the base) need their dense parents: the dense baseline and the dense
    models at every wider width are planned whatever dense_wide says, before them.
    With several last-layer connectivities (the Figure 4 grid), impossible combinations are left out.
    Each member comes with its last-layer connectivity (None for dense members).
    """
    members = []
    for llc in last_layer_connectivities:
        method = run.method if llc is None else replace(run.method, last_layer_connectivity=llc)
        for w in widths:
            if llc is not None and len(last_layer_connectivities) > 1 and \
                    not budget.is_valid(run.model, spec, run.base_width, w, method):
                continue
            members.append((budget.plan_member(run.model, spec, run.base_width, w, method),
                            method.last_layer_connectivity))
    if run.method.name == "dense":
        return members
    if run.method.name == "pruned":  # parents first (the local launcher runs jobs in order), always planned
        pruned = [(m, None) for m, _ in members if m.width > run.base_width]
        return [(budget.plan_member(run.model, spec, run.base_width, w, DENSE), None) for w in widths] + pruned
    dense_widths = [w for w in widths if w > run.base_width] if dense_wide else []
    if run.method.name == "linear-bottleneck":
        dense_widths = [run.base_width] + dense_widths
    return members + [(budget.plan_member(run.model, spec, run.base_width, w, DENSE), None) for w in dense_widths]


def member_run(run: RunConfig, member: budget.Member, llc: float | None, seed: int, out: Path) -> RunConfig:
    """The member's own RunConfig, derived from the family's: its width, method and seed, in the sweep folder."""
    method = DENSE if member.method == "dense" else replace(run.method, last_layer_connectivity=llc)
    return replace(run, width=member.width, seed=seed, method=method, out=str(out), name=None)


def sweep_name(run: RunConfig) -> str:
    """Readable parts plus a hash of what defines the family (not its widths or seeds, so a sweep can grow)."""
    return config.folder_name(f"{run.dataset.name}-{run.model.name}-{run.method.name}-b{run.base_width}",
                              run.family_identity())


@dataclass(frozen=True)
class SweepPlan:
    run: RunConfig  # the family's base run
    settings: SweepConfig
    members: list[tuple[budget.Member, float | None]]  # with each member's last-layer connectivity
    sweep_dir: Path

    def jobs(self) -> list[Job]:
        """One job per member and seed; every seed of a member shares its plan. Dense parents of
        magnitude-rewind members keep their weights at the rewind epoch."""
        method = self.run.method
        rewind = (method.rewind_epoch,) if method.name == "pruned" and method.prune == "magnitude-rewind" else ()
        return [Job(member_run(self.run, m, llc, seed, self.sweep_dir), m, rewind if m.method == "dense" else ())
                for m, llc in self.members for seed in self.settings.seeds]

    def cost(self) -> dict:
        """What the sweep is about to start: runs, epochs in all, training compute (widen_cli/cost.py;
        None where the image count is unknown before reading the data), and where it would run."""
        from widen_cli import cost
        from widen_cli.data import spec_from_config
        from widen_cli.hardware import resolve_device

        run, seeds, jobs = self.run, len(self.settings.seeds), self.jobs()
        images = cost.train_images(run.dataset)
        flops = None
        if images is not None:
            spec = spec_from_config(run.dataset)
            flops = sum(cost.training_flops(cost.forward_macs(run.model, spec, j.member), images, j.epochs)
                        for j in jobs)
        return dict(members=len(self.members), seeds=seeds, runs=len(jobs), epochs=sum(j.epochs for j in jobs),
                    flops=flops,
                    cpu=resolve_device(run.device).type == "cpu")

    def table(self):
        import pandas as pd

        rows = []
        for m, llc in self.members:
            sizes = [budget.numel(s) for s in m.layers.values()]
            kept = [m.kept.get(n) for n in m.layers]  # none yet: global magnitude pruning decides them
            rows.append(dict(
                width=m.width, widening_factor=m.widening_factor, method=m.method, distribution=m.distribution,
                within=m.within, last_layer_connectivity=llc, connectivity=m.connectivity,
                n_weights=m.n_weights, n_weights_dense=m.n_weights_dense, budget=m.budget, deviation=m.deviation,
                bottleneck_ratio=m.bottleneck_ratio, layers=list(m.layers), layer_sizes=sizes, layer_kept=kept,
                layer_kept_fraction=[None if k is None else k / s for k, s in zip(kept, sizes)],
                variant=m.variant,
            ))
        return pd.DataFrame(rows, columns=results.PLAN_COLUMNS)


def plan_sweep(run: RunConfig, s: SweepConfig, name: str | None = None) -> SweepPlan:
    """The whole sweep from its base run and settings; an impossible member is refused here."""
    from widen_cli.data import spec_from_config

    spec = spec_from_config(run.dataset)
    members = plan_family(run, spec, widths(run, spec, s), s.dense_wide, list(s.last_layer_connectivity))
    return SweepPlan(run, s, members, Path(run.out) / (name or sweep_name(run)))
