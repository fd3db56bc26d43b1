"""Label runs with what they are drawn and pooled by, and pool them.

A run's setting is a panel (dataset, model, MLP activation), its family a set of members (method, base
width, sparse options), its line a family at one last-layer connectivity. Runs are averaged only over
seeds: the summary's `identity` column (the whole experiment) decides. Runs whose identities differ in
anything but the seed, the width, the base width and the method (the data's fingerprint included: other
data is another setting) are kept in separate settings; sparse
members whose method options differ beyond what the family shows, in separate families. Either way the
label says what differs (`digits mlp, epochs=10`) and one warning names the keys. Plain dense models are
pooled by width within a setting whatever family they came from: base width and method options do not
change a dense model. Runs of a sweep over learning rates (--lrs) come as the selected row of each member
and seed (load.py); their setting says `lr-tuned over 0.01,0.1`, and their lr keeps no one apart.
Runs of one experiment (equal identity, seed included: a copied sweep folder, a dense model two sweeps
planned) are one sample wherever runs are pooled, counted once (repeats, mean_sem).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Callable

import pandas as pd

from widen_cli import identity
from widen_cli.methods import method_of, rows_where
from widen_cli.methods.dense import DENSE

MEMBER_KEYS = ("seed", "width", "base_width", "method")  # identity.FIELDS a family's members differ in
SHOWN_METHOD_KEYS = ("name", "distribution", "within", "last_layer_connectivity", "prune", "scope")  # in the labels


def label_runs(runs: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """Add setting, family, line, dense_model (dense runs and the sparse / non-linear members at their base
    width) and the accuracies in percent. Tables written before a summary column existed get its default."""
    runs = runs.copy()

    def column(name: str, default=None) -> pd.Series:
        given = runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)
        return given.astype(object).where(given.notna(), default)

    dense = rows_where(runs.method, lambda m: m.dense)
    runs["distribution"] = column("distribution").where(~dense, "").fillna("")
    runs["within"] = column("within", "all").where(~dense, "").fillna("")
    runs["last_layer_connectivity"] = pd.to_numeric(column("last_layer_connectivity"), errors="coerce").where(~dense)
    runs["activation"] = column("activation", "relu").where(runs.model == "mlp", "")
    # budget: recorded since summary schema 2; a sparse member holds it exactly, so older rows take n_weights
    runs["budget"] = pd.to_numeric(column("budget"), errors="coerce").fillna(runs.n_weights)
    factor = runs["widening_factor"] if "widening_factor" in runs else pd.Series(math.nan, index=runs.index)
    runs["widening_factor"] = pd.to_numeric(factor, errors="coerce").fillna(runs.width / runs.base_width)
    # Members of a sweep over --lrs were each selected at its own lr: the lr is no setting of theirs.
    tuned = column("lr_tuned", "").fillna("")
    stored = [identity.loads(s) for s in column("identity")]  # None: a row without one (failed)
    identities = [identity.without_lr(i) if i is not None and t else i for i, t in zip(stored, tuned)]
    runs["variant"] = column("variant")
    runs["scope"] = [(i or {}).get("method", {}).get("scope") for i in identities]

    apart = _Apart()
    setting = runs.dataset + " " + runs.model + runs.activation.map(lambda a: "" if a in ("", "relu") else f" {a}")
    setting += tuned.map(lambda t: f", lr-tuned over {t}" if t else "")
    runs["setting"] = setting + apart.suffixes(setting, [None if i is None else _recipe(i) for i in identities])
    family = pd.Series([_family(r) for r in runs.itertuples()], index=runs.index, dtype=object)
    options = [None if i is None else {} if d else _method_options(i) for i, d in zip(identities, dense)]
    runs["family"] = family + apart.suffixes(runs.setting + ": " + family, options)
    runs["line"] = runs.family + runs.last_layer_connectivity.map(lambda c: "" if pd.isna(c) else f", last layer {c:g}")
    at_base = rows_where(runs.method, lambda m: m.baseline_at_base)  # not the linear bottleneck's full rank
    runs["dense_model"] = dense | (at_base & (runs.width == runs.base_width) & (runs.connectivity >= 1 - 1e-9))
    runs["experiment"] = [_experiment(i, r) for i, r in zip(identities, runs.itertuples())]
    runs["test"] = 100 * runs.best_test_acc
    runs["train"] = 100 * runs.final_train_acc
    if apart.keys:
        warn(f"runs that differ in more than the seed are kept apart, not averaged; they differ in "
             f"{', '.join(sorted(apart.keys))}: {listing(apart.labels, 6, '; ')}")
    return runs


def _experiment(ident: dict | None, r) -> str:
    """What makes two runs one sample: their setting and identity, seed included. A dense model's is its
    identity without method and base width (the dense baseline a sparse member at its base width is, a
    dense-wide member of another budget: the same training). Without a recorded identity: its labels."""
    if ident is None:
        return json.dumps([r.setting, DENSE.family_label(r) if r.dense_model else r.line, str(r.width), str(r.seed),
                           "unknown"])
    if r.dense_model:
        ident = {k: v for k, v in ident.items() if k not in ("method", "base_width")}
    return json.dumps([r.setting, ident], sort_keys=True)


# What repeated runs of one experiment must agree in (else the report says which disagree).
NUMBERS = ("status", "best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc", "val_acc")


def repeats(runs: pd.DataFrame, warn: Callable[[str], None]) -> int:
    """How many runs repeat an experiment another run holds (a copied sweep folder, a member planned by two
    sweeps); each experiment is one sample wherever runs are pooled (mean_sem). Warns, naming them, where
    the repeats disagree in their numbers."""
    if runs.empty:
        return 0
    numbers = [c for c in NUMBERS if c in runs]
    differ = []
    for _, group in runs[runs.experiment.duplicated(keep=False)].groupby("experiment", sort=False):
        if len(group[numbers].astype(str).drop_duplicates()) > 1:
            differ.append(" vs ".join(f"{d} (test {t:.2f})" for d, t in zip(group.run_dir, group.test)))
    if differ:
        warn(f"{len(differ)} experiment(s) were run more than once (same identity and seed) with different "
             f"numbers; each counts once, as its first run: {listing(differ, 3, '; ')}")
    return int(runs.experiment.duplicated().sum())


def _family(r) -> str:
    """The family's label: its method's (Method.family_label), e.g. `sparse b=32 uniform`."""
    return method_of(r.method, strict=False).family_label(r)


def _recipe(ident: dict) -> dict:
    """What the members of one family share: the identity without seed, width, base width and method."""
    return {k: v for k, v in ident.items() if k not in MEMBER_KEYS}


def _method_options(ident: dict) -> dict:
    """A member's method options that its family label does not show (rescale_init, ...)."""
    return {"method": {k: v for k, v in ident.get("method", {}).items() if k not in SHOWN_METHOD_KEYS}}


