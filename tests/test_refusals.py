"""Every mistake a user can make gets one `error:` line, exit code 2, and nothing written under --out:
bad values, names that leave --out, sizes that cannot fit the machine (refused before any allocation),
data or devices that are not there, full or read-only disks."""
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from widen_cli.cli import app
from widen_cli.compose import load, overrides_from_options
from widen_cli.datasets import spec_from_config
from widen_cli.jobs import make_job
from widen_cli.models import build_model

runner = CliRunner()
WIDEN = shutil.which("widen", path=str(Path(sys.executable).parent)) or "widen"
TRAIN = ["train", "--dataset", "digits", "--epochs", 1, "--width", 8]
SWEEP = ["sweep-width", "--dataset", "digits", "--epochs", 1, "--base-width", 8, "--widths", "8,16"]
KERNEL = ["kernel-distance", "--widths", "8,16", "--pairs", 64, "--inits", 2]

REFUSED = {  # case -> (arguments, what the line says)
    "--lr inf": ([*TRAIN, "--lr", "inf"], "optim.lr must be a finite number > 0, got inf"),
    "optim.lr=inf": ([*TRAIN, "optim.lr=inf"], "optim.lr must be a finite number > 0, got inf"),
    "--lrs nan": ([*SWEEP, "--lrs", "nan"], "sweep.lrs must be a non-empty list of finite numbers > 0"),
    "--lrs inf": ([*SWEEP, "--lrs", "0.1,inf"], "sweep.lrs must be a non-empty list of finite numbers > 0"),
    "momentum nan": ([*TRAIN, "optim.momentum=nan"], "optim.momentum must be a finite number >= 0, got nan"),
    "gamma nan": ([*TRAIN, "optim.gamma=nan"], "optim.gamma must be a finite number > 0, got nan"),
    "negative milestone": ([*TRAIN, "optim.milestones=[-1]"], "optim.milestones must be epochs >= 1, got [-1]"),
    "unknown augmentation": ([*TRAIN, "dataset.augment=[crop,fancy]"],
                             "dataset.augment: unknown augmentation 'fancy' for digits; valid: crop, flip"),
    "folder augmentation on tensors": ([*TRAIN, "dataset.augment=[resized_crop]"], "unknown augmentation"),
    "--widths with --factors": ([*SWEEP, "--factors", "1,2"], "give widths (--widths) or widening factors"),
    "--seeds 0,0": ([*SWEEP, "--seeds", "0,0"], "sweep.seeds (--seeds) lists 0 twice"),
    "--lrs 0.1,0.1": ([*SWEEP, "--lrs", "0.1,0.1"], "sweep.lrs (--lrs) lists 0.1 twice"),
    "--widths 8,8": ([*SWEEP[:-1], "8,16,8"], "sweep.widths (--widths) lists 8 twice"),
    "negative momentum": ([*TRAIN, "optim.momentum=-0.5"], "optim.momentum must be a finite number >= 0, got -0.5"),
    "negative weight decay": ([*TRAIN, "optim.weight_decay=-1"], "optim.weight_decay must be a finite number >= 0"),
    "--factors nan": ([*SWEEP[:-2], "--factors", "nan"], "sweep.factors must be a non-empty list of finite numbers"),
    "int64 overflow": ([*TRAIN[:-1], "99999999999999999999"], "width must be at most 9223372036854775807"),
    "num_classes=3 on digits": ([*TRAIN, "dataset.num_classes=3"], "digits: dataset.num_classes=3 but it has 10"),
    "kernel --device foo": ([*KERNEL, "--device", "foo"], "--device must be auto, cpu, cuda or cuda:N, got 'foo'"),
    "300-character name": ([*TRAIN, "--name", "x" * 300], "--name is 300 bytes long; a folder name has at most 255"),
    "bare sweep-width": (["sweep-width"], "sweep-width needs --dataset (or a preset, --experiment)"),
    "missing data": ([*TRAIN[:2], "cifar10", *TRAIN[3:], "--data-root", "{tmp}/nowhere"], "data root"),
    "missing data, sweep": ([*SWEEP[:2], "cifar10", "--model", "mlp", *SWEEP[3:], "--data-root", "{tmp}/nowhere"],
                            "data root"),
    "no such device": ([*TRAIN, "--device", "cuda:99"], "cuda:99"),
}
# --name must stay one folder directly under --out, for each command that writes runs.
NAMES = ["../../x", "/tmp/elsewhere", ".", "..", "a/b", "a\nb", ""]
for _command in (TRAIN, SWEEP, KERNEL):
    for _name in NAMES:
        REFUSED[f"{_command[0]} --name {_name!r}"] = ([*_command, "--name", _name], "--name must be one folder name")


