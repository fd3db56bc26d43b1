"""The plan of `widen sweep-width`: one composed config -> a base run per budget (sweep.base_widths)
and method (sweep.methods) -> each family's widths -> every member planned once -> one Job per member,
learning rate (sweep.lrs) and seed, kept once per run folder. Pure: no data read, no training."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from widen_cli import budget, compose, datasets, results, schema, validation
from widen_cli.schema import MethodConfig, RunConfig, SweepConfig
from widen_cli.datasets import spec_from_config
from widen_cli.errors import UserError
from widen_cli.identity import family_identity, folder_name, run_name, without_lr
from widen_cli.jobs import Job, make_job
from widen_cli.methods import method_of
from widen_cli.methods.sparse import SPARSE

# Without a preset, sweeps default to the paper's main method (the model follows the dataset, as for train).
SWEEP_DEFAULTS = {"method": SPARSE.name}
# Dense members: exactly what composing method=dense gives, without the family's method options (so
# their folders are those of plain dense runs).
DENSE = schema.DENSE


def family_run(cfg, base_width: int | None) -> RunConfig:
    """The family's base run, validated (`cfg` is left as it is): the base width is the option's, else the
    config's base_width, else its width; the base run is the member at that width."""
    base = next((b for b in (base_width, cfg.base_width, cfg.width) if b is not None), None)
    return validation.validate(at_base_width(cfg, base))


def at_base_width(cfg, base: int):
    """A copy of the composed config with width and base_width the family's base width: the config the
    base run is validated from, and the one sweep.yaml records."""
    cfg = copy.deepcopy(cfg)
    cfg.width = cfg.base_width = base
    return cfg