class _Apart:
    """Suffixes that split a group of runs where their identities differ; remembers what differed."""

    def __init__(self):
        self.keys: set[str] = set()
        self.labels: list[str] = []

    def suffixes(self, groups: pd.Series, identities: list[dict | None]) -> pd.Series:
        flat = [None if i is None else identity.flat(i) for i in identities]
        out = [""] * len(flat)
        members = defaultdict(list)
        for i, group in enumerate(groups):
            members[group].append(i)
        for group, rows in members.items():
            known = [flat[i] for i in rows if flat[i] is not None]
            keys = sorted(k for k in set().union(*known) if len({_show(f.get(k), k) for f in known}) > 1)
            unknown = 0 < len(known) < len(rows)  # tables from before identities were recorded, beside newer ones
            if not (keys or unknown):
                continue
            self.keys.update(keys + ["identity (not recorded by older widen)"] * unknown)
            names = _short_names(keys)
            for i in rows:
                out[i] = (", identity unknown" if flat[i] is None
                          else "".join(f", {names[k]}={_show(flat[i].get(k), k)}" for k in keys))
            self.labels += sorted({group + out[i] for i in rows})
        return pd.Series(out, index=groups.index, dtype=object)


def _show(v, key: str = "") -> str:
    if v is None:  # identity() leaves some keys out at their default (precision fp32), and an unknown
        return "unrecorded" if key == "data_fingerprint" else "default"  # fingerprint (runs from before)
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)


def _short_names(keys: list[str]) -> dict[str, str]:
    """optim.epochs -> epochs, unless two differing keys share that last part."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def listing(names: list[str], shown: int = 3, sep: str = ", ") -> str:
    more = len(names) - shown
    return sep.join(names[:shown]) + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------- pooling and counts

def mean_sem(df: pd.DataFrame, keys: list[str], values=("test", "train")) -> pd.DataFrame:
    """Mean and standard error over seeds of every group, each experiment once (its first run: see
    repeats); sem is NaN for one run. `runs`: the samples in the group."""
    if "experiment" in df:
        df = df.drop_duplicates([*keys, "experiment"])
    g = df.groupby(keys, dropna=False, sort=True)
    out = g[list(values)].agg(["mean", "sem"])
    out.columns = [f"{v}_{s}" for v, s in out.columns]
    out[["n_weights", "connectivity", "widening_factor"]] = g[["n_weights", "connectivity", "widening_factor"]].mean()
    out["runs"] = g.size()
    return out.reset_index()


def count(n: float) -> str:
    """A weight count the way the paper's legends write it: 592, 18k, 11.7M."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,.0f}"
