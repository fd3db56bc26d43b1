"""The config edge: one line for every value of the wrong type, the user's own config folders, and
commands that import only what they use."""
import dataclasses
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import widen
from widen_cli import compose, schema, validation

from widen_cli.identity import identity_of, run_name
from widen_cli.cli import app
from widen_cli.schema import RunConfig, SweepConfig
from widen_cli.compose import CONFIG_PATH_ENV

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def leaf_keys(cls, prefix=""):
    """(dotted key, annotation) of every value a config dataclass holds, found from its fields."""
    for f in dataclasses.fields(cls):
        if f.metadata.get(schema.COMPUTED):  # computed by the command (data_fingerprint), refused as a setting
            continue
        if f.type in validation.NESTED:
            yield from leaf_keys(validation.NESTED[f.type], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.type


def wrong_value(annotation: str) -> str:
    """A value Hydra parses into something of another type than the field's."""
    return "[1]" if annotation.startswith(("str", "bool")) else "abc"


KEYS = [*leaf_keys(RunConfig), *leaf_keys(SweepConfig, "sweep.")]


def group_with(key: str) -> list[str]:
    """A group choice under which `key` exists (dataset.workers: a folder dataset), found in conf/."""
    group, _, leaf = key.partition(".")
    if group not in ("dataset", "model", "method", "optim"):
        return []
    for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        if leaf in values and "???" not in values.values():  # (not one that needs --data-root)
            return [f"{group}={path.stem}"]
    raise AssertionError(f"no conf/{group}/*.yaml holds {leaf}")


@pytest.mark.parametrize("key,annotation", KEYS, ids=[k for k, _ in KEYS])
def test_every_value_of_the_wrong_type_is_one_line(key, annotation):
    command = ["sweep-width", "--experiment", "smoke_sweep", "--dry-run"] if key.startswith("sweep.") else \
        ["train", "--show-config"]
    res = widen(*command, *group_with(key), f"{key}={wrong_value(annotation)}")
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {key} must be ") and len(res.output.strip().splitlines()) == 1, res.output


def test_wrong_type_names_the_expected_type():
    res = widen("train", "--show-config", "optim.lr=abc")
    assert res.exit_code == 2 and "optim.lr must be a number, got 'abc'" in res.output
    res = widen("train", "--show-config", "optim.momentum=abc")
    assert res.exit_code == 2 and "optim.momentum must be a number, got 'abc'" in res.output


@pytest.fixture
def user_configs(tmp_path):
    """An own preset and an own image-folder dataset (with its recipe), as a user writes them."""
    d = tmp_path / "myconf"
    (d / "experiment").mkdir(parents=True)
    (d / "dataset").mkdir()
    (d / "optim").mkdir()
    (d / "experiment" / "mine.yaml").write_text("# @package _global_\nwidth: 12\noptim:\n  epochs: 3\n")
    (d / "dataset" / "mydata.yaml").write_text(yaml.safe_dump(dict(
        name="imagefolder", root=str(tmp_path / "pictures"), download=False, num_classes=5, image_size=16,
        channels=3, subset=None, augment=["flip"], workers=2)))
    (d / "optim" / "mydata.yaml").write_text((ROOT / "conf" / "optim" / "imagefolder.yaml").read_text())
    return d


def show(*args, env=None):
    res = runner.invoke(app, ["train", "--show-config", *map(str, args)], env=env)
    assert res.exit_code == 0, res.output
    return yaml.safe_load(res.output.split("# run folder:")[0])


def test_config_dir_adds_presets_and_datasets(user_configs):
    cfg = show("--config-dir", user_configs, "--experiment", "mine", "--dataset", "mydata")
    assert cfg["width"] == 12 and cfg["optim"]["epochs"] == 3
    assert cfg["dataset"]["num_classes"] == 5 and cfg["dataset"]["image_size"] == 16
    res = widen("train", "--config-dir", user_configs, "--dataset", "nosuch")
    assert res.exit_code == 2 and "mydata" in res.output and "digits" in res.output  # listed among the valid


def test_config_path_environment_variable(user_configs, tmp_path):
    env = {CONFIG_PATH_ENV: f"{tmp_path / 'empty'}:{user_configs}"}
    (tmp_path / "empty").mkdir()
    cfg = show("--experiment", "mine", "--dataset", "mydata", env=env)
    assert cfg["width"] == 12 and cfg["dataset"]["num_classes"] == 5
    res = runner.invoke(app, ["train", "--experiment", "nosuch"], env=env)
    assert res.exit_code == 2 and "mine" in res.output
    res = runner.invoke(app, ["train", "--show-config"], env={CONFIG_PATH_ENV: str(tmp_path / "absent")})
    assert res.exit_code == 2 and "absent does not exist" in res.output


def test_sweep_plans_with_a_user_dataset(user_configs, tmp_path):
    res = widen("sweep-width", "--config-dir", user_configs, "--dataset", "mydata", "--model", "mlp",
                "--base-width", 4, "--widths", "4,8", "--dry-run", "--out", tmp_path, "--name", "u")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "u" / "plan.parquet").exists()


def modules_after(code: str) -> set:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "--width", "abc"],
                                  ["sweep-width", "--help"]])
def test_help_and_option_errors_import_nothing_heavy(args):
    loaded = modules_after(f"from typer.testing import CliRunner\nfrom widen_cli.cli import app\n"
                           f"CliRunner().invoke(app, {args!r})")
    assert not loaded & {"torch", "torchvision", "pandas", "matplotlib", "submitit", "hydra"}


def test_training_without_compile_does_not_load_the_compiler(tmp_path):
    loaded = modules_after(f"from typer.testing import CliRunner\nfrom widen_cli.cli import app\n"
                           f"r = CliRunner().invoke(app, ['train', '--width', '8', '--epochs', '1', '--out', "
                           f"{str(tmp_path)!r}])\nassert r.exit_code == 0, r.output")
    assert "torch" in loaded and "torch._dynamo" not in loaded


def test_resnet_init_defaults_to_lecun_and_names_the_run():
    runs = {init: compose.load(["dataset=cifar10", "model=resnet18", f"model.init={init}"])[1]
            for init in ("lecun", "pytorch", "torchvision")}
    assert compose.load(["dataset=cifar10", "model=resnet18"])[1] == runs["lecun"]  # the paper's stated init
    assert [identity_of(r)["model"].get("init") for r in runs.values()] == ["lecun", "pytorch", None]
    assert len({run_name(r) for r in runs.values()}) == 3
    # torchvision is what every ResNet run had before model.init: left out, so their folders are found
    old = replace(runs["torchvision"], model=dataclasses.replace(runs["torchvision"].model, init=None))
    assert identity_of(runs["torchvision"]) == identity_of(old)
    mlp = compose.load(["dataset=digits", "model=mlp"])[1]
    assert mlp.model.init is None and "init" not in identity_of(mlp)["model"]  # MLP folders keep their names


@pytest.mark.parametrize("overrides,message", [
    (["model=resnet18", "model.init=xavier"], "model.init must be one of lecun, pytorch, torchvision, got 'xavier'"),
    (["model=resnet18", "model.init=null"], "model.init must be one of lecun, pytorch, torchvision, got None"),
    (["model=mlp", "+model.init=lecun"], "model.init is for resnet18; the mlp's initialisation is "
                                         "model.parameterization"),
])
def test_bad_init_is_one_line(overrides, message):
    res = widen("train", "--show-config", *overrides)
    assert res.exit_code == 2 and res.output.startswith(f"error: {message}"), res.output
