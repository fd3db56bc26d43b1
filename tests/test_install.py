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

from widen_cli.cli import app
from widen_cli.terminal import multirun_hint

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WIDEN = shutil.which("widen", path=str(BIN)) or "widen"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Subprocesses import this checkout (not whatever `widen` the environment has installed).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
# Without this checkout on the path: what a user's shell has.
CLEAN = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(cmd, env=ENV, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def site_packages(python: Path | str) -> Path:
    out = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout and pip-installed into a fresh venv outside the repository,
    the way `pip install .` or pipx installs it (no editable install). The venv reaches the test
    environment's dependencies (torch alone is about 5 GB) through path entries appended after its own
    site-packages; the test environment's .pth files are not processed from there, so its editable
    install of this checkout is not seen. The build reads a copy of the sources, so it leaves no build/
    or egg-info behind in the checkout."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("widen_cli", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # Build isolation would download setuptools; one here that builds wheels itself builds the same wheel.
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    built = run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", *isolation, "-w", tmp / "dist"])
    assert built.returncode == 0, built.stdout + built.stderr
    wheel, = (tmp / "dist").glob("widen_cli-*.whl")
    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    done = run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
                wheel], env=CLEAN)
    assert done.returncode == 0, done.stdout + done.stderr
    # Only now, so that pip does not take the test environment's widen_cli for this one.
    (site_packages(venv / "bin" / "python") / "deps.pth").write_text(
        "".join(f"{p}\n" for p in sys.path if Path(p).name in ("site-packages", "dist-packages")))
    return tmp


def _setuptools_builds_wheels() -> bool:
    """setuptools >= 70.1 builds wheels without the separate `wheel` package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools
    return tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1)


def test_the_wheel_runs_every_command_from_another_folder(installed):
    venv, elsewhere, out = installed / "venv", installed / "elsewhere", installed / "runs"
    elsewhere.mkdir()
    env = CLEAN  # the installed copy only
    python, widen = venv / "bin" / "python", venv / "bin" / "widen"
    where = run([python, "-c", "import widen_cli, widen_cli.report, widen_cli.compose as c; "
                 "print(widen_cli.__file__); print(c.CONF_DIR)"], env=env, cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    module, conf = map(Path, where.stdout.split())
    assert module.is_relative_to(venv) and not module.is_relative_to(REPO)
    assert conf == module.parent / "conf" and (conf / "dataset" / "digits.yaml").is_file()

    def ok(*args):
        res = run([widen, *args], env=env, cwd=elsewhere)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    ok("train", "--dataset", "digits", "--epochs", 1, "--width", 8, "--out", out)
    summary, = out.glob("*/summary.parquet")
    row = pd.read_parquet(summary).iloc[0]
    assert (row.dataset, row.width, row.epochs, row.status) == ("digits", 8, 1, "finished")
    ok("sweep-width", "--experiment", "smoke_sweep", "--epochs", 1, "--name", "smoke", "--out", out)
    assert set(pd.read_parquet(out / "smoke" / "results.parquet").status) == {"finished"}
    ok("kernel-distance", "--widths", "8,16", "--pairs", 20, "--inits", 2, "--name", "kd", "--out", out)
    assert (out / "kd" / "kernel_distance.parquet").is_file()
    ok("report", out / "smoke", out / "kd", "--out", installed / "report")
    assert (installed / "report" / "table.csv").is_file()
    assert list(elsewhere.iterdir()) == []  # nothing written to the working directory
    version = ok("--version")
    assert version.stdout.strip() == f"widen {VERSION}"


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
