"""The fast paths give what the plain ones give: batched MLP families, fused masks, device-side totals;
and the speed options (--precision, --compile, threads) reach the run."""
import os

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from rich.console import Console
from typer.testing import CliRunner

from helpers import check_bf16_against_fp32
from widen_cli import hardware, sparse_ops, stacked_training
from widen_cli.budget import plan_member
from widen_cli.cli import app
from widen_cli.schema import MethodConfig, ModelConfig
from widen_cli.compose import load
from widen_cli.errors import UserError
from widen_cli.jobs import make_job
from widen_cli.models import InputSpec, build_model, weight_layers
from widen_cli.sparsity import draw_masks, sparsify
from widen_cli.train import Totals, make_optimizer, run_training, train_epoch
from widen_cli.identity import run_name

QUIET = Console(quiet=True)
runner = CliRunner()

# Tiny synthetic problem; two hidden layers so gradients flow through a stacked hidden layer too;
# crop and flip so each seed's augmentation stream matters; momentum, weight decay and an lr step.
TINY = ["dataset=synthetic", "model=mlp", "dataset.channels=1", "dataset.image_size=6", "dataset.train_size=96",
        "dataset.test_size=40", "dataset.augment=[crop,flip]", "optim.batch_size=32", "optim.epochs=3",
        "optim.milestones=[2]", "model.hidden_layers=2"]


def train_both(tmp_path, overrides: list[str], members: list[tuple[int, int]]):
    """Train (width, seed) members as one batch and each alone; return pairs of RunResults and runs."""
    batch = [make_job(load([*overrides, f"width={w}", f"seed={s}", f"out={tmp_path / 'batched'}"])[1])
             for w, s in members]
    batched = stacked_training.train_family(batch, QUIET)
    alone = [run_training(make_job(load([*overrides, f"width={w}", f"seed={s}", f"out={tmp_path / 'alone'}"])[1]),
                          QUIET) for w, s in members]
    return [(job.run, a, b) for job, a, b in zip(batch, alone, batched)]


def assert_same_run(run, alone, batched, tmp_path):
    metrics = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(alone.metrics[metrics], batched.metrics[metrics], atol=1e-5, rtol=0)
    state_a, state_b = alone.model.state_dict(), batched.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key].cpu(), state_a[key].cpu(), atol=1e-5, rtol=1e-4)
    # Same folder name and the same files, read back the same way.
    a_dir, b_dir = tmp_path / "alone" / run_name(run), tmp_path / "batched" / run_name(run)
    assert sorted(p.name for p in a_dir.iterdir()) == sorted(p.name for p in b_dir.iterdir())
    sa, sb = pd.read_parquet(a_dir / "summary.parquet"), pd.read_parquet(b_dir / "summary.parquet")
    assert list(sa.columns) == list(sb.columns)
    produced = ["wall_seconds", "started_at", "ended_at"]  # provenance otherwise the same (device, data sizes)
    pd.testing.assert_frame_equal(sa.drop(columns=produced), sb.drop(columns=produced), atol=1e-5, rtol=0)
    ca, cb = (yaml.safe_load((d / "config.yaml").read_text()) for d in (a_dir, b_dir))
    assert {**ca, "out": None, "provenance": None} == {**cb, "out": None, "provenance": None}
    return a_dir, b_dir


@pytest.mark.parametrize("options", [["model.bias=true"], ["model.bias=false", "model.parameterization=ntk"]])
def test_sparse_family_batched_equals_each_alone(tmp_path, options):
    overrides = [*TINY, "method=sparse", "base_width=4", *options]
    members = [(w, s) for w in (4, 8, 16) for s in (0, 1)]
    for run, alone, batched in train_both(tmp_path, overrides, members):
        a_dir, b_dir = assert_same_run(run, alone, batched, tmp_path)
        masks = torch.load(b_dir / "masks.pt", weights_only=True)
        saved_alone = torch.load(a_dir / "masks.pt", weights_only=True)
        assert masks.keys() == saved_alone.keys()
        assert all(torch.equal(masks[k], saved_alone[k]) for k in masks)
        member = plan_member(run.model, InputSpec(1, 6, 10), 4, run.width, run.method)
        drawn = draw_masks(member, run.seed)
        for name, layer in weight_layers(batched.model).items():
            assert torch.equal(masks[name], drawn[name])
            assert int(masks[name].sum()) == member.kept[name]
            # Masked weights are exactly zero after training, in both paths.
            assert (layer.weight[~masks[name]] == 0).all()
            assert (weight_layers(alone.model)[name].weight[~masks[name]] == 0).all()


