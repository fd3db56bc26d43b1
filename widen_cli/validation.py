"""Validate a composed config (compose.py) once into the typed, frozen dataclasses of schema.py: every
value checked against its field's type (one line per mistake), then the checks that span fields."""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, fields, replace
from typing import TYPE_CHECKING

from widen_cli.budget import check_distribution, check_member, fix_last_layer
from widen_cli.schema import (COMPUTED, DEVICE_PATTERN, DEVICES, INITS, NORMALIZATIONS, PRECISIONS, SELECT_ON,
                              DatasetConfig, MethodConfig, ModelConfig, OptimConfig, RunConfig, SubmititConfig,
                              SweepConfig)
from widen_cli import datasets, tracking
from widen_cli.errors import UserError
from widen_cli.methods import method_of
from widen_cli.methods.pruned import PRUNE_VARIANTS
from widen_cli.schedules import SCHEDULES

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Smallest value of integer keys; every other value is checked against its dataclass field's type.
MINIMUM = {"width": 1, "base_width": 1, "seed": 0, "optim.epochs": 1, "optim.batch_size": 1, "dataset.subset": 1,
           "dataset.image_size": 1, "dataset.channels": 1, "dataset.num_classes": 1, "dataset.train_size": 1,
           "dataset.test_size": 1, "dataset.data_seed": 0, "dataset.workers": 0, "model.hidden_layers": 1,
           "method.rewind_epoch": 0, "method.finetune_epochs": 1, "sweep.seeds": 0, "sweep.widths": 1,
           "sweep.base_widths": 1}
INT64_MAX = 2 ** 63 - 1  # torch sizes and seeds are int64: a larger integer could only crash later
KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "None": "null"}


def _split(annotation: str) -> list[str]:
    """'tuple[float | None, ...] | None' -> ['tuple[float | None, ...]', 'None'] (top-level | only)."""
    parts, depth, cur = [], 0, ""
    for ch in annotation:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*parts, cur.strip()]


def _describe(kinds: list[str], key: str) -> str:
    words = []
    for k in kinds:
        if k.startswith("tuple["):
            words.append(f"a list of ({_describe(_split(k[6:-1].rsplit(',', 1)[0]), key)})")
        elif k == "int" and key in MINIMUM:
            words.append(f"an integer >= {MINIMUM[key]}")
        else:
            words.append(KINDS.get(k, k))
    return " or ".join(words)


