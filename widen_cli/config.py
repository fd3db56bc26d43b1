"""Compose `conf/` with Hydra and validate it once into typed, frozen dataclasses.

Hydra is imported only when a command composes: `widen --help` and option errors need none of it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from widen_cli.budget import DISTRIBUTIONS, default_distribution, fix_last_layer
from widen_cli.conf_path import shipped_conf_dir
from widen_cli.errors import UserError
from widen_cli.schedules import SCHEDULES

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = shipped_conf_dir()
CONFIG_PATH_ENV = "WIDEN_CONFIG_PATH"  # colon-separated folders searched before conf/
PRECISIONS = ("fp32", "bf16")
INITS = ("lecun", "pytorch", "torchvision")  # ResNet initialisation (models/resnet.py)
NORMALIZATIONS = ("per-channel", "per-pixel")
# Dataset keys left out of a run's identity at these values (they came after runs were named).
DATASET_DEFAULTS = {"normalize": ("per-channel",), "val_fraction": (None, 0, 0.0)}
SELECT_ON = ("test", "val")


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    root: str | None = None
    download: bool = False
    num_classes: int | None = None
    image_size: int = 32
    subset: int | None = None
    augment: tuple[str, ...] = ()
    channels: int = 3
    train_size: int = 256  # synthetic only
    test_size: int = 128  # synthetic only
    data_seed: int = 0  # synthetic data; and which training samples val_fraction holds out
    workers: int | None = None  # image folders only; None: the CPUs this process may use
    skip_bad_images: bool = False  # image folders only: leave out files PIL cannot decode
    normalize: str = "per-channel"  # in-memory datasets: per-channel | per-pixel (mean/std of each pixel)
    val_fraction: float | None = None  # hold out this share of the training split as a validation set


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden_layers: int = 1
    activation: str = "relu"
    bias: bool = True
    parameterization: str = "standard"
    stem: str = "auto"
    init: str | None = None  # resnet18: lecun | pytorch | torchvision (the MLP's is its parameterization)


@dataclass(frozen=True)
class MethodConfig:
    name: str
    # sparse: staggered | dense-last | uniform | erk (budget.DISTRIBUTIONS). conf/method/sparse.yaml's null
    # is the model's own (budget.default_distribution), resolved by validate so identities hold the name;
    # the other methods ignore it and keep this default, so their run folders stay those they had.
    distribution: str | None = "staggered"
    within: str = "all"  # sparse: all | io
    last_layer_connectivity: float | None = None  # sparse: fix the classifier's connectivity
    rescale_init: bool = True  # sparse: rescale initial weights for the reduced fan-in
    # pruned (train the dense model at the member's width, prune it to the budget, fine-tune):
    prune: str = "magnitude"  # structured | magnitude | magnitude-rewind
    scope: str = "layer"  # magnitude: layer (the sparse family's per-layer counts) | global (largest |w| overall)
    rewind_epoch: int = 0  # magnitude-rewind: the parent's epoch whose weights the kept ones go back to
    finetune_epochs: int | None = None  # null: the recipe's epochs for rewind, FINETUNE_FRACTION of them otherwise


# The options of the pruned method: left out of every other run's identity, so that folders named
# before they existed keep their names.
PRUNE_OPTIONS = ("prune", "scope", "rewind_epoch", "finetune_epochs")
PRUNE_VARIANTS = ("structured", "magnitude", "magnitude-rewind")
FINETUNE_FRACTION = 0.25  # structured and magnitude fine-tune for a quarter of the recipe's epochs (rounded up)
DENSE = MethodConfig(name="dense")  # dense runs' method, without any family option (the folders of plain runs)


@dataclass(frozen=True)
class OptimConfig:
    name: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: str
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1


def folder_name(readable: str, identity: dict) -> str:
    """The one way run, sweep and kernel folders are named: readable parts plus a short hash of the
    identity, so the same experiment always finds the same folder."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class RunConfig:
    dataset: DatasetConfig
    model: ModelConfig
    method: MethodConfig
    optim: OptimConfig
    width: int
    base_width: int
    seed: int = 0
    device: str = "auto"
    out: str = "runs"
    name: str | None = None
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the model

    def identity(self) -> dict:
        """Everything that defines the experiment: not where it runs, nor where files and data live.

        bf16 changes the numbers, so it is part of the identity; fp32 is left out so that runs named
        before the option existed keep their folders. So is model.init when unset (MLPs) or
        `torchvision`, the ResNet initialisation of every run before the option existed. Compiling
        changes only the speed.
        """
        d = asdict(self)
        for k in ("out", "name", "device", "compile"):
            d.pop(k)
        if d["precision"] == "fp32":
            d.pop("precision")
        if d["model"]["init"] in (None, "torchvision"):
            d["model"].pop("init")
        if d["method"]["name"] != "pruned":
            for k in PRUNE_OPTIONS:
                d["method"].pop(k)
        for k in ("root", "download", "workers", "skip_bad_images"):
            d["dataset"].pop(k)
        for k, default in DATASET_DEFAULTS.items():  # added later: runs from before keep their folders
            if d["dataset"][k] in default:
                d["dataset"].pop(k)
        return d

    def family_identity(self) -> dict:
        """What defines a sweep's family: the identity without width and seed, so a sweep can grow."""
        ident = self.identity()
        for k in ("width", "seed"):
            ident.pop(k)
        return ident

    def finetune_epochs(self) -> int:
        """A pruned run's epochs after pruning: method.finetune_epochs, else the whole recipe for
        magnitude-rewind (it retrains) and FINETUNE_FRACTION of it for the others (they fine-tune)."""
        if self.method.finetune_epochs is not None:
            return self.method.finetune_epochs
        if self.method.prune == "magnitude-rewind":
            return self.optim.epochs
        return max(1, math.ceil(FINETUNE_FRACTION * self.optim.epochs))

    def run_name(self) -> str:
        if self.name:
            return self.name
        method = self.method.name + (f"-{self.method.prune}" if self.method.name == "pruned" else "")
        return folder_name(f"{self.dataset.name}-{self.model.name}-{method}-w{self.width}-s{self.seed}",
                           self.identity())

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name()


