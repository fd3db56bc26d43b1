"""The settings of a run and a sweep: frozen dataclasses (what validation.py builds from a composed config,
compose.py) and the names their keys accept (datasets' facts are the dataset registry's, datasets/).
Imports nothing of widen_cli: every other module may use it.

Which of these fields identify a run, and so name its folder, is identity.py's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16")
INITS = ("lecun", "pytorch", "torchvision")  # ResNet initialisation (models/resnet.py)
NORMALIZATIONS = ("per-channel", "per-pixel")
SELECT_ON = ("test", "val")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # what `device` accepts (validation.check_device; hardware resolves it)
DEVICES = "auto, cpu, cuda or cuda:N"  # the same, in words
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
    prune: str = "magnitude"  # structured | magnitude | magnitude-rewind
    scope: str = "layer"  # magnitude: layer (the sparse family's per-layer counts) | global (largest |w| overall)
    rewind_epoch: int = 0  # magnitude-rewind: the parent's epoch whose weights the kept ones go back to
    finetune_epochs: int | None = None  # null: the recipe's epochs for rewind, a quarter of them otherwise (methods/pruned.py)


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