def assert_refused(output: str, needle: str, out: Path) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    assert needle in lines[0], output
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


@pytest.mark.parametrize("case", REFUSED)
def test_refused_with_one_line_and_nothing_written(tmp_path, case):
    args, needle = REFUSED[case]
    out = tmp_path / "out"
    res = runner.invoke(app, [str(a).format(tmp=tmp_path) for a in args] + ["--out", str(out)])
    assert res.exit_code == 2, res.output
    assert_refused(res.output, needle, out)


def _image_folders(root: Path) -> Path:
    """A real (tiny) image-folder dataset: <root>/train/<class>/*.png and <root>/val/<class>/*.png."""
    from PIL import Image

    for part in ("train", "val"):
        for c, cls in enumerate(("ant", "bee")):
            (root / part / cls).mkdir(parents=True)
            for k in range(3):
                Image.new("RGB", (12, 12), (80 * c, 40 * k, 0)).save(root / part / cls / f"{k}.png")
    return root


FOLDER_HOLDOUTS = {  # what only in-memory datasets can do, asked of an image folder
    "sweep --select-on val": (["sweep-width", "--select-on", "val"], "--select-on val holds out part of the training"),
    "sweep --select-on val --dry-run": (["sweep-width", "--select-on", "val", "--dry-run"], "--select-on val"),
    "train dataset.val_fraction": (["train", "++dataset.val_fraction=0.5"], "dataset.val_fraction and dataset.norm"),
    "train dataset.normalize": (["train", "++dataset.normalize=per-pixel"], "dataset.val_fraction and dataset.norm"),
}