def settings(cfg, **given) -> SweepConfig:
    """The config's `sweep:` section with the sweep options that were given (None: not given), validated."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.sweep, resolve=True)
    for key, other in (("widths", "factors"), ("factors", "widths")):  # an option replaces a preset's other one
        if given.get(key) is not None and given.get(other) is None:
            data[other] = None
    data.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in given.items() if v is not None})
    cfg = OmegaConf.create({"sweep": data})
    return validation.sweep_config(cfg)


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
        method = run.method if llc is None else budget.fix_last_layer(run.method, llc)
        for w in widths:
            if llc is not None and len(last_layer_connectivities) > 1 and \
                    not budget.is_valid(run.model, spec, run.base_width, w, method):
                continue
            members.append((budget.plan_member(run.model, spec, run.base_width, w, method),
                            method.last_layer_connectivity))
    m = method_of(run.method)

    def dense(ws):
        return [(budget.plan_member(run.model, spec, run.base_width, w, DENSE), None) for w in ws]

    # The method's parents first (the local launcher runs jobs in order), then its members and companions.
    return (dense(m.parent_widths(run.base_width, widths)) + [(p, c) for p, c in members if m.in_family(p)]
            + dense(m.companion_widths(run.base_width, widths, dense_wide)))


def is_dense_baseline(member: budget.Member) -> bool:
    """A member at its base width that keeps every weight (sparse, non-linear bottleneck): the dense
    baseline itself (it trains to the same numbers), not a model of its own (Method.is_dense_baseline)."""
    return method_of(member).is_dense_baseline(member)


def member_run(run: RunConfig, member: budget.Member, llc: float | None, seed: int, out: Path,
               lr: float | None = None) -> RunConfig:
    """The member's own RunConfig, derived from its family's: its width, method, seed and (with --lrs) its
    learning rate, in the sweep folder."""
    method = DENSE if method_of(member).dense else budget.fix_last_layer(run.method, llc)
    optim = run.optim if lr is None else replace(run.optim, lr=lr)
    return replace(run, width=member.width, seed=seed, method=method, optim=optim, out=str(out), name=None)


@dataclass(frozen=True)
class Family:
    """One budget and one method: its base run and its members (each with its last-layer connectivity)."""
    run: RunConfig
    members: list[tuple[budget.Member, float | None]]


def base_widths(run: RunConfig, s: SweepConfig) -> list[int]:
    """The sweep's budgets: sweep.base_widths (--base-width 8,12,...), else the base run's."""
    return list(dict.fromkeys(s.base_widths)) if s.base_widths else [run.base_width]


OTHER_METHODS = "methods_"  # where compose_sweep puts the sweep's methods beside the base run's (taken out after)


def compose_sweep(overrides: list[str], dirs, names: list[str] | None = None):
    """The sweep's config, composed once. With several methods (`names`), every conf/method YAML is
    composed beside the base run's method (Hydra's group@package override, +method@methods_.m0=pruned):
    the sweep's methods, and the base method's own YAML, to tell what the options and the preset set in
    it. Returns the config as the overrides alone compose it, and Methods. A trailing method.KEY=VALUE
    that the base run's method lacks (rigl's method.delta_t beside sparse) goes to the listed methods
    that have KEY (Methods.options); one that none of them has is refused as an unknown key."""
    from omegaconf import open_dict

    valid = compose.choices("method", dirs)
    for n in names or ():
        if n not in valid:
            raise UserError(f"unknown method {n!r}; valid: {', '.join(valid)}")
    listed, names = list(names or ()), valid if names else []
    # Several methods: method options are force-added (++) to the base run's method, then taken out of it
    # where its YAML lacks them.
    given = [f"++{o.lstrip('+')}" if names and _key(o).startswith("method.") and "=" in o else o for o in overrides]
    extra = [f"+method@{OTHER_METHODS}.m{i}={n}" for i, n in enumerate(names)]
    cfg = compose.compose_config([*given, *extra], dirs, hydra_node=True)
    base = cfg.hydra.runtime.choices.method  # the YAML the base run's method came from
    others = cfg.get(OTHER_METHODS, {})
    nodes = {n: others[f"m{i}"] for i, n in enumerate(names)}
    options = {}
    for k in (k.removeprefix("method.") for k in map(_key, given) if k.startswith("method.")) if names else ():
        if k in nodes[base]:
            continue
        if not any(k in nodes[n] for n in listed):
            raise UserError(compose._unknown_key(f"method.{k}", overrides, dirs))
        options[k] = cfg.method[k]
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.pop(OTHER_METHODS, None)
        for k in options:
            del cfg.method[k]
    return cfg, Methods(overrides, dirs, cfg, base, nodes, options)


@dataclass(frozen=True)
class Methods:
    """A sweep's methods as composed with its config (compose_sweep)."""
    overrides: list[str]
    dirs: list
    cfg: object  # the composed config
    base: str  # the conf/method YAML of the base run's method
    nodes: dict  # every conf/method YAML by name, composed (empty: composed without them)
    options: dict = field(default_factory=dict)  # trailing method options the base run's method has no key for

    def configs(self, names: list[str]) -> list[MethodConfig]:
        """Each method in `names`, validated, as if composed alone with the command's overrides: the base
        run's method as composed; another one its own YAML, with the keys a preset or config file set in
        the base run's method, and the trailing method.KEY=VALUE options it has a KEY for (pruned's
        method.prune is no key of sparse). sweep.methods from a config file (not --methods): composed
        once more, with every method."""
        from omegaconf import open_dict

        if not any(n != self.base for n in names):
            return [family_run(self.cfg, None).method]
        if not self.nodes:
            return compose_sweep(self.overrides, self.dirs, names)[1].configs(names)
        options = {k.removeprefix("method.") for k in map(_key, self.overrides) if k.startswith("method.")}
        own = self.nodes[self.base]
        # What the preset or a config file set in the base run's method (Hydra merges it into any method).
        merged = [k for k in self.cfg.method if k not in options and (k not in own or own[k] != self.cfg.method[k])]
        out = []
        for name in dict.fromkeys(names):
            cfg = copy.deepcopy(self.cfg)
            if name != self.base:
                node = copy.deepcopy(self.nodes[name])
                with open_dict(node):
                    for k in merged + [k for k in options if k in node]:
                        # the value as Hydra composed it for the base run's method (or beside it: options)
                        node[k] = self.options[k] if k in self.options else self.cfg.method[k]
                cfg.method = node
            out.append(family_run(cfg, None).method)
        return out


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def methods(composed: Methods, run: RunConfig, s: SweepConfig) -> list[MethodConfig] | None:
    """sweep.methods, each validated (Methods.configs); None when it is the base run's method alone."""
    if not s.methods or list(dict.fromkeys(s.methods)) == [run.method.name]:
        return None
    return composed.configs(list(s.methods))