@pytest.mark.parametrize("path", ["csr", "embedding_bag"])
def test_sparse_family_batched_on_the_public_paths_equals_each_alone(tmp_path, monkeypatch, path):
    """The fallbacks of torch's private ops (sparse_ops.PATH), forced here on any torch, train the same."""
    monkeypatch.setattr(sparse_ops, "PATH", path)
    for run, alone, batched in train_both(tmp_path, [*TINY, "method=sparse", "base_width=4"], [(4, 0), (16, 1)]):
        assert_same_run(run, alone, batched, tmp_path)


def test_dense_family_of_seeds_equals_each_alone(tmp_path):
    overrides = [*TINY, "method=dense", "model.parameterization=ntk"]
    pairs = train_both(tmp_path, overrides, [(8, 2), (8, 0), (8, 1)])
    for run, alone, batched in pairs:
        assert_same_run(run, alone, batched, tmp_path)
    first_losses = {run.seed: batched.metrics.train_loss.iloc[0] for run, _, batched in pairs}
    assert len(set(first_losses.values())) == 3  # each seed its own init and batch order


def test_which_runs_are_batched():
    def key(*overrides):
        return stacked_training.batch_key(load(["model=mlp", *overrides])[1])

    assert key("method=sparse", "width=8", "base_width=4") == key("method=sparse", "width=16", "base_width=4", "seed=1")
    assert key("method=dense", "width=8") != key("method=dense", "width=16")  # dense: one width per batch
    assert key("method=dense", "width=8") != key("method=sparse", "width=8")
    assert key("method=sparse", "width=8", "optim.lr=0.05") != key("method=sparse", "width=8")
    assert key("method=sparse", "width=8", "precision=bf16") is None
    assert key("model=resnet18") is None
    assert key("method=linear-bottleneck", "width=8") is None
    items = ["a1", "b1", "a2", "x", "b2"]
    assert stacked_training.group(items, lambda s: None if s == "x" else s[0]) == [["a1", "a2"], ["b1", "b2"], ["x"]]


# ---------------------------------------------------------------- masks and totals

def test_fused_masks_equal_per_layer_gradient_masking():
    """Re-masking the weights after each step (one fused call) trains exactly like the common recipe of
    masking every layer's gradient in Python before the step; masked weights stay exactly zero, also
    with a channels_last model."""
    spec = InputSpec(3, 8, 10)
    cfg = ModelConfig(name="resnet18")
    member = plan_member(cfg, spec, 2, 4, MethodConfig(name="sparse"))
    x, y = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
    optim = load(["dataset=synthetic"])[1].optim

    def trained(fused: bool, channels_last: bool = False):
        torch.manual_seed(0)
        model = build_model(cfg, 4, spec)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        masks = sparsify(model, member, seed=3)
        opt, _ = make_optimizer(model, optim)
        layers = weight_layers(model)
        if fused:
            train_epoch(model, [(x, y)] * 3, opt, masks)
        else:
            for _ in range(3):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                for name, mask in zip(masks.names, masks.masks):
                    layers[name].weight.grad.mul_(mask)
                opt.step()
        return model, masks

    reference, _ = trained(fused=False)
    # Trained in channels_last only where runs use it: on AVX2-only CPUs oneDNN's channels_last backward
    # gives wrong gradients (seen on AMD EPYC, torch 2.15), which is why hardware.memory_format avoids it.
    for channels_last in (False, True) if hardware.channels_last_pays(torch.device("cpu")) else (False,):
        model, masks = trained(fused=True, channels_last=channels_last)
        for name, mask in masks.state().items():
            w = weight_layers(model)[name].weight
            if channels_last and w.ndim == 4:
                assert w.is_contiguous(memory_format=torch.channels_last)
                assert masks.masks[masks.names.index(name)].stride() == w.stride()
            assert (w[~mask] == 0).all()
            torch.testing.assert_close(w, weight_layers(reference)[name].weight, atol=1e-5, rtol=1e-4)
    # Masks take the weights' layout whatever the CPU.
    model = build_model(cfg, 4, spec).to(memory_format=torch.channels_last)
    masks = sparsify(model, member, seed=3)
    for name, mask in zip(masks.names, masks.masks):
        w = weight_layers(model)[name].weight
        assert mask.stride() == w.stride() and (w[~mask.bool()] == 0).all()


