"""The plan's cost estimate counts what the models compute, on the images actually trained on."""
import math

import pytest
import torch
from data_files import WRITERS, write_folders, write_mnist
from torch.utils.flop_counter import FlopCounterMode
from rich.console import Console
from typer.testing import CliRunner

from widen_cli import cost, display, plan
from widen_cli.budget import plan_member
from widen_cli.cli import app
from widen_cli.schema import DatasetConfig, MethodConfig, ModelConfig
from widen_cli.compose import compose_config
from widen_cli.models import InputSpec, build_model

CIFAR = InputSpec(3, 32, 100)


def test_mlp_macs_are_its_weights():
    member = plan_member(ModelConfig(name="mlp"), InputSpec(1, 28, 10), 8, 8, MethodConfig(name="dense"))
    assert cost.forward_macs(ModelConfig(name="mlp"), InputSpec(1, 28, 10), member) == 784 * 8 + 8 * 10


def test_resnet_macs_follow_the_spatial_sizes():
    # CIFAR stem, width w: every 3x3 conv of stage s sees (32 / 2^s)^2 positions; by hand for w = 1:
    # conv1 27*1024; stage 1 four 3x3 convs 1->1 at 32x32; stage 2: 1->2 and three 2->2 at 16x16 plus
    # a 1x1 downsample 1->2; and so on; the classifier 8 * 100.
    cfg = ModelConfig(name="resnet18")
    member = plan_member(cfg, CIFAR, 1, 1, MethodConfig(name="dense"))
    by_hand = 27 * 1024 + 4 * 9 * 1 * 1024
    for s, (c_in, c) in enumerate([(1, 2), (2, 4), (4, 8)], start=1):
        positions = (32 // 2 ** s) ** 2
        by_hand += (9 * c_in * c + 3 * 9 * c * c + c_in * c) * positions
    by_hand += 8 * 100
    assert cost.forward_macs(cfg, CIFAR, member) == by_hand


def test_sparse_members_cost_their_dense_width_and_flops_scale():
    cfg = ModelConfig(name="resnet18")
    sparse = plan_member(cfg, CIFAR, 8, 16, MethodConfig(name="sparse"))
    dense = plan_member(cfg, CIFAR, 8, 16, MethodConfig(name="dense"))
    assert cost.forward_macs(cfg, CIFAR, sparse) == cost.forward_macs(cfg, CIFAR, dense)
    macs = cost.forward_macs(cfg, CIFAR, dense)
    assert math.isclose(cost.training_flops(macs, 50_000, 300), 6 * macs * 50_000 * 300)


@pytest.mark.parametrize("ds,expected", [
    (DatasetConfig(name="cifar100"), 50_000), (DatasetConfig(name="mnist", subset=2048), 2048),
    (DatasetConfig(name="synthetic", train_size=300), 300), (DatasetConfig(name="imagefolder"), None)])
def test_train_images(ds, expected):
    assert cost.train_images(ds).count == expected


def test_flops_text():
    assert cost.flops_text(2.5e15) == "2.5 PFLOP" and cost.flops_text(3e9) == "3 GFLOP"
    # one unit at every size: engineering notation with an SI prefix, never 1,000 PFLOP nor 1.99e+08 FLOP
    assert cost.flops_text(999.6e15) == "1 EFLOP"
    assert cost.flops_text(1.99e8) == "199 MFLOP" and cost.flops_text(16.9e12) == "16.9 TFLOP"
    assert cost.flops_text(45_600) == "45.6 kFLOP" and cost.flops_text(12) == "12 FLOP"


def test_macs_are_half_of_what_torch_counts_by_hand():
    # The count in forward_macs against torch's FlopCounterMode run here on a real (CPU) forward pass.
    cfg, spec = ModelConfig(name="resnet18"), InputSpec(3, 16, 10)
    member = plan_member(cfg, spec, 4, 8, MethodConfig(name="linear-bottleneck"))
    model = build_model(cfg, member.width, spec, inner=member.inner, ranks=member.ranks)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    assert 2 * cost.forward_macs(cfg, spec, member) == counter.get_total_flops() > 0


def _sweep(overrides, **settings):
    cfg = compose_config(["model=mlp", "method=sparse", "optim.epochs=2", *overrides])
    return plan.plan_sweep(plan.family_run(cfg, 8), plan.settings(cfg, widths=[8, 16], **settings))


def test_estimate_counts_the_images_on_disk(tmp_path):
    written = write_mnist(tmp_path / "data", n_train=4000)  # real IDX files: 4,000 training images, not 60,000
    data = ["dataset=mnist", f"dataset.root={written.cfg.root}"]
    c = _sweep(data).cost()
    assert (c["images"], c["documented"]) == (4000, False)
    family = _sweep(data)
    macs = {j.member.width: cost.forward_macs(family.run.model, InputSpec(1, 28, 10), j.member) for j in family.jobs()}
    assert c["flops"] == sum(6 * macs[j.member.width] * 4000 * 2 for j in family.jobs())
    # a subset, then the validation holdout of what is left, as data.load_data draws them
    held = _sweep([*data, "dataset.subset=1000", "dataset.val_fraction=0.1"]).cost()
    assert (held["images"], held["documented"]) == (900, False)
    # no files yet (a dry run before --download): the documented size, and the line says so
    absent = _sweep(["dataset=mnist", f"dataset.root={tmp_path / 'nothing'}"]).cost()
    assert (absent["images"], absent["documented"]) == (60_000, True)
    console = Console(record=True, width=400)
    display.sweep_cost(console, absent)
    assert "(60,000 training images an epoch, from mnist's documented size: its files are not there to count " \
           "yet)" in console.export_text()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_in_memory_format_is_counted_from_its_files(tmp_path, monkeypatch, name):
    written = WRITERS[name](tmp_path, monkeypatch)  # the real on-disk formats: IDX, pickled batches, .mat
    assert cost.train_images(written.cfg) == (len(written.train_labels), False)


def test_image_folders_count_their_training_images(tmp_path):
    files = write_folders(tmp_path / "folders", train={"ant": 7, "bee": 5})
    res = CliRunner().invoke(app, ["sweep-width", "--dataset", "imagefolder", "--data-root", tmp_path / "folders",
                                   "--model", "mlp", "--method", "sparse", "--base-width", "8", "--widths", "8,16", "--epochs", "1",
                                   "--dry-run", "--out", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    line = " ".join(res.output.split())
    assert f"({len(files['train']):,} training images an epoch)" in line and "FLOP of training compute" in line


def test_one_count_per_distinct_member(monkeypatch):
    calls = []
    real = cost.forward_macs

    def counting(cfg, spec, member):
        calls.append(member.width)
        return real(cfg, spec, member)

    monkeypatch.setattr(cost, "forward_macs", counting)
    family = _sweep([], seeds=[0, 1, 2], lrs=[0.01, 0.1])  # 3 members (sparse 8 and 16, dense 16), 18 runs
    c = family.cost()
    # the dense and sparse width-16 members run the same dense-equivalent model: one count for both
    assert c["runs"] == 18 and sorted(calls) == [8, 16]
