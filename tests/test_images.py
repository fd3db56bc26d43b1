"""Image folders with files that cannot be decoded, and the loader's worker count: real PNG and JPEG
files on disk, read through `widen train` and `load_data`."""
from __future__ import annotations

import io
import os
import warnings

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from data_files import _folder_cfg, write_folders
from helpers import CPU
from widen_cli import compose, hardware
from widen_cli.identity import run_name
from widen_cli.cli import app
from widen_cli.data import load_data

runner = CliRunner()


def write_bad_images(root) -> list:
    """A non-image file named like a JPEG in train/, a truncated JPEG (its header intact) in val/."""
    not_an_image = root / "train" / "ant" / "x.jpg"
    not_an_image.write_bytes(b"this is a text file, not a JPEG\n")
    jpeg = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 90)).save(jpeg, "JPEG")
    truncated = root / "val" / "bee" / "cut.jpg"
    truncated.write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    return [not_an_image, truncated]


def train(root, out, *args):
    return runner.invoke(app, ["train", "--dataset", "imagefolder", "--data-root", str(root), "--image-size", "16",
                               "--model", "mlp", "--width", "8", "--epochs", "1", "--batch-size", "4",
                               "--out", str(out), "--name", "run", *args])


@pytest.mark.parametrize("workers", [0, 2])  # read in this process, and in loader worker processes
def test_an_unreadable_image_stops_the_run_naming_it(tmp_path, workers):
    write_folders(tmp_path / "data")
    bad, _ = write_bad_images(tmp_path / "data")
    (tmp_path / "data" / "val" / "bee" / "cut.jpg").unlink()  # one bad file, found in the first epoch
    res = train(tmp_path / "data", tmp_path / "runs", f"dataset.workers={workers}")
    assert res.exit_code == 2, res.output
    error, = [line for line in res.output.splitlines() if line.startswith("error:")]  # one line, and last
    assert res.output.endswith(error + "\n") and str(bad) in error and "--skip-bad-images" in error


def test_a_truncated_jpeg_stops_the_run_naming_it(tmp_path):
    write_folders(tmp_path / "data")
    bad, truncated = write_bad_images(tmp_path / "data")
    bad.unlink()
    res = train(tmp_path / "data", tmp_path / "runs", "dataset.workers=0")
    assert res.exit_code == 2 and str(truncated) in res.output and "truncated" in res.output, res.output


def test_skip_bad_images_trains_and_counts_them(tmp_path):
    written = write_folders(tmp_path / "data")
    bad = write_bad_images(tmp_path / "data")
    res = train(tmp_path / "data", tmp_path / "runs", "--skip-bad-images")
    assert res.exit_code == 0, res.output
    assert "skipped 2 unreadable images" in res.output and all(str(p) in res.output for p in bad)
    row = pd.read_parquet(tmp_path / "runs" / "run" / "summary.parquet").iloc[0]
    assert row.status == "finished" and row.epochs == 1

    # The loaders hold every readable file and none of the others, and say which were left out.
    cfg = _folder_cfg(tmp_path / "data", skip_bad_images=True)
    tr, te, _ = load_data(cfg, batch_size=4, device=CPU, seed=0)
    assert (tr.num_samples, te.num_samples) == (len(written["train"]), len(written["val"]))
    assert sorted(tr.skipped) == sorted(map(str, bad))


def test_skipping_is_not_part_of_the_run_identity():
    names = [run_name(compose.load(["dataset=imagefolder", "dataset.root=x", *extra])[1])
             for extra in ([], ["dataset.skip_bad_images=true"])]
    assert names[0] == names[1]


def test_loader_workers_default_to_the_cpus_this_process_may_use(tmp_path):
    write_folders(tmp_path)
    assert compose.load(["dataset=imagefolder", f"dataset.root={tmp_path}"])[1].dataset.workers is None
    cpus = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, cpus[:1])  # as a job scheduler would pin this process to one core
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PyTorch warns when the workers exceed the usable CPUs
            tr, te, _ = load_data(_folder_cfg(tmp_path, workers=None), batch_size=4, device=CPU, seed=0)
            assert tr.loader.num_workers == te.loader.num_workers == hardware.available_cpus() == 1
            assert sum(len(y) for _, y in tr) == 6
    finally:
        os.sched_setaffinity(0, cpus)
    tr, _, _ = load_data(_folder_cfg(tmp_path, workers=None), batch_size=4, device=CPU, seed=0)
    assert tr.loader.num_workers == hardware.available_cpus() >= 1
    assert load_data(_folder_cfg(tmp_path, workers=0), 4, CPU, 0)[0].loader.num_workers == 0  # as configured
    with pytest.raises(Exception, match="dataset.workers must be an integer >= 0"):
        load_data(_folder_cfg(tmp_path, workers=-1), 4, CPU, 0)


# ---------------------------------------------------------------- links (widen_cli/folders.py)

@pytest.mark.parametrize("case,needle", [
    ("loop", "loops back to"),  # train/ant/loop -> train: followed, it multiplied the samples with exit 0
    ("folder out", "leads out of the dataset root"),
    ("folder around", "points at another folder of the dataset"),  # its images under the wrong class
    ("file out", "leads out of the dataset root"),
])
def test_a_link_that_loops_or_leaves_the_dataset_is_refused_in_one_line(tmp_path, case, needle):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    write_folders(data)
    write_folders(elsewhere)
    link = data / "train" / "ant" / "link"
    target = {"loop": data / "train", "folder out": elsewhere / "train" / "bee",
              "folder around": data / "train" / "bee", "file out": elsewhere / "train" / "bee" / "img0.png"}[case]
    link.symlink_to(target)
    res = train(data, tmp_path / "runs", "dataset.workers=0")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert needle in res.output and str(link) in res.output
    assert not (tmp_path / "runs").exists()  # refused as the data is fingerprinted, before any run folder


def test_links_to_class_folders_and_to_files_inside_the_root_are_read(tmp_path):
    data, full = tmp_path / "data", tmp_path / "full"
    written = write_folders(full)
    (data / "val").mkdir(parents=True)
    (data / "train").symlink_to(full / "train")  # a dataset assembled from linked folders
    for cls in ("ant", "bee"):
        (data / "val" / cls).symlink_to(full / "val" / cls)
    (data / "extra").mkdir()
    (data / "extra" / "more.png").write_bytes((full / "train" / "ant" / "img0.png").read_bytes())
    (full / "train" / "ant" / "more.png").symlink_to(data / "extra" / "more.png")  # a file under the root
    tr, te, _ = load_data(_folder_cfg(data), batch_size=4, device=CPU, seed=0)
    assert (tr.num_samples, te.num_samples) == (len(written["train"]) + 1, len(written["val"]))