def _fits(value, kind: str, key: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and value >= MINIMUM.get(key, value)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind.startswith("tuple["):
        inner = _split(kind[6:-1].rsplit(",", 1)[0])
        return isinstance(value, (list, tuple)) and all(any(_fits(v, k, key) for k in inner) for v in value)
    raise AssertionError(f"no check for field type {kind}")  # a new field type: add it here


def _build(cls, data, key: str):
    """A dataclass from a plain dict, every value checked against its field's type (one line per mistake)."""
    if not isinstance(data, dict):
        raise UserError(f"{key} must be a group of keys ({', '.join(f.name for f in fields(cls))}), got {data!r}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for k, v in data.items():
        full = f"{key}.{k}" if key else k
        if k not in known:
            where = f"under {key}" if key else "at the top level"
            settings = [name for name, f in known.items() if not f.metadata.get(COMPUTED)]
            raise UserError(f"unknown config key {full!r}; valid keys {where}: {', '.join(settings)}")
        if known[k].metadata.get(COMPUTED):
            raise UserError(f"{full} is not a setting: it is computed when a command runs")
        ftype = known[k].type
        if isinstance(ftype, str) and ftype in NESTED:
            values[k] = _build(NESTED[ftype], v, full)
            continue
        kinds = _split(ftype)
        if not any(_fits(v, kind, full) for kind in kinds):
            raise UserError(f"{full} must be {_describe(kinds, full)}, got {v!r}")
        if any(isinstance(x, int) and x > INT64_MAX for x in (v if isinstance(v, (list, tuple)) else [v])):
            raise UserError(f"{full} must be at most {INT64_MAX}, got {v!r}")
        values[k] = tuple(v) if isinstance(v, list) else v
    missing = [f.name for f in known.values() if f.name not in values and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise UserError(f"missing value for: {', '.join(f'{key}.{m}' if key else m for m in missing)}")
    return cls(**values)


def _plain(cfg: DictConfig, key: str) -> dict:
    from omegaconf import OmegaConf

    missing = OmegaConf.missing_keys(cfg)
    if missing:
        if "dataset.root" in missing:
            raise UserError(f"dataset {cfg.dataset.name} needs --data-root (a folder with train/ and val/)")
        raise UserError(f"missing value for: {', '.join(sorted(missing))}")
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve
        raise UserError(f"invalid config under {key or 'the top level'}: {str(e).splitlines()[0]}") from None


def validate(cfg: DictConfig) -> RunConfig:
    """Check the composed config once, at the edge, and freeze it into a RunConfig."""
    data = _plain(cfg, "")
    data.pop("sweep", None)
    if data.get("base_width") is None:
        data["base_width"] = data.get("width")
    run = _build(RunConfig, data, "")
    run = resolve_distribution(run)
    check_member(run.width, run.base_width, run.method.last_layer_connectivity)
    check_distribution(run.method.distribution, "method.distribution")
    for key, value, valid in (
        ("model.activation", run.model.activation, ("relu", "linear")),
        ("model.parameterization", run.model.parameterization, ("standard", "ntk")),
        ("model.stem", run.model.stem, ("auto", "cifar", "imagenet")),
        ("optim.schedule", run.optim.schedule, tuple(SCHEDULES)),
        ("optim.name", run.optim.name, ("sgd",)),
        ("method.within", run.method.within, ("all", "io")),
        ("precision", run.precision, PRECISIONS),
        ("dataset.normalize", run.dataset.normalize, NORMALIZATIONS),
    ):
        if value not in valid:
            raise UserError(f"{key} must be one of {', '.join(valid)}, got {value!r}")
    if run.model.name == "resnet18" and run.model.init not in INITS:
        raise UserError(f"model.init must be one of {', '.join(INITS)}, got {run.model.init!r}")
    if run.model.name != "resnet18" and run.model.init is not None:
        raise UserError(f"model.init is for resnet18; the {run.model.name}'s initialisation is model.parameterization "
                        f"(standard | ntk)")
    _fraction("dataset.val_fraction", run.dataset.val_fraction, allow_none=True)
    _check_pruning(run)
    _check_optim(run)
    _check_dataset(run.dataset)
    check_name(run.name)
    check_device(run.device)
    tracking.check(run.tracking)
    return run


def check_device(device: str, key: str = "device") -> None:
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise UserError(f"{key} must be {DEVICES}, got {device!r}")


NAME_MAX = 255  # bytes in one folder name on Linux and macOS file systems


def check_name(name: str | None) -> None:
    """--name is one folder directly under --out: nothing that climbs out of it, lands elsewhere or cannot
    be created (`../x`, `/abs`, `a/b`, `.`, `..`, control characters, more than NAME_MAX bytes)."""
    if name is None:
        return
    if name in ("", ".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"--name must be one folder name under --out (no /, not . or .., no control characters), "
                        f"got {name!r}")
    if len(name.encode()) > NAME_MAX:
        raise UserError(f"--name is {len(name.encode())} bytes long; a folder name has at most {NAME_MAX}")


def _check_optim(run: RunConfig) -> None:
    """Values SGD and the schedules would take without complaint (inf, nan) or crash on (negative)."""
    o = run.optim
    for key, value, minimum in (("lr", o.lr, None), ("momentum", o.momentum, 0), ("weight_decay", o.weight_decay, 0),
                                ("gamma", o.gamma, None)):
        ok = math.isfinite(value) and (value > 0 if minimum is None else value >= minimum)
        if not ok:
            raise UserError(f"optim.{key} must be a finite number {'> 0' if minimum is None else '>= 0'}, "
                            f"got {value}")
    if any(m < 1 for m in o.milestones):
        raise UserError(f"optim.milestones must be epochs >= 1, got {list(o.milestones)}")


def _check_dataset(ds) -> None:
    entry = datasets.get(ds.name)
    # Fewer classes than an in-memory dataset's labels would crash the loss on a label.
    if ds.num_classes is not None and entry.layout == datasets.TENSOR and ds.num_classes < (entry.classes or 0):
        raise UserError(f"{ds.name}: dataset.num_classes={ds.num_classes} but it has {entry.classes} classes")
    if not entry.holds_out and (ds.val_fraction or ds.normalize != "per-channel"):
        raise UserError(f"{ds.name}: dataset.val_fraction and dataset.normalize are for in-memory datasets "
                        f"(image folders use ImageNet's mean and std and have val/ as their test set)")
    valid = entry.augmentations
    unknown = [a for a in ds.augment if a not in valid]
    if unknown:
        raise UserError(f"dataset.augment: unknown augmentation {unknown[0]!r} for {ds.name}; valid: "
                        f"{', '.join(valid)}")


def resolve_distribution(run: RunConfig) -> RunConfig:
    """method.distribution null -> the model's default (sparse and pruned; the others keep staggered), then
    dense-last beside a fixed last layer -> staggered (budget.fix_last_layer), so identities hold the name."""
    method = run.method
    if method.distribution is None:
        method = replace(method, distribution=method_of(method).default_distribution(run.model.name))
    return replace(run, method=fix_last_layer(method, method.last_layer_connectivity))


def _check_pruning(run: RunConfig) -> None:
    m = run.method
    if m.prune not in PRUNE_VARIANTS:
        raise UserError(f"method.prune must be one of {', '.join(PRUNE_VARIANTS)}, got {m.prune!r}")
    if m.scope not in ("layer", "global"):
        raise UserError(f"method.scope must be one of layer, global, got {m.scope!r}")
    method_of(m).check(run)  # its own cross-field checks (pruned: structured keeps scope layer)
    if not isinstance(m.rewind_epoch, int) or not 0 <= m.rewind_epoch <= run.optim.epochs:
        raise UserError(f"method.rewind_epoch must be an integer from 0 to optim.epochs ({run.optim.epochs}), "
                        f"got {m.rewind_epoch!r}")
    if m.finetune_epochs is not None and m.finetune_epochs < 1:
        raise UserError(f"method.finetune_epochs must be >= 1 or null, got {m.finetune_epochs}")


def sweep_config(cfg: DictConfig) -> SweepConfig:
    """The `sweep:` section, checked like the rest."""
    s = _build(SweepConfig, _plain(cfg.sweep, "sweep"), "sweep")
    if not 0 < s.connectivity_floor <= 1:
        raise UserError(f"--connectivity-floor must be in (0, 1], got {s.connectivity_floor}")
    if s.select_on not in SELECT_ON:
        raise UserError(f"sweep.select_on (--select-on) must be one of {', '.join(SELECT_ON)}, got {s.select_on!r}")
    _fraction("sweep.val_fraction", s.val_fraction)
    for key, values in (("sweep.lrs", s.lrs), ("sweep.base_widths", s.base_widths), ("sweep.factors", s.factors)):
        if values is not None and (not values or not all(math.isfinite(v) and v > 0 for v in values)):
            raise UserError(f"{key} must be a non-empty list of finite numbers > 0, got {list(values)}")
    if s.widths is not None and s.factors is not None:
        raise UserError("give widths (--widths) or widening factors (--factors), not both")
    for key in ("seeds", "lrs", "widths", "factors", "base_widths", "methods", "last_layer_connectivity"):
        values = list(getattr(s, key) or ())
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise UserError(f"sweep.{key} (--{key.replace('_', '-')}) lists {twice} twice")
    if s.methods is not None and not s.methods:
        raise UserError("sweep.methods must name at least one method")
    return s


def _fraction(key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not 0 < value < 1:
        raise UserError(f"{key} must be in (0, 1){' or null' if allow_none else ''}, got {value!r}")


NESTED = {"DatasetConfig": DatasetConfig, "ModelConfig": ModelConfig, "MethodConfig": MethodConfig,
          "OptimConfig": OptimConfig, "SubmititConfig": SubmititConfig}


