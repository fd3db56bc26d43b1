import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import widen
from widen_cli.results import METRICS_COLUMNS, SUMMARY_COLUMNS

WIDEN = shutil.which("widen", path=str(Path(sys.executable).parent)) or "widen"


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
    (("--method", "lottery"), "unknown method 'lottery'; valid: dense, linear-bottleneck, nonlinear-bottleneck, pruned, pruned-rewind, pruned-structured, rigl, set, sparse"),
    (("--width", 0), "width must be an integer >= 1, got 0"),
    (("--width", -3), "width must be an integer >= 1, got -3"),
    (("width=2.5",), "width must be an integer >= 1, got 2.5"),
    (("--width", 8, "--base-width", 16), "width 8 is below the base width 16; family members have width >= 16"),
    (("--dataset", "cifar100", "--model", "resnet18", "--method", "nonlinear-bottleneck", "--base-width", 18,
      "--width", 300), "valid widths for base width 18 with nonlinear-bottleneck: 18 to 131"),
    (("--method", "sparse", "--base-width", 8, "--width", 16, "method.last_layer_connectivity=0"),
     "method.last_layer_connectivity must be in (0, 1], got 0"),
    (("--method", "sparse", "--base-width", 8, "--width", 16, "method.last_layer_connectivity=1.5"),
     "method.last_layer_connectivity must be in (0, 1], got 1.5"),
    (("optim.lrr=0.1",), "unknown config key 'optim.lrr'; valid keys under optim: name, lr, momentum"),
    (("foo=1",), "unknown config key 'foo'; valid keys at the top level: dataset, model"),
    (("+foo=1",), "unknown config key 'foo'; valid keys at the top level: dataset, model"),
    (("+model.depth=50",), "unknown config key 'model.depth'; valid keys under model: name, hidden_layers"),
    (("--device", "tpu"), "device must be auto, cpu, cuda or cuda:N"),
    (("--dataset", "imagefolder"), "dataset imagefolder needs --data-root"),
])
def test_bad_input_exit_2_one_line(args, needle):
    res = widen("train", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def _png_folders(root: Path, train: list[str], val: list[str]) -> None:
    from PIL import Image

    for part, classes in (("train", train), ("val", val)):
        for c in classes:
            (root / part / c).mkdir(parents=True)
            Image.new("RGB", (12, 12), (200, 30, 30)).save(root / part / c / "a.png")


def _junk_mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(b"not an IDX file")


def _no_images(root: Path) -> None:
    for part in ("train", "val"):
        (root / part / "cat").mkdir(parents=True)
        (root / part / "cat" / "notes.txt").write_text("no images here")


# Bad data and output folders, through the whole command (exit 2, one line, what is wrong and where).
# Each case: (dataset options, how the data root is prepared, what the message must say). {root} is the root.
DATA_CASES = {
    "root missing": (["--dataset", "cifar10"], None, "data root {root} does not exist; expected cifar10 at "
                     "{root}/cifar-10-batches-py (pass --download"),
    "root empty": (["--dataset", "cifar10"], lambda r: r.mkdir(), "could not read cifar10 from "
                   "{root}/cifar-10-batches-py"),
    "wrong format": (["--dataset", "mnist"], _junk_mnist, "could not read mnist from {root}/MNIST/raw (the files "
                     "are not in its format)"),
    "folder missing": (["--dataset", "imagefolder"], None, "imagefolder: data root {root} does not exist; expected "
                       "<root>/train/<class>/*"),
    "folder without train/": (["--dataset", "imagefolder"], lambda r: (r / "val").mkdir(parents=True),
                              "imagefolder: data root {root} has no train/ folder"),
    "folder without images": (["--dataset", "imagefolder"], _no_images, "imagefolder: could not read images under "
                              "{root}: Found no valid file for the classes cat"),
    "class lists differ": (["--dataset", "imagefolder"], lambda r: _png_folders(r, ["ant", "bee"], ["ant", "wasp"]),
                           "imagefolder: class folders differ between {root}/train and {root}/val (only in train: "
                           "['bee'], only in val: ['wasp'])"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_exit_2_one_line(tmp_path, case):
    options, prepare, needle = DATA_CASES[case]
    root = tmp_path / "data"
    if prepare is not None:
        prepare(root)
    res = widen("train", *options, "--data-root", root, "--out", tmp_path / "runs", "--epochs", 1)
    assert res.exit_code == 2, res.output
    assert needle.format(root=root) in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize("command", ["train", "sweep-width"])
def test_option_of_the_wrong_type_is_one_line_from_the_console_script(monkeypatch, capsys, command):
    from widen_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["widen", command, "--width" if command == "train" else "--jobs", "abc"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "error: Invalid value for" in err and "valid integer" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_missing_data_root_names_path_and_download(tmp_path):
    proc = run_cli("train", "--dataset", "cifar10", "--data-root", tmp_path / "nowhere", "--out", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in lines[0] and "--download" in lines[0]


@pytest.mark.parametrize("command", [("train", "--experiment", "smoke"),
                                     ("sweep-width", "--experiment", "smoke_sweep", "--dry-run")])
def test_unwritable_output_folder(tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = widen(*command, "--out", blocker)
    assert res.exit_code == 2 and f"cannot write to output folder {blocker}/" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("command", ["train", "sweep-width", "kernel-distance", "report"])
def test_help(command):
    res = widen(command, "--help")
    assert res.exit_code == 0 and "Usage" in res.output
