"""A run's identity: the settings that define its experiment, the folder name hashed from them, how two
identities differ, and reading a stored one back.

The identity is the run's RunConfig (schema.py) as a dict, less what does not change the numbers (where it
runs, where files and data live, trackers) and less some fields at their default value: those are left
out so that the folder names runs have keep their names (FIELDS says which, and why). It is stored as
JSON (sorted keys) in the summary's `identity` column and in checkpoints; the report reads it only
through `loads` and the names below.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from widen_cli import datasets
from widen_cli.methods import identity_fields, method_of
from widen_cli.schema import RunConfig

# RunConfig fields that are no part of the identity: where and how fast a run goes, and who watches it.
NOT_IDENTITY = ("out", "name", "device", "compile", "tracking")
DATASET_NOT_IDENTITY = ("root", "download", "workers", "skip_bad_images")  # where the data lives, how it is read
# Fields left out at these values: the folder names of runs at the default stay what they are.
LEFT_OUT_AT = {("precision",): ("fp32",), ("model", "init"): (None, "torchvision"),
               ("dataset", "normalize"): ("per-channel",), ("dataset", "val_fraction"): (None, 0, 0.0)}

# The identity JSON's fields, as the report and the reference read them (a test checks this against identity_of).
FIELDS = {
    "dataset": "the dataset's settings (DatasetConfig) without root, download, workers, skip_bad_images; "
               "normalize left out at per-channel, val_fraction at null",
    "model": "the model's settings (ModelConfig); init left out when null (MLPs) or torchvision",
    "method": "the method's settings (MethodConfig), less the options other methods own (methods/: prune, scope, "
              "rewind_epoch, finetune_epochs only for pruned)",
    "optim": "the training recipe (OptimConfig), lr included",
    "width": "the member's width",
    "base_width": "its family's base width (the dense model whose weights are the budget)",
    "seed": "the training seed",
    "precision": "bf16 only: fp32 is left out",
    "data_fingerprint": "what data it trained on (fingerprint.py): left out when unknown (a plan) and for "
                        "generated data (digits, synthetic), which the config alone decides",
}
UNTUNED = "lr"  # optim's key that a sweep over --lrs varies within one member


def identity_of(run: RunConfig) -> dict:
    """Everything that defines `run`'s experiment (see FIELDS): the data it is, not where it lives."""
    d = asdict(run)
    for k in NOT_IDENTITY:
        d.pop(k)
    # Data made from the config alone: its fingerprint adds nothing the identity lacks (recorded, left out).
    if d["data_fingerprint"] is None or datasets.get(run.dataset.name).generated is not None:
        d.pop("data_fingerprint")
    for k in DATASET_NOT_IDENTITY:
        d["dataset"].pop(k)
    for (*parents, key), values in LEFT_OUT_AT.items():
        where = d
        for p in parents:
            where = where[p]
        if where[key] in values:
            where.pop(key)
    d["method"] = identity_fields(d["method"])  # without other methods' options (pruned's prune, ...)
    return d


def family_identity(run: RunConfig) -> dict:
    """What defines a sweep's family: the identity without width and seed, so a sweep can grow."""
    ident = identity_of(run)
    for k in ("width", "seed"):
        ident.pop(k)
    return ident


def without_lr(identity: dict) -> dict:
    """An identity without its learning rate: what the runs of one member share across a sweep's --lrs."""
    return {**identity, "optim": {k: v for k, v in identity.get("optim", {}).items() if k != UNTUNED}}


def folder_name(readable: str, identity: dict) -> str:
    """The one way run, sweep and kernel folders are named: readable parts plus a short hash of the
    identity, so the same experiment always finds the same folder."""
    digest = hashlib.sha256(dumps(identity).encode()).hexdigest()[:8]  # of the stored form
    return f"{readable}-{digest}"


def run_name(run: RunConfig) -> str:
    """The run's folder name: --name, else dataset, model, method (a pruned run's with its variant), width
    and seed, and the hash of its identity."""
    if run.name:
        return run.name
    method = method_of(run.method, strict=False).folder_label(run.method)
    return folder_name(f"{run.dataset.name}-{run.model.name}-{method}-w{run.width}-s{run.seed}", identity_of(run))


def run_dir(run: RunConfig) -> Path:
    return Path(run.out) / run_name(run)


def dumps(identity: dict) -> str:
    """The stored form: JSON with sorted keys (the summary's `identity` column, checkpoints)."""
    return json.dumps(identity, sort_keys=True)


def loads(text) -> dict | None:
    """A stored identity read back; None when none was stored (a missing value, as pandas gives it)."""
    return json.loads(text) if isinstance(text, str) else None


def flat(d: dict, prefix: str = "") -> dict:
    """{'optim': {'epochs': 10}} -> {'optim.epochs': 10}."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differences(here: dict, there: dict, where: Path) -> list[str]:
    """The settings in which two identities differ, e.g. `optim.epochs: 400 here, 10 in runs/x`."""
    a, b = flat(_normal(here)), flat(_normal(there))
    return [f"{k}: {a.get(k, 'unset')} here, {b.get(k, 'unset')} in {where}"
            for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _normal(d: dict) -> dict:
    return json.loads(json.dumps(d, sort_keys=True))  # tuples as lists, keys sorted: comparable


def to_yaml(run: RunConfig) -> str:
    """config.yaml of a run folder: the validated RunConfig (its folder name filled in), as YAML."""
    import yaml

    data = json.loads(json.dumps(asdict(run)))  # tuples -> lists
    data["name"] = run_name(run)
    return yaml.safe_dump(data, sort_keys=False)
