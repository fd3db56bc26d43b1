"""Compose `conf/` with Hydra: the config folders searched, the command-line options as overrides, and
user mistakes in them as one-line errors. validation.py then checks the result into schema.py's dataclasses.

Hydra is imported only when a command composes: `widen --help` and option errors need none of it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from widen_cli import datasets
from widen_cli.conf_path import shipped_conf_dir
from widen_cli.errors import UserError
from widen_cli.schema import RunConfig
from widen_cli.validation import validate

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = shipped_conf_dir()
CONFIG_PATH_ENV = "WIDEN_CONFIG_PATH"  # colon-separated folders searched before conf/
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


def _compose(overrides: list[str], dirs: list[Path], hydra_node: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_dir  # ~0.2 s: only for commands that compose

    extra = [d for d in dirs if d != CONF_DIR]
    search = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in extra)}]"] if extra else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*search, *overrides], return_hydra_config=hydra_node)


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


def compose_config(overrides: list[str] = (), extra_dirs: list[Path] | tuple = (),
                   hydra_node: bool = False) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; user mistakes become UserError. `hydra_node`: keep
    Hydra's own `hydra:` node (hydra.runtime.choices: which YAML each group took)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides, dirs = list(overrides), config_dirs(extra_dirs)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0].split("@", 1)[0]  # method@pkg=NAME: the method group too
        if "=" not in o and not o.startswith("~"):
            flag = " (flags such as --dry-run take no value)" if o.lower() in ("true", "false") else ""
            raise UserError(f"override {o!r} is not of the form key=value{flag}")
        if key in GROUPS and "=" in o and o.split("=", 1)[1] not in choices(key, dirs):
            raise UserError(f"unknown {key} {o.split('=', 1)[1]!r}; valid: {', '.join(choices(key, dirs))}")
    try:
        return _compose(overrides, dirs, hydra_node)
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
    cfg = compose_config(overrides, extra_dirs)
    return cfg, validate(cfg)
