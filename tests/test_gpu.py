"""The CUDA paths, run on a GPU: `make test-gpu` (pytest -m gpu). Skipped where CUDA is absent.

A short train (MLP and ResNet), a batched MLP family, kernel-distance, bf16, channels_last,
torch.compile, and a 2-process NCCL run when two GPUs exist. Where a CPU test checks the same
property, its check is reused with the device as a parameter."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from rich.console import Console

from helpers import check_bf16_against_fp32, check_ddp_matches_single_process, metrics, sweep_args, widen
from widen_cli.compose import load
from widen_cli.models import weight_layers
from widen_cli.train import run_training
from widen_cli.identity import run_dir

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = ["--device", "cuda"]
RESNET = ["--dataset", "synthetic", "--model", "resnet18", "--width", 4, "dataset.train_size=256",
          "dataset.test_size=64", "optim.batch_size=64", "optim.lr=0.05"]


@pytest.mark.parametrize("args,learns", [(["--dataset", "digits", "--model", "mlp", "--width", 32], 0.8),
                                         (RESNET, None)], ids=["mlp", "resnet18"])
def test_train_on_cuda(tmp_path, args, learns):
    res = widen("train", *args, "--epochs", 3, *CUDA, "--out", tmp_path, "--name", "r")
    assert res.exit_code == 0, res.output
    m = metrics(tmp_path / "r")
    row = pd.read_parquet(tmp_path / "r" / "summary.parquet").iloc[0]
    assert row.status == "finished" and m.epoch.tolist() == [1, 2, 3]
    assert m.train_loss.notna().all() and m.train_loss.iloc[-1] < m.train_loss.iloc[0]
    if learns:
        assert row.best_test_acc > learns  # as on the CPU (tests/test_cli.py)


def test_resnet_weights_are_channels_last_on_cuda(tmp_path):
    cfg, run = load(["dataset=synthetic", "model=resnet18", "method=sparse", "width=8", "base_width=4",
                     "optim.epochs=1", "dataset.train_size=64", "dataset.test_size=32", "optim.batch_size=32",
                     "device=cuda", f"out={tmp_path}"])
    result = run_training(cfg, run, Console(quiet=True))
    convs = {name: layer.weight for name, layer in weight_layers(result.model).items() if layer.weight.ndim == 4}
    assert convs and all(w.is_cuda and w.is_contiguous(memory_format=torch.channels_last) for w in convs.values())
    masks = torch.load(run_dir(run) / "masks.pt", weights_only=True)
    for name, w in convs.items():  # the fused re-masking kept the pruned weights at zero in that layout
        assert (w[~masks[name].to(w.device)] == 0).all()


def test_batched_family_on_cuda_equals_each_member_alone(tmp_path):
    res = widen(*sweep_args(widths="8,32", seeds="0,1"), *CUDA, "--out", tmp_path, "--name", "fam")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "fam" / "results.parquet")
    assert len(table) == 6 and set(table.status) == {"finished"}
    for method, size in (("sparse", 4), ("dense", 2)):  # trained as stacked models (see tests/test_sweep.py)
        seconds = [pd.read_parquet(tmp_path / "fam" / r / "metrics.parquet").seconds.tolist()
                   for r in table[table.method == method].run]
        assert len(seconds) == size and all(s == seconds[0] for s in seconds)
    shared = sweep_args()[sweep_args().index("--epochs"):]
    for r in table.itertuples():
        alone = widen("train", "--dataset", "synthetic", "--model", "mlp", "--method", r.method, "--width", r.width,
                      "--base-width", 8, "--seed", r.seed, *shared, *CUDA, "--out", tmp_path / "alone")
        assert alone.exit_code == 0, alone.output
        pd.testing.assert_frame_equal(metrics(tmp_path / "fam" / r.run), metrics(tmp_path / "alone" / r.run),
                                      atol=1e-4, rtol=0)


def test_kernel_distance_on_cuda_matches_cpu(tmp_path):
    # Pairs, masks and weights are drawn on the CPU and the sums run in float64: CUDA gives the CPU's table.
    tables = []
    for device in ("cpu", "cuda"):
        res = widen("kernel-distance", "--widths", "8,32,216", "--pairs", 300, "--inits", 3, "--device", device,
                    "--out", tmp_path, "--name", device)
        assert res.exit_code == 0, res.output
        tables.append(pd.read_parquet(tmp_path / device / "kernel_distance.parquet"))
    distances = [c for c in tables[0].columns if c.startswith("distance_")]
    pd.testing.assert_frame_equal(tables[0][distances], tables[1][distances], rtol=1e-5, atol=1e-10)
    assert tables[0].filter(like="min_").equals(tables[1].filter(like="min_"))


def test_bf16_on_cuda(tmp_path):
    check_bf16_against_fp32(tmp_path, "cuda")


def test_compile_on_cuda(tmp_path):
    # Compiling changes the speed, not the run: the same folder name, the same losses up to the rounding of
    # fused kernels (accuracies on 64 test images could flip one image on that rounding).
    args = ["train", *RESNET, "--epochs", 2, *CUDA]
    folders = []
    for compiled in (False, True):
        out = tmp_path / ("compiled" if compiled else "eager")
        res = widen(*args, *(["--compile"] if compiled else []), "--out", out)
        assert res.exit_code == 0, res.output
        folders.append(next(out.iterdir()))
    assert folders[0].name == folders[1].name
    eager, compiled = (metrics(f) for f in folders)
    columns = ["epoch", "lr", "train_loss", "test_loss"]
    pd.testing.assert_frame_equal(eager[columns], compiled[columns], rtol=2e-2, atol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_process_nccl_matches_single_process(tmp_path):
    check_ddp_matches_single_process(tmp_path, "cuda")