@dataclass(frozen=True)
class SubmititConfig:
    timeout_min: int | None = None
    slurm_partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None


@dataclass(frozen=True)
class SweepConfig:
    """conf/config.yaml's `sweep:` section, read by `widen sweep-width` only."""
    widths: tuple[int, ...] | None
    factors: tuple[float, ...] | None
    seeds: tuple[int, ...]
    dense_wide: bool
    connectivity_floor: float
    last_layer_connectivity: tuple[float | None, ...]
    batch_members: bool
    submitit: SubmititConfig
    base_widths: tuple[int, ...] | None = None  # several budgets, each its own family in one plan
    methods: tuple[str, ...] | None = None  # several methods over the same budget (null: the method group's)
    lrs: tuple[float, ...] | None = None  # every member at every learning rate (null: optim.lr)
    select_on: str = "test"  # test | val: which accuracy picks each member's learning rate
    val_fraction: float = 0.1  # select_on val: share of the training split held out


# ---------------------------------------------------------------- composing

GROUPS = ("dataset", "model", "method", "optim", "experiment")
TOP_LEVEL = ("dataset", "model", "method", "optim", "width", "base_width", "seed", "device", "precision", "compile",
             "out", "name", "sweep")


def config_dirs(extra: list[Path] | tuple = ()) -> list[Path]:
    """Where configs are looked for, first match wins: --config-dir folders, then WIDEN_CONFIG_PATH's,
    then the package's conf/."""
    env = [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(":") if p]
    dirs = [Path(d).expanduser().resolve() for d in (*extra, *env)]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"config folder {d} does not exist (from --config-dir or {CONFIG_PATH_ENV})")
    return [*dirs, CONF_DIR]


def choices(group: str, dirs: list[Path] | tuple = ()) -> list[str]:
    """The names a config group accepts: its *.yaml files in every config folder."""
    return sorted({p.stem for d in (*dirs, CONF_DIR) for p in (Path(d) / group).glob("*.yaml")})