def sweep_identity(families: list[Family], s: SweepConfig) -> dict:
    """What defines a sweep: its family's identity (without widths and seeds, so a sweep can grow); with
    several budgets or methods, their lists; with --lrs, no learning rate (the lrs may grow too). A sweep
    of one budget and one method without --lrs has exactly its family's identity, as before."""
    runs = [f.run for f in families]
    ident = family_identity(runs[0])
    budgets = sorted({r.base_width for r in runs})
    methods = list(dict.fromkeys(r.method for r in runs))
    if len(budgets) > 1:
        ident["base_width"] = budgets
    if len(methods) > 1:
        ident["method"] = [family_identity(r)["method"] for r in runs if r.base_width == runs[0].base_width]
    return without_lr(ident) if s.lrs else ident


def sweep_name(families: list[Family], s: SweepConfig) -> str:
    """Readable parts plus a hash of sweep_identity (one budget and method without --lrs: the name the
    sweep had before sweeps could hold several)."""
    runs = [f.run for f in families]
    methods = "+".join(dict.fromkeys(r.method.name for r in runs))
    budgets = "+".join(map(str, dict.fromkeys(r.base_width for r in runs)))
    tuned = "-lrs" if s.lrs else ""
    return folder_name(f"{runs[0].dataset.name}-{runs[0].model.name}-{methods}-b{budgets}{tuned}",
                       sweep_identity(families, s))


