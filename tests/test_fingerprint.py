"""Different data never reuses another dataset's results: the data's fingerprint is part of a run's
identity. Datasets are written in their real on-disk formats (MNIST IDX files, image class folders)
and trained through the real commands."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from data_files import write_folders, write_mnist
from helpers import widen
from widen_cli import fingerprint, results
from widen_cli.schema import DatasetConfig
from widen_cli.compose import load
from widen_cli.identity import run_name

REUSED = "is done (status finished); showing its summary"
MNIST = ["--dataset", "mnist", "--width", 8, "--epochs", 1, "--batch-size", 16]


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "summary.parquet").exists())


def test_another_mnist_trains_and_a_copy_reuses(tmp_path):
    write_mnist(tmp_path / "small", n_train=40)
    write_mnist(tmp_path / "large", n_train=60)
    out = tmp_path / "runs"
    first = widen("train", *MNIST, "--data-root", tmp_path / "small", "--out", out)
    assert first.exit_code == 0 and REUSED not in first.output, first.output
    second = widen("train", *MNIST, "--data-root", tmp_path / "large", "--out", out)
    assert second.exit_code == 0 and REUSED not in second.output, second.output  # trained, not reused
    folders = run_folders(out)
    assert len(folders) == 2
    prints = {yaml.safe_load((f / "config.yaml").read_text())["data_fingerprint"] for f in folders}
    assert len(prints) == 2 and None not in prints
    for f in folders:  # the summary's identity holds it too (what the report pools by)
        identity = pd.read_parquet(f / "summary.parquet").identity.item()
        assert yaml.safe_load((f / "config.yaml").read_text())["data_fingerprint"] in identity

    shutil.copytree(tmp_path / "small", tmp_path / "copy")  # the same files at another path: the same data
    again = widen("train", *MNIST, "--data-root", tmp_path / "copy", "--out", out)
    assert again.exit_code == 0 and REUSED in again.output, again.output
    assert run_folders(out) == folders


def test_a_named_run_on_other_data_is_refused_naming_the_fingerprint(tmp_path):
    write_mnist(tmp_path / "a", n_train=40)
    write_mnist(tmp_path / "b", n_train=60)
    assert widen("train", *MNIST, "--data-root", tmp_path / "a", "--out", tmp_path, "--name", "x").exit_code == 0
    res = widen("train", *MNIST, "--data-root", tmp_path / "b", "--out", tmp_path, "--name", "x")
    assert res.exit_code == 2 and res.output.startswith("error:") and res.output.count("\n") == 1, res.output
    assert "data_fingerprint:" in res.output


def own_folder_datasets(tmp_path: Path) -> Path:
    """A --config-dir with two own image-folder datasets, both `name: imagefolder`, as the README writes them."""
    conf = tmp_path / "my"
    (conf / "dataset").mkdir(parents=True)
    (conf / "optim").mkdir()
    for name, counts in (("ants", {"ant": 3, "bee": 3}), ("bees", {"ant": 2, "bee": 4})):
        write_folders(tmp_path / name, train=counts)
        (conf / "dataset" / f"{name}.yaml").write_text(yaml.safe_dump(dict(
            name="imagefolder", root=str(tmp_path / name), num_classes=2, image_size=16, channels=3, subset=None,
            augment=["flip"], workers=0, download=False)))
        shutil.copy(Path(__file__).parents[1] / "conf" / "optim" / "imagefolder.yaml", conf / "optim" / f"{name}.yaml")
    return conf


def test_two_own_image_folders_train_apart_and_are_reported_apart(tmp_path):
    conf, out = own_folder_datasets(tmp_path), tmp_path / "runs"
    for name in ("ants", "bees"):
        res = widen("train", "--config-dir", conf, "--dataset", name, "--model", "mlp", "--width", 8, "--epochs", 1,
                    "--batch-size", 4, "--out", out)
        assert res.exit_code == 0 and REUSED not in res.output, res.output
    assert len(run_folders(out)) == 2
    res = widen("report", out, "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert "kept apart" in res.output and "data_fingerprint" in res.output
    settings = pd.read_csv(tmp_path / "report" / "table.csv").setting
    assert settings.nunique() == 2 and settings.str.startswith("imagefolder mlp, data_fingerprint=").all()


def test_a_sweep_over_other_data_plans_its_runs_as_not_finished(tmp_path):
    write_mnist(tmp_path / "a", n_train=40)
    write_mnist(tmp_path / "b", n_train=60)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    sweep = ["sweep-width", "--dataset", "mnist", "--base-width", 4, "--widths", "4,8", "--epochs", 1,
             "--batch-size", 16, "--out", tmp_path / "sweeps"]
    for data, finished in (("a", 0), ("b", 0), ("copy", 3)):
        res = widen(*sweep, "--data-root", tmp_path / data)
        assert res.exit_code == 0, res.output
        assert f"{finished} of 3 runs already finished" in res.output, res.output


def test_the_fingerprint_is_computed_once_per_command(tmp_path, monkeypatch):
    write_mnist(tmp_path / "a", n_train=40)
    calls = []
    real = fingerprint.of

    def counting(cfg):
        calls.append(cfg.root)
        return real(cfg)

    monkeypatch.setattr(fingerprint, "of", counting)
    res = widen("sweep-width", "--dataset", "mnist", "--base-width", 4, "--widths", "4,8", "--seeds", "0,1",
                "--epochs", 1, "--batch-size", 16, "--data-root", tmp_path / "a", "--out", tmp_path / "sweeps")
    assert res.exit_code == 0, res.output
    assert "running 6 with" in res.output and calls == [str(tmp_path / "a")]


def _folder_print(root: Path) -> str:
    return fingerprint.of(DatasetConfig(name="imagefolder", root=str(root)))


def test_an_image_folder_is_fingerprinted_by_names_and_sizes_without_reading_images(tmp_path):
    write_folders(tmp_path / "a")
    before = _folder_print(tmp_path / "a")
    assert before.startswith("6+4 images 2 classes ")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert _folder_print(tmp_path / "b") == before  # another path, the same data
    image = tmp_path / "a" / "train" / "ant" / "img0.png"
    image.write_bytes(b"\0" * image.stat().st_size)  # not an image any more: never opened, never decoded
    assert _folder_print(tmp_path / "a") == before
    (tmp_path / "a" / "train" / "ant" / "notes.txt").write_text("not an image: no file the loader reads")
    assert _folder_print(tmp_path / "a") == before
    image.write_bytes(b"\0" * (image.stat().st_size + 1))  # another size
    assert _folder_print(tmp_path / "a") != before
    shutil.move(tmp_path / "b" / "val" / "bee" / "img0.png", tmp_path / "b" / "val" / "bee" / "img9.png")
    assert _folder_print(tmp_path / "b") != before  # another name
    assert _folder_print(tmp_path / "absent") is None  # nothing there: the loader says what is missing


def test_mnist_files_of_the_same_sizes_with_other_content_differ(tmp_path):
    # e.g. Fashion-MNIST written in MNIST's layout: its files have exactly MNIST's sizes
    prints = [fingerprint.of(write_mnist(tmp_path / str(seed), seed=seed).cfg) for seed in (3, 4)]
    assert prints[0] != prints[1] and prints[0].split()[:4] == prints[1].split()[:4]


def test_generated_data_keeps_its_folder_names():
    """digits and synthetic: made from the config alone (already in the identity), so their fingerprint is
    recorded but not hashed; the folder is the one it was before fingerprints."""
    run = load([])[1]
    with_print = fingerprint.attach(run)
    assert with_print.data_fingerprint == "1437+360 samples 10 classes"
    assert run_name(with_print) == run_name(run) == "digits-mlp-dense-w32-s0-45e3b8ce"


def test_the_fingerprint_is_no_setting():
    res = widen("train", "--show-config", "+data_fingerprint=abc")
    assert res.exit_code == 2 and res.output.startswith("error:") and res.output.count("\n") == 1, res.output
    assert "data_fingerprint" in res.output


@pytest.mark.parametrize("present", [True, False])
def test_show_config_names_the_folder_training_uses(tmp_path, present):
    if present:
        write_mnist(tmp_path / "data", n_train=40)
    shown = widen("train", *MNIST, "--data-root", tmp_path / "data", "--out", tmp_path, "--show-config")
    assert shown.exit_code == 0, shown.output
    assert (yaml.safe_load(shown.output)["data_fingerprint"] is not None) == present
    if present:
        folder = shown.output.strip().splitlines()[-1].removeprefix("# run folder: ")
        assert widen("train", *MNIST, "--data-root", tmp_path / "data", "--out", tmp_path).exit_code == 0
        assert (Path(folder) / "summary.parquet").exists()


def test_a_run_from_before_fingerprints_is_not_pooled_with_one_on_known_data(tmp_path):
    write_mnist(tmp_path / "data", n_train=40)
    out = tmp_path / "runs"
    assert widen("train", *MNIST, "--data-root", tmp_path / "data", "--out", out).exit_code == 0
    new, = run_folders(out)
    old = out / "from-an-older-widen"  # the same run as an older widen wrote it: no fingerprint
    shutil.copytree(new, old)
    summary = pd.read_parquet(old / "summary.parquet")
    identity = json.loads(summary.identity.item())
    del identity["data_fingerprint"]
    summary["identity"] = json.dumps(identity, sort_keys=True)
    results.write_table(summary, old / "summary.parquet", "summary")
    res = widen("report", out, "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    settings = sorted(pd.read_csv(tmp_path / "report" / "table.csv").setting)
    assert len(settings) == 2 and settings[1] == "mnist mlp, data_fingerprint=unrecorded", settings
