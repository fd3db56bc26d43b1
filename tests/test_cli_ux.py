"""The command line as users meet it: help text, plain flags, value completion, option -> config key."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from widen_cli import cli, completion

REPO = Path(__file__).resolve().parent.parent
WIDEN = shutil.which("widen", path=str(Path(sys.executable).parent)) or "widen"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "COLUMNS": "100"}
runner = CliRunner()


def widen(*args):
    return subprocess.run([WIDEN, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", [[], ["train"], ["sweep-width"], ["kernel-distance"], ["report"]])
def test_help_shows_flags_and_defaults_plainly(command):
    res = runner.invoke(cli.app, [*command, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output  # a flag takes no value
    assert not re.search(r"default: \(", res.output), res.output


def test_kernel_help_shows_conf_defaults():
    res = runner.invoke(cli.app, ["kernel-distance", "--help"], env={"COLUMNS": "200"})
    assert "Default: 10000." in res.output  # conf/kernel.yaml's pairs


def test_sweep_help_fits_about_a_screen():
    res = runner.invoke(cli.app, ["sweep-width", "--help"], env={"COLUMNS": "100"})
    assert res.output.count("\n") <= 80, res.output  # 148 lines before the panels and shorter texts


def test_dry_run_is_a_plain_flag(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--dry-run",
                "--out", tmp_path, "--name", "s")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s" / "plan.parquet").is_file()
    res = widen("sweep-width", "--dataset", "digits", "--dry-run", "true", "--out", tmp_path / "t")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "take no value" in res.stderr
    assert not (tmp_path / "t").exists()


def test_width_cap_names_staggered(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,4000", "--dry-run",
                "--out", tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "method.distribution=staggered" in res.stderr
    assert list(tmp_path.iterdir()) == []
    res = widen("kernel-distance", "--widths", "8,100000", "--base-width", 8, "--out", tmp_path)
    assert res.returncode == 2 and "--distribution staggered" in res.stderr


def complete(words: str, env=None) -> list[str]:
    """What bash gets back when the user presses tab at the end of `words`."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    res = subprocess.run([WIDEN], env={**ENV, **(env or {}), "_WIDEN_COMPLETE": "complete_bash",
                                       "COMP_WORDS": words, "COMP_CWORD": str(cword)},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_completion_of_values(tmp_path):
    assert set(complete("widen sweep-width --dataset ci")) == {"cifar10", "cifar100"}
    assert set(complete("widen train --dataset ")) == {p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml")}
    assert set(complete("widen sweep-width --experiment fig1_c")) == {"fig1_cifar10", "fig1_cifar100"}
    assert set(complete("widen train --method pruned")) == {"pruned", "pruned-rewind", "pruned-structured"}
    assert complete("widen sweep-width --methods sparse,lin") == ["sparse,linear-bottleneck"]
    assert set(complete("widen sweep-width --model ")) == {"mlp", "resnet18"}
    assert complete("widen sweep-width --launcher p") == ["pool"]
    # The user's own presets too, from WIDEN_CONFIG_PATH and from --config-dir earlier on the line.
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n")
    assert complete("widen sweep-width --experiment mi", {"WIDEN_CONFIG_PATH": str(tmp_path)}) == ["mine"]
    assert complete(f"widen sweep-width --config-dir {tmp_path} --experiment mi") == ["mine"]


def test_completion_loads_no_heavy_modules():
    probe = ("import atexit, sys; atexit.register(lambda: print(sorted(m for m in ('torch', 'pandas', 'hydra') "
             "if m in sys.modules), file=sys.stderr)); sys.argv = ['widen']; from widen_cli.cli import main; main()")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600,
                         env={**ENV, "_WIDEN_COMPLETE": "complete_bash", "COMP_WORDS": "widen train --dataset ",
                              "COMP_CWORD": "3"})
    assert "cifar10" in res.stdout.split() and res.stderr.strip().endswith("[]"), (res.stdout, res.stderr)


def test_completion_knows_every_launcher():
    from widen_cli import sweep

    assert set(completion.LAUNCHERS) == set(sweep.LAUNCHERS)