def test_totals_accumulate_on_device_without_per_step_sync():
    totals = Totals()
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    for y in (torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])):
        totals.add(logits, y, F.cross_entropy(logits, y))
    assert isinstance(totals.loss, torch.Tensor) and isinstance(totals.correct, torch.Tensor)
    expected = F.cross_entropy(logits.repeat(2, 1), torch.tensor([0, 1, 1, 1, 1, 0]), reduction="sum") / 6
    assert totals.mean_loss == pytest.approx(expected.item(), rel=1e-6)
    assert totals.acc == pytest.approx(4 / 6)


# ---------------------------------------------------------------- options

def show(*args):
    res = runner.invoke(app, ["train", "--show-config", *map(str, args)])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load(res.output.split("# run folder:")[0])
    return config, res.output.split("# run folder:")[1].strip()


def test_precision_and_compile_options(tmp_path):
    config, folder = show("--width", 8)
    assert (config["precision"], config["compile"]) == ("fp32", False)
    compiled, compiled_folder = show("--width", 8, "--compile")
    assert compiled["compile"] is True and compiled_folder == folder  # speed only: same run
    bf16, bf16_folder = show("--width", 8, "--precision", "bf16")
    assert bf16["precision"] == "bf16" and bf16_folder != folder  # other numbers: another run
    assert load(["precision=bf16", "compile=true"])[1].compile is True
    res = runner.invoke(app, ["train", "--precision", "fp16", "--show-config"])
    assert res.exit_code == 2 and "precision must be one of fp32, bf16, got 'fp16'" in res.output
    res = runner.invoke(app, ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", "4", "--widths",
                              "4", "--precision", "bf16", "--compile", "--dry-run", "--name", "x", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    sweep = yaml.safe_load((tmp_path / "x" / "sweep.yaml").read_text())
    assert (sweep["precision"], sweep["compile"]) == ("bf16", True)


def test_bf16_trains_on_cpu_with_other_numbers(tmp_path):
    check_bf16_against_fp32(tmp_path, "cpu")  # helpers.py; tests/test_gpu.py: on CUDA


def test_accelerate_wraps_without_copying_parameters():
    model = build_model(ModelConfig(name="mlp"), 8, InputSpec(1, 4, 3))
    cpu = torch.device("cpu")
    assert hardware.accelerate(model, cpu) is model
    net = hardware.accelerate(model, cpu, "bf16", compile=True)  # compiles lazily, on the first call
    assert {id(p) for p in net.parameters()} == {id(p) for p in model.parameters()}
    assert hardware.memory_format(model, cpu) == torch.contiguous_format  # no convolutions


@pytest.mark.parametrize("capability,expected", [("AVX512", torch.channels_last), ("AVX2", torch.contiguous_format)])
def test_channels_last_only_where_it_pays(monkeypatch, capability, expected):
    # AVX2-only CPUs take minutes for one ResNet step in channels_last (oneDNN's strided 1x1 backward).
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    resnet = build_model(ModelConfig(name="resnet18"), 4, InputSpec(3, 8, 3))
    assert hardware.memory_format(resnet, torch.device("cpu")) == expected


def test_cpu_threads(monkeypatch):
    monkeypatch.delenv("WIDEN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= hardware.cpu_threads() <= os.cpu_count()
    assert hardware.cpu_threads(resumed=5) == 5  # a resumed run keeps the count it started with
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hardware.cpu_threads() == 3
    assert hardware.cpu_threads(resumed=5) == 3  # ... unless the user says otherwise
    monkeypatch.setenv("WIDEN_THREADS", "1")
    assert hardware.cpu_threads() == 1
    monkeypatch.setenv("WIDEN_THREADS", "many")
    with pytest.raises(UserError, match="WIDEN_THREADS must be a positive integer"):
        hardware.cpu_threads()
