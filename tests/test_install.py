"""`widen` as an installed tool: a built wheel carries its configs and trains from any folder; the
conventions of a command line (--version, shell completion, a hint for Hydra's -m)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from widen_cli.cli import app, multirun_hint

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WIDEN = shutil.which("widen", path=str(BIN)) or "widen"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Subprocesses import this checkout (not whatever `widen` the environment has installed).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run(cmd, env=ENV, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without its dependencies, which this environment
    has) into a folder outside the repository. The build reads a copy of the sources, so it leaves no
    build/ or egg-info behind in the checkout."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("widen_cli", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # Build isolation would download setuptools; the one in this environment builds the same wheel.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    built = run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", *isolation, "-w", tmp / "dist"])
    assert built.returncode == 0, built.stdout + built.stderr
    wheel, = (tmp / "dist").glob("widen_cli-*.whl")
    done = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", tmp / "site", wheel])
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp


def test_the_wheel_trains_on_digits_from_another_folder(installed):
    site, elsewhere = installed / "site", installed / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy only, not this checkout
    where = run([sys.executable, "-c", "import widen_cli, widen_cli.config as c; print(widen_cli.__file__); "
                 "print(c.CONF_DIR)"], env=env, cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    module, conf = map(Path, where.stdout.split())
    assert module.is_relative_to(site) and not module.is_relative_to(REPO)
    assert conf == site / "widen_cli" / "conf" and (conf / "dataset" / "digits.yaml").is_file()

    res = run([sys.executable, "-m", "widen_cli", "train", "--dataset", "digits", "--epochs", 1, "--width", 8,
               "--out", installed / "runs"], env=env, cwd=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    summary, = (installed / "runs").glob("*/summary.parquet")
    row = pd.read_parquet(summary).iloc[0]
    assert (row.dataset, row.width, row.epochs, row.status) == ("digits", 8, 1, "finished")
    assert list(elsewhere.iterdir()) == []  # nothing written to the working directory
    # The console script pip wrote runs the installed copy too.
    version = run([site / "bin" / "widen", "--version"], env=env, cwd=elsewhere)
    assert version.returncode == 0 and version.stdout.strip() == f"widen {VERSION}", version.stderr


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"widen {VERSION}"


def test_shell_completion():
    # Typer otherwise detects the shell from the parent processes, and a test run without a shell among
    # them (a CI runner, a background job) would get "Shell not supported"; with this, `bash` is used.
    script = run([WIDEN, "--show-completion", "bash"], env={**ENV, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0, script.stderr
    assert "_WIDEN_COMPLETE=complete_bash" in script.stdout
    # What bash asks the program when the user presses tab after `widen sw` and `widen train --data`.
    env = {**ENV, "_WIDEN_COMPLETE": "complete_bash"}
    commands = run([WIDEN], env={**env, "COMP_WORDS": "widen sw", "COMP_CWORD": "1"})
    assert commands.stdout.split() == ["sweep-width"]
    options = run([WIDEN], env={**env, "COMP_WORDS": "widen train --data", "COMP_CWORD": "2"})
    assert set(options.stdout.split()) == {"--dataset", "--data-root"}


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_hydra_multirun_points_to_sweep_width(tmp_path, flag):
    res = run([sys.executable, "-m", "widen_cli", "train", flag, "width=8,16", "--out", tmp_path])
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1 and "widen sweep-width" in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_multirun_hint_only_for_the_flag():
    assert multirun_hint(["sweep-width", "-m"]) is not None
    assert multirun_hint(["train", "--model", "mlp", "model.activation=linear"]) is None
    assert multirun_hint(["train", "--", "-m"]) is None  # after --, an argument
