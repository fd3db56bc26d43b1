"""The plan's cost estimate counts what the models compute."""
import math

import pytest

from widen_cli import cost
from widen_cli.budget import plan_member
from widen_cli.config import DatasetConfig, MethodConfig, ModelConfig
from widen_cli.models import InputSpec

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
    assert cost.train_images(ds) == expected


def test_flops_text():
    assert cost.flops_text(2.5e15) == "2.5 PFLOP" and cost.flops_text(3e9) == "3 GFLOP"
    assert cost.flops_text(999.6e15) == "1,000 PFLOP"
