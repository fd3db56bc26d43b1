"""The command-line options that more than one command shares, each declared once: its type, help text,
help panel, completion and the config key it sets; and what a command line gave, as {config key: value}.

A config key is written beside its option (Key, in the option's Annotated metadata) rather than found by
matching parameter names, so renaming a command's parameter cannot silently drop its option.
Only typer loads here: `--help` and option errors answer at once.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from widen_cli import completion
from widen_cli.errors import UserError

# Help panels, so that sweep-width's three dozen options read in groups.
FAMILY, EXTRA, DATA, TRAINING, RUN = "Family", "More runs", "Data", "Training", "Output and running"


@dataclass(frozen=True)
class Key:
    """Annotated metadata: the config key (a Hydra override's left side) that an option sets."""
    name: str


def opt(help: str, *flags: str, panel: str = TRAINING, **kw):
    return typer.Option(*flags, help=help, rich_help_panel=panel, **kw)


def keyed(key: str, kind, help: str, *flags: str, **kw):
    """An option type that sets the config key `key`: Annotated[kind, its typer.Option, Key(key)]."""
    return Annotated[kind, opt(help, *flags, **kw), Key(key)]


def given(ctx: typer.Context) -> dict:
    """{config key: value} of every keyed option of this command line's command (None, or False for a
    flag: not given), so that a reader can refuse a key it does not know even when its option is not given.
    The keys come from the command's own annotations."""
    hints = typing.get_type_hints(ctx.command.callback, include_extras=True)
    keys = {name: m.name for name, hint in hints.items() for m in getattr(hint, "__metadata__", ())
            if isinstance(m, Key)}
    return {keys[name]: value for name, value in ctx.params.items() if name in keys}


def numbers(text: str | None, kind, option: str) -> list | None:
    """A comma-separated option's numbers (none/null: None); None when the option was not given."""
    if text is None:
        return None
    try:
        return [None if t.strip().lower() in ("none", "null") else kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None


def names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


# ---------------------------------------------------------------- options of train and sweep-width

Overrides = Annotated[Optional[List[str]], typer.Argument(
    help="Hydra overrides after the options (every member's), e.g. optim.lr=0.05 method.distribution=erk; "
    "train --show-config lists the keys.", show_default=False)]
Dataset = keyed("dataset", Optional[str], "cifar10, cifar100, svhn, mnist, imagenet, imagefolder, digits or "
                "synthetic.", panel=DATA, autocompletion=completion.datasets)
Model = keyed("model", Optional[str], "mlp or resnet18. Default: mlp for mnist/digits/synthetic.",
              autocompletion=completion.models)
Epochs = keyed("optim.epochs", Optional[int], "Default: the paper's (300; ImageNet 150).")
BatchSize = keyed("optim.batch_size", Optional[int], "Default: the paper's (128 CIFAR/SVHN, 100 MNIST).")
Lr = keyed("optim.lr", Optional[float], "Initial learning rate. Default: 0.1.")
Device = keyed("device", Optional[str], "auto (CUDA when present), cpu, cuda or cuda:N.")
Precision = keyed("precision", Optional[str], "fp32 (default) or bf16 (autocast). Part of the run's identity.")
Compile = keyed("compile", bool, "torch.compile the model (pays off on long GPU runs).", "--compile")
DataRoot = keyed("dataset.root", Optional[Path], "Dataset folder (torchvision layout; image folders: train/, val/).",
                 panel=DATA)
Download = keyed("dataset.download", bool, "Fetch the dataset into --data-root if missing.", "--download",
                 panel=DATA)
ImageSize = keyed("dataset.image_size", Optional[int], "Image side in pixels (ImageNet default 224).", panel=DATA)
Subset = keyed("dataset.subset", Optional[int], "Train on a fixed random subset of N samples.", panel=DATA)
# ++: accepted (and unused) by datasets without the key
SkipBadImages = keyed("++dataset.skip_bad_images", bool, "Image folders: skip (and count) files that cannot be "
                      "decoded.", "--skip-bad-images", panel=DATA)
Track = keyed("tracking", Optional[str], "tensorboard, mlflow, wandb (offline): comma-separated trackers.")
Out = keyed("out", Optional[Path], "Output root; results go to <out>/<name>/. Default: runs.", panel=RUN)
Name = keyed("name", Optional[str], "Folder name. Default: the settings plus a short hash.", panel=RUN)
Experiment = Annotated[Optional[str], opt("A preset from conf/experiment/, e.g. smoke, fig1_cifar100.", panel=RUN,
                                          autocompletion=completion.experiments)]
ConfigDir = Annotated[Optional[List[Path]], opt(
    "Your own config folder (laid out as conf/), searched first; repeatable. Also: WIDEN_CONFIG_PATH.",
    "--config-dir", panel=RUN)]
