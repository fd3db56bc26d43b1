"""Compose `conf/` with Hydra and validate it once into typed, frozen dataclasses."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from widen_cli.budget import DISTRIBUTIONS
from widen_cli.conf_path import shipped_conf_dir
from widen_cli.errors import UserError

CONF_DIR = shipped_conf_dir()

DATASETS = ("cifar10", "cifar100", "svhn", "mnist", "imagenet", "imagefolder", "digits", "synthetic")
MODELS = ("mlp", "resnet18")
METHODS = ("dense", "sparse", "linear-bottleneck", "nonlinear-bottleneck")
PRECISIONS = ("fp32", "bf16")


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
    data_seed: int = 0  # synthetic only
    workers: int | None = None  # image folders only; None: the CPUs this process may use
    skip_bad_images: bool = False  # image folders only: leave out files PIL cannot decode


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden_layers: int = 1
    activation: str = "relu"
    bias: bool = True
    parameterization: str = "standard"
    stem: str = "auto"


@dataclass(frozen=True)
class MethodConfig:
    name: str
    distribution: str = "staggered"  # sparse: staggered | proportional | erk
    within: str = "all"  # sparse: all | io
    last_layer_connectivity: float | None = None  # sparse: fix the classifier's connectivity
    rescale_init: bool = True  # sparse: rescale initial weights for the reduced fan-in


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
        before the option existed keep their folders. Compiling changes only the speed.
        """
        d = asdict(self)
        for k in ("out", "name", "device", "compile"):
            d.pop(k)
        if d["precision"] == "fp32":
            d.pop("precision")
        for k in ("root", "download", "workers", "skip_bad_images"):
            d["dataset"].pop(k)
        return d

    def run_name(self) -> str:
        """Readable parts plus a short hash of everything else, so a command always finds its folder."""
        if self.name:
            return self.name
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.dataset.name}-{self.model.name}-{self.method.name}-w{self.width}-s{self.seed}-{digest}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name()


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUPS = ("dataset", "model", "method", "optim", "experiment")
TOP_LEVEL = ("dataset", "model", "method", "optim", "width", "base_width", "seed", "device", "precision", "compile",
             "out", "name", "sweep")


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _unknown_key(key: str, overrides: list[str]) -> str:
    """The message for an override of a key that does not exist: the keys that do, where it was looked for."""
    parent = key.rpartition(".")[0]
    if not parent:
        return f"unknown config key {key!r}; valid keys at the top level: {', '.join(TOP_LEVEL)}"
    groups = [o for o in overrides if o.lstrip("+").split("=", 1)[0] in GROUPS]
    node = OmegaConf.select(_compose(groups), parent)
    if not isinstance(node, DictConfig):
        return f"unknown config key {key!r} ({parent} is a value, not a group of keys)"
    return f"unknown config key {key!r}; valid keys under {parent}: {', '.join(node.keys())}"


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; user mistakes become UserError."""
    overrides = list(overrides)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if "=" not in o and not o.startswith("~"):
            raise UserError(f"override {o!r} is not of the form key=value")
        for group in GROUPS:
            if key == group and "=" in o and o.split("=", 1)[1] not in _choices(group):
                raise UserError(
                    f"unknown {group} {o.split('=', 1)[1]!r}; valid: {', '.join(_choices(group))}"
                )
    try:
        return _compose(overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        unknown = re.match(r"Could not override '([^']+)'", first)
        if unknown:
            raise UserError(_unknown_key(unknown.group(1), overrides)) from None
        raise UserError(f"bad override: {first}") from None


def _build(cls, node: DictConfig):
    data = OmegaConf.to_container(node, resolve=True)
    known = [f.name for f in fields(cls)]
    for k, v in list(data.items()):
        if k not in known:
            raise UserError(f"unknown config key {node._get_full_key(k)!r}; valid keys under "
                            f"{node._get_full_key('')}: {', '.join(known)}")
        if isinstance(v, list):
            data[k] = tuple(v)
    return cls(**data)


def validate(cfg: DictConfig) -> RunConfig:
    """Check the composed config once, at the edge, and freeze it into a RunConfig."""
    unknown = [k for k in cfg if k not in TOP_LEVEL]
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r}; valid keys at the top level: {', '.join(TOP_LEVEL)}")
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        if "dataset.root" in missing:
            raise UserError(f"dataset {cfg.dataset.name} needs --data-root (a folder with train/ and val/)")
        raise UserError(f"missing value for: {', '.join(sorted(missing))}")
    try:
        ds = _build(DatasetConfig, cfg.dataset)
        model = _build(ModelConfig, cfg.model)
        method = _build(MethodConfig, cfg.method)
        optim = _build(OptimConfig, cfg.optim)
        top = {k: cfg[k] for k in ("width", "base_width", "seed", "device", "out", "name", "precision", "compile")}
    except (OmegaConfBaseException, TypeError) as e:
        raise UserError(f"invalid config: {str(e).splitlines()[0]}") from None

    def integer(name, value, minimum):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return value

    width = integer("width", top["width"], 1)
    base_width = width if top["base_width"] is None else integer("base_width", top["base_width"], 1)
    if base_width > width:
        raise UserError(f"width {width} is below the base width {base_width}; family members have width "
                        f">= {base_width}")
    integer("seed", top["seed"], 0)
    integer("optim.epochs", optim.epochs, 1)
    integer("optim.batch_size", optim.batch_size, 1)
    if ds.subset is not None:
        integer("dataset.subset", ds.subset, 1)
    integer("dataset.image_size", ds.image_size, 1)
    integer("model.hidden_layers", model.hidden_layers, 1)
    for key, value, valid in (
        ("model.activation", model.activation, ("relu", "linear")),
        ("model.parameterization", model.parameterization, ("standard", "ntk")),
        ("model.stem", model.stem, ("auto", "cifar", "imagenet")),
        ("optim.schedule", optim.schedule, ("multistep", "cosine", "constant")),
        ("optim.name", optim.name, ("sgd",)),
        ("method.distribution", method.distribution, tuple(DISTRIBUTIONS)),
        ("method.within", method.within, ("all", "io")),
    ):
        if value not in valid:
            raise UserError(f"{key} must be one of {', '.join(valid)}, got {value!r}")
    llc = method.last_layer_connectivity
    if llc is not None and not (isinstance(llc, (int, float)) and 0 < llc <= 1):
        raise UserError(f"method.last_layer_connectivity must be in (0, 1], got {llc}")
    if not (optim.lr > 0):
        raise UserError(f"optim.lr must be > 0, got {optim.lr}")
    if top["precision"] not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {top['precision']!r}")
    if not isinstance(top["compile"], bool):
        raise UserError(f"compile must be true or false, got {top['compile']!r}")
    device = str(top["device"])
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return RunConfig(
        dataset=ds, model=model, method=method, optim=optim, width=width, base_width=base_width,
        seed=top["seed"], device=device, out=str(top["out"]), name=top["name"], precision=top["precision"],
        compile=top["compile"],
    )


def load(overrides: list[str] = ()) -> tuple[DictConfig, RunConfig]:
    cfg = compose_config(overrides)
    return cfg, validate(cfg)


def dataset_config(name: str, overrides: list[str] = ()) -> DatasetConfig:
    """One dataset's config from conf/dataset/, for commands that only need data (kernel-distance)."""
    return validate(compose_config([f"dataset={name}", *overrides])).dataset


