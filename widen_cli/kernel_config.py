"""`widen kernel-distance`'s settings: conf/kernel.yaml's defaults under the given options, validated once."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from widen_cli import datasets
from widen_cli.budget import check_distribution
from widen_cli.compose import CONF_DIR, compose_config
from widen_cli.identity import folder_name
from widen_cli.schema import DatasetConfig
from widen_cli.validation import check_device, check_name, validate
from widen_cli.errors import UserError

KERNEL_DEFAULTS_FILE = CONF_DIR / "kernel.yaml"
KERNEL_INPUTS = ("gaussian", *datasets.names(datasets.TENSOR))  # Gaussian vectors or an in-memory dataset's


def dataset_config(name: str, overrides: list[str] = (), extra_dirs=()) -> DatasetConfig:
    """One dataset's config from conf/dataset/, for commands that only need data (kernel-distance)."""
    return validate(compose_config([f"dataset={name}", *overrides], extra_dirs)).dataset


def kernel_defaults() -> dict:
    """conf/kernel.yaml: kernel-distance's defaults (read, not composed: it has no groups)."""
    import yaml

    return yaml.safe_load(KERNEL_DEFAULTS_FILE.read_text())


@dataclass(frozen=True)
class KernelConfig:
    """`widen kernel-distance`: a one-hidden-layer ReLU family at one weight budget (paper Section 3).
    Defaults: conf/kernel.yaml."""
    widths: tuple[int, ...] | None  # None: the Figure 7 widths when they fit, else a geometric range
    n_weights: int
    base_width: int | None  # the dense width whose weight count is the budget, when given that way
    input_dim: int
    outputs: int
    inputs: str
    distribution: str  # across the two layers: a budget.DISTRIBUTIONS name, as sweep-width's
    reference: int | None  # None: the analytic arc-cosine kernel; N: a dense width-N network
    pairs: int
    inits: int
    mask_samples: int
    seed: int
    device: str
    out: str
    name: str | None

    def run_name(self) -> str:
        if self.name:
            return self.name
        identity = {k: v for k, v in asdict(self).items() if k not in ("device", "out", "name")}
        return folder_name(f"kernel-{self.inputs}-{self.distribution}-{self.n_weights}w-s{self.seed}", identity)

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


# What kernel-distance's options may set besides conf/kernel.yaml's keys.
OPTION_KEYS = ("widths", "weights", "dataset.root", "dataset.download")


def kernel_config(given: dict, dirs=()) -> tuple[KernelConfig, DatasetConfig | None]:
    """Validate kernel-distance options, by the key each sets (None: not given), over conf/kernel.yaml's
    defaults into a KernelConfig (and the dataset's config, for real inputs)."""
    defaults = kernel_defaults()
    unknown = set(given) - set(defaults) - set(OPTION_KEYS)
    if unknown:  # an option declared with a key nothing here reads would be dropped silently
        raise ValueError(f"kernel-distance has no settings {sorted(unknown)}")
    given = {k: v for k, v in given.items() if v is not None and v is not False}
    o = {**defaults, **given}
    check_distribution(o["distribution"], "--distribution")
    check_device(str(o["device"]), "--device")
    check_name(o["name"])
    if o["inputs"] not in KERNEL_INPUTS:
        raise UserError(f"unknown --inputs {o['inputs']!r}; valid: {', '.join(KERNEL_INPUTS)}")
    for key in ("pairs", "inits", "seed", "mask_samples"):
        minimum = {"seed": 0, "mask_samples": 2}.get(key, 1)
        if o[key] < minimum:
            raise UserError(f"--{key.replace('_', '-')} must be >= {minimum}, got {o[key]}")
    widths = given.get("widths")
    for key, value in (("--width(s)", min(widths) if widths else 1), ("--base-width", given.get("base_width")),
                       ("--weights", given.get("weights")), ("--input-dim", given.get("input_dim")),
                       ("--outputs", given.get("outputs"))):
        if value is not None and value < 1:
            raise UserError(f"{key} must be >= 1, got {value}")
    if "base_width" in given and "weights" in given:
        raise UserError("give the budget as --base-width or --weights, not both")
    ds, input_dim, outputs = None, o["input_dim"], o["outputs"]
    if o["inputs"] != "gaussian":
        overrides = [f"dataset.root={o['dataset.root']}"] if o.get("dataset.root") is not None else []
        ds = dataset_config(o["inputs"], overrides + (["dataset.download=true"] if o.get("dataset.download") else []),
                            dirs)
        input_dim = ds.channels * ds.image_size ** 2
        if given.get("input_dim", input_dim) != input_dim:
            raise UserError(f"--input-dim {given['input_dim']} does not match {o['inputs']} images ({input_dim} "
                            f"values each); leave it out for dataset inputs")
        outputs = given.get("outputs") or ds.num_classes or outputs
    base_width, weights = (None, given["weights"]) if "weights" in given else (o["base_width"], None)
    if weights is None:
        weights = base_width * (input_dim + outputs)
    cfg = KernelConfig(
        widths=tuple(sorted(set(widths))) if widths else None, n_weights=weights, base_width=base_width,
        input_dim=input_dim, outputs=outputs, inputs=o["inputs"], distribution=o["distribution"],
        reference=parse_reference(o["reference"]), pairs=o["pairs"], inits=o["inits"],
        mask_samples=o["mask_samples"], seed=o["seed"], device=o["device"], out=str(o["out"]), name=o["name"])
    return cfg, ds
