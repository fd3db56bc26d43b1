import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from widen_cli.cli import app
from widen_cli.results import METRICS_COLUMNS, SUMMARY_COLUMNS

runner = CliRunner()
WIDEN = shutil.which("widen", path=str(Path(sys.executable).parent)) or "widen"


def widen(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_digits_end_to_end(tmp_path):
    res = widen("train", "--dataset", "digits", "--model", "mlp", "--width", 32, "--epochs", 5,
                "--out", tmp_path, "--name", "demo")
    assert res.exit_code == 0, res.output
    run = tmp_path / "demo"
    metrics = pd.read_parquet(run / "metrics.parquet")
    summary = pd.read_parquet(run / "summary.parquet")
    assert list(metrics.columns) == METRICS_COLUMNS
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert metrics.epoch.tolist() == [1, 2, 3, 4, 5]
    for col in ("train_acc", "test_acc"):
        assert metrics[col].between(0, 1).all()
    assert (metrics.seconds > 0).all()
    row = summary.iloc[0]
    assert (row.dataset, row.model, row.method, row.width, row.base_width, row.seed, row.epochs) == \
        ("digits", "mlp", "dense", 32, 32, 0, 5)
    assert row.n_weights == row.n_weights_dense == 64 * 32 + 32 * 10
    assert row.connectivity == 1.0
    assert row.best_test_acc == metrics.test_acc.max() and row.final_test_acc == metrics.test_acc.iloc[-1]
    assert row.best_train_acc == metrics.train_acc.max()
    assert row.best_test_acc > 0.8  # a 1-hidden-layer MLP learns 8x8 digits within 5 epochs
    assert metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["width"] == 32 and config["optim"]["epochs"] == 5 and config["name"] == "demo"


def test_resnet18_trains_on_synthetic_with_override(tmp_path):
    res = widen("train", "--dataset", "synthetic", "--model", "resnet18", "--width", 4, "--epochs", 2,
                "--out", tmp_path, "--name", "r", "dataset.train_size=64", "dataset.test_size=32",
                "optim.lr=0.05", "optim.batch_size=32")
    assert res.exit_code == 0, res.output
    metrics = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert metrics.lr.tolist() == [0.05, 0.05]
    summary = pd.read_parquet(tmp_path / "r" / "summary.parquet").iloc[0]
    # CIFAR-stem ResNet-18 count in closed form: 27 w + 2724 w^2 + 8 w classes (11,210,432 at w=64, 100 classes).
    assert summary.n_weights == 27 * 4 + 2724 * 4**2 + 8 * 4 * 10
    assert summary.model == "resnet18"


def test_console_script_smoke_preset(tmp_path):
    proc = subprocess.run([WIDEN, "train", "--experiment", "smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("digits-mlp-dense-w16-s0-")
    assert pd.read_parquet(runs[0] / "summary.parquet").epochs.item() == 2


def test_run_folder_name_is_stable_and_distinct():
    def folder(*args):
        res = widen("train", "--show-config", *args)
        assert res.exit_code == 0, res.output
        return [l for l in res.output.splitlines() if l.startswith("# run folder:")][0]

    a = folder("--width", 8)
    assert a == folder("--width", 8)
    assert a == folder("--width", 8, "--device", "cpu")  # where it runs is not what it is
    assert "digits-mlp-dense-w8-s0-" in a
    assert a != folder("--width", 8, "optim.lr=0.05")  # the hash covers everything else
    assert a != folder("--width", 8, "--seed", 1)
    assert folder("--name", "mine").endswith("runs/mine")


@pytest.mark.parametrize("dataset,expect", [
    ("cifar10", dict(momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=300, schedule="multistep",
                     milestones=[50, 120, 200], gamma=0.1, lr=0.1)),
    ("svhn", dict(momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=300, schedule="multistep")),
    ("imagenet", dict(momentum=0.9, weight_decay=1e-4, epochs=150, schedule="cosine", lr=0.1)),
    ("mnist", dict(momentum=0.0, weight_decay=0.0, batch_size=100, epochs=300, schedule="constant", lr=0.1)),
])
def test_show_config_paper_recipes(dataset, expect):
    res = widen("train", "--dataset", dataset, "--show-config")
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    for key, value in expect.items():
        assert cfg["optim"][key] == value, key


def test_show_config_applies_options_and_overrides():
    res = widen("train", "--dataset", "cifar100", "--model", "resnet18", "--width", 18, "--epochs", 7,
                "--data-root", "/somewhere", "--subset", 2048, "--show-config", "optim.lr=0.05")
    cfg = yaml.safe_load(res.output)
    assert cfg["dataset"]["name"] == "cifar100" and cfg["dataset"]["root"] == "/somewhere"
    assert cfg["dataset"]["subset"] == 2048 and cfg["model"]["name"] == "resnet18"
    assert cfg["optim"]["epochs"] == 7 and cfg["optim"]["lr"] == 0.05 and cfg["width"] == 18


def run_cli(*args):
    return subprocess.run([WIDEN, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (("--dataset", "imagenet21k"), "unknown dataset 'imagenet21k'; valid: cifar10, cifar100, digits"),
    (("--model", "vgg"), "unknown model 'vgg'; valid: mlp, resnet18"),
    (("--width", 0), "width must be an integer >= 1, got 0"),
    (("width=2.5",), "width must be an integer >= 1, got 2.5"),
    (("optim.lrr=0.1",), "optim.lrr"),
    (("--device", "tpu"), "device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_input_exit_2_one_line(args, needle):
    res = widen("train", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_missing_data_root_names_path_and_download(tmp_path):
    proc = run_cli("train", "--dataset", "cifar10", "--data-root", tmp_path / "nowhere", "--out", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in lines[0] and "--download" in lines[0]


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = widen("train", "--experiment", "smoke", "--out", blocker)
    assert res.exit_code == 2 and "cannot write to output folder" in res.output


@pytest.mark.parametrize("command", ["train", "sweep-width", "kernel-distance", "report"])
def test_help(command):
    res = widen(command, "--help")
    assert res.exit_code == 0 and "Usage" in res.output