def _compose(overrides: list[str], dirs: list[Path]) -> DictConfig:
    from hydra import compose, initialize_config_dir  # ~0.2 s: only for commands that compose

    extra = [d for d in dirs if d != CONF_DIR]
    search = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in extra)}]"] if extra else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*search, *overrides])


def _unknown_key(key: str, overrides: list[str], dirs: list[Path]) -> str:
    """The message for an override of a key that does not exist: the keys that do, where it was looked for."""
    from omegaconf import DictConfig, OmegaConf

    parent = key.rpartition(".")[0]
    if not parent:
        return f"unknown config key {key!r}; valid keys at the top level: {', '.join(TOP_LEVEL)}"
    groups = [o for o in overrides if o.lstrip("+").split("=", 1)[0] in GROUPS]
    node = OmegaConf.select(_compose(groups, dirs), parent)
    if not isinstance(node, DictConfig):
        return f"unknown config key {key!r} ({parent} is a value, not a group of keys)"
    return f"unknown config key {key!r}; valid keys under {parent}: {', '.join(node.keys())}"


def compose_config(overrides: list[str] = (), extra_dirs: list[Path] | tuple = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; user mistakes become UserError."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides, dirs = list(overrides), config_dirs(extra_dirs)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if "=" not in o and not o.startswith("~"):
            raise UserError(f"override {o!r} is not of the form key=value")
        if key in GROUPS and "=" in o and o.split("=", 1)[1] not in choices(key, dirs):
            raise UserError(f"unknown {key} {o.split('=', 1)[1]!r}; valid: {', '.join(choices(key, dirs))}")
    try:
        return _compose(overrides, dirs)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        unknown = re.match(r"Could not override '([^']+)'", first)
        if unknown:
            raise UserError(_unknown_key(unknown.group(1), overrides, dirs)) from None
        raise UserError(f"bad override: {first}") from None


# The command-line options that are config keys (train and sweep-width share them); other options are not.
OPTION_KEYS = {
    "dataset": "dataset", "model": "model", "method": "method", "width": "width", "base_width": "base_width",
    "epochs": "optim.epochs", "batch_size": "optim.batch_size", "lr": "optim.lr", "device": "device",
    "precision": "precision", "compile_model": "compile", "data_root": "dataset.root",
    "download": "dataset.download", "image_size": "dataset.image_size", "subset": "dataset.subset", "seed": "seed",
    "out": "out", "name": "name", "distribution": "method.distribution",
    "skip_bad_images": "++dataset.skip_bad_images",  # ++: accepted (and unused) by datasets without the key
}
QUOTED = ("name", "out", "dataset.root")


# Without --model (or a preset, or a model= override), the model follows the dataset, for train and
# sweep-width alike: the paper's MLPs for MNIST-like data, ResNet-18 for every image dataset.
MLP_DATASETS = ("mnist", "digits", "synthetic")
DEFAULT_DATASET = "digits"  # conf/config.yaml's


def default_model(dataset: str) -> str:
    return "mlp" if dataset in MLP_DATASETS else "resnet18"


def overrides_from_options(experiment: str | None, options: dict, extra: list[str] | None) -> list[str]:
    """The options that were given (of OPTION_KEYS; others are ignored) as Hydra overrides: the preset
    first, then options, then trailing overrides. Without a preset the model defaults by dataset."""
    overrides = [f"+experiment={experiment}"] if experiment else []
    given = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in extra or [] if "=" in o}
    if not experiment and options.get("model") is None and "model" not in given:
        dataset = options.get("dataset") or given.get("dataset") or DEFAULT_DATASET
        options = {**options, "model": default_model(dataset)}
    for option, key in OPTION_KEYS.items():
        value = options.get(option)
        if value is None or value is False:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif key in QUOTED and "'" not in str(value):
            value = f"'{value}'"  # a name or path stays a string: --name nan, --out "my runs"
        overrides.append(f"{key}={value}")
    return overrides + list(extra or [])


# ---------------------------------------------------------------- validating