@dataclass(frozen=True)
class SweepPlan:
    run: RunConfig  # the first family's base run
    settings: SweepConfig
    families: list[Family]  # one per budget and method
    sweep_dir: Path

    @property
    def entries(self) -> list[tuple[RunConfig, budget.Member, float | None]]:
        """Every member once (family base run, member, last-layer connectivity): a member shared between
        families (the dense models of two methods over one budget) is the same run folder, kept once."""
        seen = {}
        for f in self.families:
            for m, llc in f.members:
                # The dense baseline is one run whichever family plans it (the dense one of pruned or linear
                # bottleneck, or the sparse or non-linear member at the base width): keyed by the dense run's
                # folder, kept as the family member, so that family's line keeps its base point.
                key = run_name(member_run(f.run, replace(m, method=DENSE.name) if is_dense_baseline(m) else m, llc,
                                          0, self.sweep_dir))
                if key not in seen or (method_of(seen[key][1]).dense and not method_of(m).dense):
                    seen[key] = (f.run, m, llc)
        return list(seen.values())

    @property
    def members(self) -> list[tuple[budget.Member, float | None]]:
        return [(m, llc) for _, m, llc in self.entries]

    @property
    def lrs(self) -> list[float | None]:
        """The learning rates every member trains at (None: the recipe's optim.lr)."""
        return list(dict.fromkeys(self.settings.lrs)) if self.settings.lrs else [None]

    def jobs(self) -> list[Job]:
        """One job per member, learning rate and seed; every seed of a member shares its plan. Dense runs
        that parent magnitude-rewind members keep their weights at the rewind epochs; each pruned job holds
        its parent's job, the very dense job of the sweep (parents are planned before their members)."""
        rewind = tuple(sorted({e for f in self.families for e in method_of(f.run).parent_keep_epochs(f.run)}))
        jobs = {}
        for run, m, llc in self.entries:
            for lr in self.lrs:
                for seed in self.settings.seeds:
                    job = make_job(member_run(run, m, llc, seed, self.sweep_dir, lr), m,
                                   rewind if method_of(m).dense else (), jobs)
                    jobs.setdefault(job.run_dir, job)
        return list(jobs.values())

    def identity(self) -> dict:
        return sweep_identity(self.families, self.settings)

    def cost(self) -> dict:
        """What the sweep is about to start: runs, epochs in all, training compute (widen_cli/cost.py;
        None where the image count is unknown before reading the data), the images an epoch trains on
        (`documented`: the dataset's documented size, its files not there yet), and where it would run.
        Each distinct member's forward pass is counted once, whatever its seeds and learning rates."""
        from widen_cli import cost
        from widen_cli.hardware import resolve_device

        run, jobs = self.run, self.jobs()
        images = cost.train_images(run.dataset)
        flops = None
        if images.count is not None:
            spec = spec_from_config(run.dataset)
            macs = {}
            for j in jobs:
                key = cost.member_key(j.member)
                if key not in macs:
                    macs[key] = cost.forward_macs(run.model, spec, j.member)
            flops = sum(cost.training_flops(macs[cost.member_key(j.member)], images.count, j.epochs) for j in jobs)
        return dict(members=len(self.members), seeds=len(self.settings.seeds), lrs=len(self.lrs),
                    runs=len(jobs), epochs=sum(j.epochs for j in jobs), flops=flops, images=images.count,
                    documented=images.documented, dataset=run.dataset.name,
                    cpu=resolve_device(run.device).type == "cpu")

    def memory(self, refuse: bool = True) -> str:
        """The largest member's memory estimate against the device (memory.check: refused if it cannot fit,
        unless not `refuse`)."""
        from widen_cli import memory
        from widen_cli.hardware import resolve_device

        spec = spec_from_config(self.run.dataset)
        sizes = [(memory.run_bytes(member_run(run, m, llc, 0, self.sweep_dir), spec, m), m)
                 for run, m, llc in self.entries]
        parts, m = max(sizes, key=lambda pm: sum(pm[0].values()))
        return memory.check(f"the largest run (width {m.width}, {m.method})", parts, resolve_device(self.run.device),
                            refuse=refuse, here=False)

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
                base_width=m.base_width, variant=m.variant,
            ))
        return pd.DataFrame(rows, columns=results.PLAN_COLUMNS)


def plan_sweep(run: RunConfig, s: SweepConfig, name: str | None = None,
               methods: list[MethodConfig] | None = None) -> SweepPlan:
    """The whole sweep from its base run and settings: one family per budget (sweep.base_widths) and
    method (`methods`, default the run's), each with its own widths. With sweep.select_on val every
    member holds out sweep.val_fraction of the training split. An impossible member is refused here."""
    validation.check_name(name)
    if s.select_on == "val":
        if not datasets.get(run.dataset.name).holds_out:  # else every member would fail as it loads its data
            raise UserError(f"--select-on val holds out part of the training split, which {run.dataset.name} "
                            f"(image folders, val/ being the test set) cannot; use --select-on test")
        run = replace(run, dataset=replace(run.dataset, val_fraction=s.val_fraction))
    spec = spec_from_config(run.dataset)
    budgets = base_widths(run, s)
    families = []
    for b in budgets:
        for method in methods or [run.method]:
            base = replace(run, width=b, base_width=b, method=method)
            found = widths(base, spec, s)
            if len(budgets) > 1 and s.widths:  # explicit widths: each budget's family from its base width up
                found = [w for w in found if w >= b]
                if not found:
                    raise UserError(f"none of the widths {list(s.widths)} is >= the base width {b}")
            families.append(Family(base, plan_family(base, spec, found, s.dense_wide,
                                                     list(s.last_layer_connectivity))))
    return SweepPlan(families[0].run, s, families, Path(run.out) / (name or sweep_name(families, s)))
