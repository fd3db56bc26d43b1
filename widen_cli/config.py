"""Compose `conf/` with Hydra into the typed, frozen dataclasses of a run (validation.py checks them).

Hydra is imported only when a command composes: `widen --help` and option errors need none of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from widen_cli import datasets
from widen_cli.conf_path import shipped_conf_dir
from widen_cli.errors import UserError
from widen_cli.methods import identity_fields, method_of
from widen_cli.methods.dense import Dense
from widen_cli.methods.pruned import FINETUNE_FRACTION, MAGNITUDE, PRUNE_OPTIONS, PRUNE_VARIANTS  # noqa: F401

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
COMPUTED = "computed"  # metadata of a field a command computes (not a setting)


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
    prune: str = MAGNITUDE  # structured | magnitude | magnitude-rewind
    scope: str = "layer"  # magnitude: layer (the sparse family's per-layer counts) | global (largest |w| overall)
    rewind_epoch: int = 0  # magnitude-rewind: the parent's epoch whose weights the kept ones go back to
    finetune_epochs: int | None = None  # null: the recipe's epochs for rewind, FINETUNE_FRACTION of them otherwise


DENSE = MethodConfig(name=Dense.name)  # dense runs' method, without any family option (the folders of plain runs)


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


def without_lr(identity: dict) -> dict:
    """An identity without its learning rate: what the runs of one member share across a sweep's --lrs."""
    return {**identity, "optim": {k: v for k, v in identity.get("optim", {}).items() if k != "lr"}}


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
    tracking: tuple[str, ...] = ()  # experiment trackers to log to (tracking.py): where results are watched
    # What data the run trains on (fingerprint.py), computed once per command from the files: no setting
    # (COMPUTED: validate refuses it in a composed config).
    data_fingerprint: str | None = field(default=None, metadata={COMPUTED: True})

    def identity(self) -> dict:
        """Everything that defines the experiment: not where it runs, nor where files and data live, but
        which data it is (data_fingerprint: the same files at another path are the same data).

        bf16 changes the numbers, so it is part of the identity; fp32 is left out so that runs named
        before the option existed keep their folders. So is model.init when unset (MLPs) or
        `torchvision`, the ResNet initialisation of every run before the option existed. Compiling
        changes only the speed, and trackers only who watches. data_fingerprint is left out where it is unknown (a config composed
        without reading the data: plans, runs from before) and for data the config alone makes.
        """
        d = asdict(self)
        for k in ("out", "name", "device", "compile", "tracking"):
            d.pop(k)
        # Data made from the config alone: its fingerprint adds nothing the identity lacks, so it is
        # recorded but left out (their runs keep the folders they had before fingerprints).
        if d["data_fingerprint"] is None or datasets.get(self.dataset.name).generated is not None:
            d.pop("data_fingerprint")
        if d["precision"] == "fp32":
            d.pop("precision")
        if d["model"]["init"] in (None, "torchvision"):
            d["model"].pop("init")
        d["method"] = identity_fields(d["method"])  # without other methods' options (pruned's prune, ...)
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

    def run_name(self) -> str:
        if self.name:
            return self.name
        method = method_of(self.method, strict=False).folder_label(self.method)
        return folder_name(f"{self.dataset.name}-{self.model.name}-{method}-w{self.width}-s{self.seed}",
                           self.identity())

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name()


@dataclass(frozen=True)
class SubmititConfig:
    """`sweep.submitit`: submitit's own AutoExecutor parameters (null leaves one unset), plus `cluster`."""
    cluster: str | None = None  # slurm | local; null: slurm, refused where SLURM is not installed
    timeout_min: int | None = None
    slurm_partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_constraint: str | None = None
    slurm_exclude: str | None = None
    slurm_setup: tuple[str, ...] | None = None  # shell lines before the member starts (module load ...)
    name: str | None = None  # the job name; null: the sweep's --name
    slurm_requeue: bool | None = None  # sbatch --requeue (true) or --no-requeue (false)
    slurm_max_num_timeout: int | None = None  # timeouts requeued before a member fails (submitit: 3)
    slurm_signal_delay_s: int | None = None  # USR2 this long before the time limit (submitit: 90)


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
             "tracking", "out", "name", "sweep")


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
            flag = " (flags such as --dry-run take no value)" if o.lower() in ("true", "false") else ""
            raise UserError(f"override {o!r} is not of the form key=value{flag}")
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


QUOTED = ("name", "out", "dataset.root")


DEFAULT_DATASET = "digits"  # conf/config.yaml's


def overrides_from_options(experiment: str | None, given: dict, extra: list[str] | None) -> list[str]:
    """The options that were given, as {config key: value} (widen_cli/options.py declares each option's
    key; None or False: not given), as Hydra overrides: the preset first, then options, then trailing
    overrides. Without a preset the model defaults by dataset."""
    overrides = [f"+experiment={experiment}"] if experiment else []
    trailing = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in extra or [] if "=" in o}
    if not experiment and given.get("model") is None and "model" not in trailing:
        dataset = given.get("dataset") or trailing.get("dataset") or DEFAULT_DATASET
        # The model follows the dataset (its registry entry), for train and sweep-width alike.
        given = {**given, "model": datasets.default_model(dataset)}
    # A group (dataset=, model=, method=) before its own keys (dataset.root=, method.distribution=).
    for key, value in sorted(given.items(), key=lambda item: "." in item[0]):
        if value is None or value is False:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif key == "tracking":
            value = f"[{value}]"
        elif key in QUOTED and "'" not in str(value):
            value = f"'{value}'"  # a name or path stays a string: --name nan, --out "my runs"
        overrides.append(f"{key}={value}")
    return overrides + list(extra or [])


def load(overrides: list[str] = (), extra_dirs: list[Path] | tuple = ()) -> tuple[DictConfig, RunConfig]:
    """Compose and validate (widen_cli/validation.py) in one call."""
    from widen_cli.validation import validate

    cfg = compose_config(overrides, extra_dirs)
    return cfg, validate(cfg)


def to_yaml(run: RunConfig) -> str:
    """config.yaml of a run folder: the validated RunConfig (its folder name filled in), as YAML."""
    import yaml

    data = json.loads(json.dumps(asdict(run)))  # tuples -> lists
    data["name"] = run.run_name()
    return yaml.safe_dump(data, sort_keys=False)