# Smallest value of integer keys; every other value is checked against its dataclass field's type.
MINIMUM = {"width": 1, "base_width": 1, "seed": 0, "optim.epochs": 1, "optim.batch_size": 1, "dataset.subset": 1,
           "dataset.image_size": 1, "dataset.channels": 1, "dataset.num_classes": 1, "dataset.train_size": 1,
           "dataset.test_size": 1, "dataset.data_seed": 0, "dataset.workers": 0, "model.hidden_layers": 1,
           "method.rewind_epoch": 0, "method.finetune_epochs": 1, "sweep.seeds": 0, "sweep.widths": 1,
           "sweep.base_widths": 1}
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
            raise UserError(f"unknown config key {full!r}; valid keys {where}: {', '.join(known)}")
        ftype = known[k].type
        if isinstance(ftype, str) and ftype in NESTED:
            values[k] = _build(NESTED[ftype], v, full)
            continue
        kinds = _split(ftype)
        if not any(_fits(v, kind, full) for kind in kinds):
            raise UserError(f"{full} must be {_describe(kinds, full)}, got {v!r}")
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
    if run.base_width > run.width:
        raise UserError(f"width {run.width} is below the base width {run.base_width}; family members have width "
                        f">= {run.base_width}")
    for key, value, valid in (
        ("model.activation", run.model.activation, ("relu", "linear")),
        ("model.parameterization", run.model.parameterization, ("standard", "ntk")),
        ("model.stem", run.model.stem, ("auto", "cifar", "imagenet")),
        ("optim.schedule", run.optim.schedule, tuple(SCHEDULES)),
        ("optim.name", run.optim.name, ("sgd",)),
        ("method.distribution", run.method.distribution, tuple(DISTRIBUTIONS)),
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
    llc = run.method.last_layer_connectivity
    if llc is not None and not 0 < llc <= 1:
        raise UserError(f"method.last_layer_connectivity must be in (0, 1], got {llc}")
    _fraction("dataset.val_fraction", run.dataset.val_fraction, allow_none=True)
    _check_pruning(run)
    if not run.optim.lr > 0:
        raise UserError(f"optim.lr must be > 0, got {run.optim.lr}")
    if run.device not in ("auto", "cpu") and not run.device.startswith("cuda"):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {run.device!r}")
    return run


def resolve_distribution(run: RunConfig) -> RunConfig:
    """method.distribution null -> the model's default (sparse and pruned; the others keep staggered), then
    dense-last beside a fixed last layer -> staggered (budget.fix_last_layer). validate does it, and so
    does reading a stored sweep.yaml (the composed config, where null stays null)."""
    method = run.method
    if method.distribution is None:
        method = replace(method, distribution=default_distribution(run.model.name) if method.name in ("sparse", "pruned")
                         else "staggered")
    return replace(run, method=fix_last_layer(method, method.last_layer_connectivity))


def _check_pruning(run: RunConfig) -> None:
    m = run.method
    if m.prune not in PRUNE_VARIANTS:
        raise UserError(f"method.prune must be one of {', '.join(PRUNE_VARIANTS)}, got {m.prune!r}")
    if m.scope not in ("layer", "global"):
        raise UserError(f"method.scope must be one of layer, global, got {m.scope!r}")
    if m.name == "pruned" and m.prune == "structured" and m.scope == "global":
        raise UserError("method.scope global is for magnitude pruning; structured pruning keeps the base "
                        "model's units in every layer (scope layer)")
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
    for key, values in (("sweep.lrs", s.lrs), ("sweep.base_widths", s.base_widths)):
        if values is not None and (not values or any(v <= 0 for v in values)):
            raise UserError(f"{key} must be a non-empty list of numbers > 0, got {list(values)}")
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


def load(overrides: list[str] = (), extra_dirs: list[Path] | tuple = ()) -> tuple[DictConfig, RunConfig]:
    cfg = compose_config(overrides, extra_dirs)
    return cfg, validate(cfg)


def to_yaml(run: RunConfig) -> str:
    """config.yaml of a run folder: the validated RunConfig (its folder name filled in), as YAML."""
    import yaml

    data = json.loads(json.dumps(asdict(run)))  # tuples -> lists
    data["name"] = run.run_name()
    return yaml.safe_dump(data, sort_keys=False)