KERNEL_INPUTS = ("gaussian", "mnist", "digits", "cifar10", "cifar100", "svhn", "synthetic")


@dataclass(frozen=True)
class KernelConfig:
    """`widen kernel-distance`: a one-hidden-layer ReLU family at one weight budget (paper Section 3)."""
    widths: tuple[int, ...] | None  # None: the Figure 7 widths when they fit, else a geometric range
    n_weights: int
    base_width: int | None  # the dense width whose weight count is the budget, when given that way
    input_dim: int
    outputs: int
    inputs: str = "gaussian"
    allocation: str = "first-layer"
    reference: int | None = None  # None: the analytic arc-cosine kernel; N: a dense width-N network
    pairs: int = 10_000
    inits: int = 10
    mask_samples: int = 64
    seed: int = 0
    device: str = "auto"
    out: str = "runs"
    name: str | None = None

    def run_name(self) -> str:
        if self.name:
            return self.name
        identity = {k: v for k, v in asdict(self).items() if k not in ("device", "out", "name")}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        return f"kernel-{self.inputs}-{self.allocation}-{self.n_weights}w-s{self.seed}-{digest}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.run_name()


def parse_reference(text: str) -> int | None:
    """`analytic` or `dense:N`."""
    if text == "analytic":
        return None
    kind, _, size = text.partition(":")
    if kind == "dense" and size.isdigit() and int(size) >= 1:
        return int(size)
    raise UserError(f"--reference must be analytic or dense:N with N >= 1 (e.g. dense:10000), got {text!r}")


def kernel_config(*, widths: list[int] | None, base_width: int | None, weights: int | None,
                  input_dim: int | None, outputs: int | None, inputs: str, data_root: str | None = None,
                  download: bool = False, reference: str = "analytic", **rest) -> tuple[KernelConfig, DatasetConfig | None]:
    """Validate kernel-distance options into a KernelConfig (and the dataset's config, for real inputs)."""
    if inputs not in KERNEL_INPUTS:
        raise UserError(f"unknown --inputs {inputs!r}; valid: {', '.join(KERNEL_INPUTS)}")
    for key in ("pairs", "inits", "seed", "mask_samples"):
        minimum = {"seed": 0, "mask_samples": 2}.get(key, 1)
        value = rest.get(key, KernelConfig.__dataclass_fields__[key].default)
        if value < minimum:
            raise UserError(f"--{key.replace('_', '-')} must be >= {minimum}, got {value}")
    for key, value in (("--width(s)", min(widths) if widths else 1), ("--base-width", base_width),
                       ("--weights", weights), ("--input-dim", input_dim), ("--outputs", outputs)):
        if value is not None and value < 1:
            raise UserError(f"{key} must be >= 1, got {value}")
    ds = None
    if inputs != "gaussian":
        overrides = [f"dataset.root={data_root}"] if data_root is not None else []
        ds = dataset_config(inputs, overrides + (["dataset.download=true"] if download else []))
        dim = ds.channels * ds.image_size ** 2
        if input_dim is not None and input_dim != dim:
            raise UserError(f"--input-dim {input_dim} does not match {inputs} images ({dim} values each); "
                            f"leave it out for dataset inputs")
        input_dim, outputs = dim, outputs or ds.num_classes
    input_dim, outputs = input_dim or 784, outputs or 10
    if base_width is not None and weights is not None:
        raise UserError("give the budget as --base-width or --weights, not both")
    if weights is None:
        base_width = base_width or 8  # the paper's Figure 7: width 8 on MNIST, 6,352 weights
        weights = base_width * (input_dim + outputs)
    if widths is not None:
        widths = tuple(sorted(set(widths)))
    cfg = KernelConfig(widths=widths, n_weights=weights, base_width=base_width, input_dim=input_dim,
                       outputs=outputs, inputs=inputs, reference=parse_reference(reference), **rest)
    return cfg, ds