@pytest.mark.parametrize("case", FOLDER_HOLDOUTS)
def test_image_folder_holdout_refused_before_anything_is_written(tmp_path, case):
    """Image folders have no held-out validation split (val/ is their test set): asking for one is refused
    up front, not planned and then failed by every member as it loads its data."""
    (command, *args), needle = FOLDER_HOLDOUTS[case]
    data = _image_folders(tmp_path / "pictures")
    sizes = ["--width", "8"] if command == "train" else ["--base-width", "8", "--widths", "8,16"]
    out = tmp_path / "out"
    res = runner.invoke(app, [command, "--dataset", "imagefolder", "--data-root", str(data), "--model", "mlp",
                              "--image-size", "8", "--epochs", "1", *sizes, *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert_refused(res.output, needle, out)


@pytest.mark.parametrize("value", ["-5", "nan", "soon"])
def test_bad_claim_timeout_is_refused_before_anything_is_written(tmp_path, monkeypatch, value):
    monkeypatch.setenv("WIDEN_CLAIM_TIMEOUT", value)
    for command in (TRAIN, SWEEP):
        res = runner.invoke(app, [*map(str, command), "--out", str(tmp_path / "out")])
        assert res.exit_code == 2, res.output
        assert_refused(res.output, "WIDEN_CLAIM_TIMEOUT must be a number of seconds >= 0", tmp_path / "out")


def test_widths_replace_a_presets_factors(tmp_path):
    """fig3 sets sweep.factors: --widths takes their place (as an option overrides a preset) instead of
    being refused as given together with them."""
    res = runner.invoke(app, ["sweep-width", "--experiment", "fig3_nonlinear_cifar100", "--widths", "8,12",
                              "--base-width", "8", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------- sizes, under a real memory limit

ADDRESS_SPACE = 6 * 2 ** 30  # python + torch map about 3.5 GB; a real attempt at any of these would crash


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(*args):
    return subprocess.run([WIDEN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited, env={**os.environ, "WIDEN_THREADS": "1"})


CPU = ["--device", "cpu"]  # the limit is the host's (CUDA would not even start under it)
HUGE = {
    "width 1e9": [*TRAIN[:-1], 1_000_000_000, *CPU],
    "width 3e7": [*TRAIN[:-1], 30_000_000, *CPU],
    "image size 100000": [*TRAIN, "--image-size", 100_000, *CPU],
    "sweep member 3e7": [*SWEEP[:-1], "8,30000000", "--method", "dense", *CPU],
    "kernel pairs 1e10": [*KERNEL[:-4], "--pairs", 10_000_000_000, *CPU],
}


def test_a_small_run_fits_under_the_limit(tmp_path):
    """The limit leaves room for a real run: what follows is refused for its size, not for the limit."""
    proc = run_limited(*TRAIN, *CPU, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", HUGE)
def test_huge_sizes_refused_before_allocation(tmp_path, case):
    out = tmp_path / "out"
    proc = run_limited(*HUGE[case], "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert_refused(proc.stderr, "does not fit", out)
    assert "needs about" in proc.stderr and "(ulimit -v)" in proc.stderr


def test_dry_run_prints_the_memory_estimate(tmp_path):
    res = runner.invoke(app, ["sweep-width", "--experiment", "smoke_sweep", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "the largest run (width 32, sparse) needs about" in res.output and "available" in res.output
    # A plan too big for this machine is shown (it may be meant for another), with a warning.
    res = runner.invoke(app, [*map(str, HUGE["sweep member 3e7"]), "--dry-run", "--out", str(tmp_path / "big")])
    assert res.exit_code == 0, res.output
    assert "warning: the largest run (width 30000000, dense) needs about" in res.output
    assert "does not fit here" in res.output


@pytest.mark.parametrize("options", [dict(width=24), dict(model="resnet18", width=4),
                                     dict(method="sparse", base_width=8, width=32),
                                     dict(method="linear-bottleneck", base_width=8, width=32)])
def test_estimated_parameters_are_the_built_models(options):
    """The estimate counts the parameters the model really has (weights, biases, norms), times weights,
    gradients, momentum and (sparse) masks; its activations grow with the batch size."""
    from widen_cli import memory

    _, run = load(overrides_from_options(None, {"dataset": "digits", **options}, []))
    job = make_job(run)
    spec = spec_from_config(run.dataset)
    model = build_model(run.model, run.width, spec, inner=job.member.inner, ranks=job.member.ranks)
    copies = 2 + (run.optim.momentum > 0) + (run.method.name == "sparse")
    estimate = memory.run_bytes(run, spec, job.member)
    assert estimate["parameters+state"] == sum(p.numel() for p in model.parameters()) * 4 * copies
    bigger = replace(run, optim=replace(run.optim, batch_size=run.optim.batch_size * 100))
    assert memory.run_bytes(bigger, spec, job.member)["activations"] > estimate["activations"]


# ---------------------------------------------------------------- full and read-only disks

@pytest.fixture
def tmpfs(tmp_path):
    """A real small file system (root only: mount); read_only() remounts it read-only."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "fs"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)]).returncode:
        pytest.skip("mount is not permitted here")

    class Fs:
        path = where

        @staticmethod
        def read_only():
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)

    yield Fs
    subprocess.run(["umount", "--lazy", str(where)], check=True)


def run_cli(*args):
    return subprocess.run([WIDEN, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WIDEN_THREADS": "1"})


def test_disk_full_during_train_is_one_line(tmpfs):
    proc = run_cli(*TRAIN[:-1], 512, "--epochs", 3, "--out", tmpfs.path / "runs")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith(": No space left on device"), proc.stderr
    assert str(tmpfs.path / "runs") in last and ".tmp" not in last
    assert "Traceback" not in proc.stderr


def test_sweep_member_that_fills_the_disk_says_so(tmpfs):
    proc = run_cli(*SWEEP[:-1], "8,512", "--method", "dense", "--epochs", 3, "--out", tmpfs.path)
    assert proc.returncode in (1, 2), proc.stderr
    assert "No space left on device" in proc.stderr and str(tmpfs.path) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["report", "kernel-distance", "train"])
def test_read_only_output_folder_is_one_line(tmp_path, tmpfs, command):
    (tmpfs.path / "out").mkdir()
    tmpfs.read_only()
    if command == "report":
        results = tmp_path / "res"
        assert runner.invoke(app, [*map(str, SWEEP), "--dry-run", "--out", str(results)]).exit_code == 0
        args = ["report", results, "--out", tmpfs.path / "out"]
    else:
        args = [*(KERNEL if command == "kernel-distance" else TRAIN), "--out", tmpfs.path, "--name", "out"]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmpfs.path / "out") in last and "Read-only file system" in last
    assert "Traceback" not in proc.stderr
