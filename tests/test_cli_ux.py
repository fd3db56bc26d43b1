"""The command line as users meet it: help text, plain flags, value completion, option -> config key."""
from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from widen_cli import cli, completion, compose

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


@pytest.mark.parametrize("command, fn", [("train", cli.train), ("sweep-width", cli.sweep_width)])
def test_every_option_reaches_a_config_key_or_its_command(command, fn):
    """A parameter renamed without its OPTION_KEYS entry would otherwise drop its option silently."""
    params = set(inspect.signature(inspect.unwrap(fn)).parameters)
    unmapped = params - set(compose.OPTION_KEYS) - cli.COMMAND_ONLY[command]
    assert not unmapped, f"{command}: {unmapped} reach no config key; add them to compose.OPTION_KEYS"
    assert not cli.COMMAND_ONLY[command] - params  # no stale names either