# Every option of train and sweep-width with a value other than its default: the words given, and where
# the value must arrive, a key of the composed config or (sweep.*) a field of the sweep's settings.
# {tmp} is the test's folder; the preset `mine` there sets optim.momentum.
COMMON = {
    "--dataset": (["synthetic"], "dataset.name", "synthetic"), "--model": (["resnet18"], "model.name", "resnet18"),
    "--epochs": (["3"], "optim.epochs", 3), "--batch-size": (["7"], "optim.batch_size", 7),
    "--lr": (["0.03"], "optim.lr", 0.03), "--device": (["cpu"], "device", "cpu"),
    "--precision": (["bf16"], "precision", "bf16"), "--compile": ([], "compile", True),
    "--data-root": (["somewhere"], "dataset.root", "somewhere"), "--download": ([], "dataset.download", True),
    "--image-size": (["12"], "dataset.image_size", 12), "--subset": (["50"], "dataset.subset", 50),
    "--skip-bad-images": ([], "dataset.skip_bad_images", True),
    "--track": (["tensorboard"], "tracking", ["tensorboard"]), "--out": (["{tmp}"], "out", "{tmp}"),
    "--name": (["n"], "name", "n"), "--config-dir": (["{tmp}"], "optim.momentum", 0.25),
    "--experiment": (["mine"], "optim.momentum", 0.25),
}
TRAIN = {**COMMON, "--method": (["sparse"], "method.name", "sparse"), "--width": (["16"], "width", 16),
         "--base-width": (["8"], "base_width", 8), "--seed": (["5"], "seed", 5)}
SWEEP = {**COMMON, "--method": (["sparse"], "method.name", "sparse"),
         "--distribution": (["uniform"], "method.distribution", "uniform"),
         "--base-width": (["8"], "sweep.base_widths", [8]), "--widths": (["16,32"], "sweep.widths", [16, 32]),
         "--seeds": (["1,2"], "sweep.seeds", [1, 2]), "--lrs": (["0.1,0.2"], "sweep.lrs", [0.1, 0.2]),
         "--last-layer-connectivity": (["0.5"], "sweep.last_layer_connectivity", [0.5]),
         "--connectivity-floor": (["0.02"], "sweep.connectivity_floor", 0.02),
         "--dense-wide": (["--no-dense-wide"], "sweep.dense_wide", False),
         "--select-on": (["val"], "sweep.select_on", "val")}
# Given instead of --method, its --distribution and --widths, in a second sweep (they exclude each other).
SWEEP_OTHERS = {"--methods": (["sparse,dense"], "sweep.methods", ["sparse", "dense"]),
                "--factors": (["2"], "sweep.factors", [2.0])}
# Options that steer the command itself; none sets a config key.
COMMAND_ONLY = {"train": {"--show-config", "--restart"},
                "sweep-width": {"--launcher", "--jobs", "--dry-run", "--restart"}}


def _declared(command: str) -> set[str]:
    cmd = typer.main.get_command(cli.app).commands[command]
    return {p.opts[0] for p in cmd.params if p.param_type_name == "option"}


def _argv(table: dict, tmp: Path) -> list[str]:
    words = []
    for option, (values, _, _) in table.items():
        words += ([] if values and values[0].startswith("--") else [option]) + [v.format(tmp=tmp) for v in values]
    return words


def _check(table: dict, tmp: Path, composed: dict, settings=None):
    for option, (_, key, expected) in table.items():
        if key.startswith("sweep."):
            value = getattr(settings, key.split(".", 1)[1])
        else:
            value = composed
            for part in key.split("."):
                value = value[part]
        value = list(value) if isinstance(value, (tuple, list)) else value
        assert value == (expected.format(tmp=tmp) if isinstance(expected, str) else expected), (option, value)


def _preset(tmp: Path) -> None:
    (tmp / "experiment").mkdir()
    (tmp / "experiment" / "mine.yaml").write_text("# @package _global_\noptim:\n  momentum: 0.25\n")


def test_every_train_option_reaches_the_config(tmp_path):
    """An option declared but dropped on its way (a renamed parameter, a key not passed on) fails here."""
    import yaml

    assert set(TRAIN) | COMMAND_ONLY["train"] == _declared("train")  # a new option needs its line above
    _preset(tmp_path)
    res = runner.invoke(cli.app, ["train", *_argv(TRAIN, tmp_path), "--show-config"])
    assert res.exit_code == 0, res.output
    _check(TRAIN, tmp_path, yaml.safe_load(res.stdout))


def test_every_sweep_option_reaches_the_config_or_the_sweep_settings(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from widen_cli import plan

    assert set(SWEEP) | set(SWEEP_OTHERS) | COMMAND_ONLY["sweep-width"] == _declared("sweep-width")
    _preset(tmp_path)
    seen, settings = [], plan.settings  # what the command composed, and the settings it planned with

    def spy(cfg, **given):
        seen.append((OmegaConf.to_container(cfg, resolve=True), settings(cfg, **given)))
        return seen[-1][1]

    monkeypatch.setattr(plan, "settings", spy)
    others = {k: v for k, v in SWEEP.items() if k not in ("--method", "--distribution", "--widths")}
    others = {**others, **SWEEP_OTHERS, "--name": (["n2"], "name", "n2")}  # another sweep, another folder
    for table in (SWEEP, others):
        res = runner.invoke(cli.app, ["sweep-width", *_argv(table, tmp_path), "--dry-run"])
        assert res.exit_code == 0, res.output
        _check(table, tmp_path, *seen[-1])
