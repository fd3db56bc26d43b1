import pytest
import torch

from widen_cli.schema import ModelConfig
from widen_cli.models import InputSpec, build_model, count_weights, weight_layers

RESNET = ModelConfig(name="resnet18")


def meta_count(cfg, width, spec):
    with torch.device("meta"):  # no memory, no init cost: ImageNet widths up to 256 count in milliseconds
        return count_weights(build_model(cfg, width, spec))


@pytest.mark.parametrize("width,expected", [
    (8, 180_952), (12, 402_180), (18, 897_462), (40, 4_391_480), (64, 11_210_432),
])
def test_resnet18_cifar100_weight_counts(width, expected):
    assert meta_count(RESNET, width, InputSpec(3, 32, 100)) == expected


@pytest.mark.parametrize("width,millions", [(64, 11.68), (90, 22.80), (128, 45.67), (181, 90.72), (256, 180.61)])
def test_resnet18_imagenet_weight_counts_table1(width, millions):
    assert round(meta_count(RESNET, width, InputSpec(3, 224, 1000)) / 1e6, 2) == millions


@pytest.mark.parametrize("width,expected", [(5, 3970), (8, 6352)])
def test_mlp_weight_counts(width, expected):
    for bias in (True, False):  # biases are never counted
        cfg = ModelConfig(name="mlp", bias=bias)
        assert count_weights(build_model(cfg, width, InputSpec(1, 28, 10))) == expected


def test_count_excludes_batchnorm_and_biases():
    model = build_model(RESNET, 8, InputSpec(3, 32, 10))
    all_params = sum(p.numel() for p in model.parameters())
    assert count_weights(model) < all_params
    assert count_weights(model) == sum(m.weight.numel() for m in weight_layers(model).values())
    assert all(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in weight_layers(model).values())


def test_resnet_stem_follows_image_size():
    small = build_model(RESNET, 8, InputSpec(3, 64, 10))
    large = build_model(RESNET, 8, InputSpec(3, 96, 10))
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    forced = build_model(ModelConfig(name="resnet18", stem="imagenet"), 8, InputSpec(3, 32, 10))
    assert forced.conv1.kernel_size == (7, 7)
    for model, size in ((small, 64), (large, 96), (forced, 32)):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_resnet_stage_widths_are_1_2_4_8():
    model = build_model(RESNET, 12, InputSpec(3, 32, 10))
    assert [model.conv1.out_channels] + [getattr(model, f"layer{i}")[1].conv2.out_channels for i in range(1, 5)] \
        == [12, 12, 24, 48, 96]


def test_mlp_options():
    spec = InputSpec(1, 8, 10)
    deep = build_model(ModelConfig(name="mlp", hidden_layers=3), 16, spec)
    assert [m.out_features for m in weight_layers(deep).values()] == [16, 16, 16, 10]
    linear = build_model(ModelConfig(name="mlp", activation="linear", bias=False), 16, spec)
    relu = build_model(ModelConfig(name="mlp", activation="relu", bias=False), 16, spec)
    assert all(m.bias is None for m in weight_layers(linear).values())
    x = torch.randn(4, 1, 8, 8)
    # A linear MLP is a linear map, f(-x) = -f(x); a ReLU MLP is not.
    assert torch.allclose(linear(-x), -linear(x), atol=1e-5)
    assert not torch.allclose(relu(-x), -relu(x), atol=1e-3)


def test_ntk_parameterisation_scales_by_fan_in():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", parameterization="ntk", bias=False), 4096, InputSpec(1, 28, 10))
    first = next(iter(weight_layers(model).values()))
    assert abs(first.weight.std().item() - 1.0) < 0.01  # N(0, 1) weights
    x = torch.randn(512, 1, 28, 28)
    pre = first(x.flatten(1))
    # With the 1/sqrt(fan_in) factor, pre-activations have unit variance for unit-variance inputs.
    assert abs(pre.var().item() - 1.0) < 0.1


# ---------------------------------------------------------------- ResNet initialisation (model.init)

def _fans(w: torch.Tensor) -> tuple[int, int]:
    receptive = w[0, 0].numel()
    return w.shape[1] * receptive, w.shape[0] * receptive


def expected_std(init: str, w: torch.Tensor, conv: bool = True) -> float:
    """The weight std each scheme should give, from the layer's fan-in and fan-out."""
    fan_in, fan_out = _fans(w)
    if init == "lecun":
        return fan_in ** -0.5  # N(0, 1/fan_in)
    if init == "torchvision" and conv:
        return (2 / fan_out) ** 0.5  # Kaiming normal over fan_out, ReLU gain
    return (3 * fan_in) ** -0.5  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))


INITS = ("lecun", "pytorch", "torchvision")


@pytest.mark.parametrize("init", INITS)
def test_resnet_init_gives_the_scheme_std(init):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18", init=init), 32, InputSpec(3, 32, 100))
    # fan_out = fan_in here (64 -> 64 channels, 3x3): lecun 1/sqrt(576), torchvision sqrt(2/576), pytorch 1/sqrt(1728)
    for layer, conv in ((model.layer2[0].conv2, True), (model.layer3[0].conv1, True), (model.fc, False)):
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 0.05 * expected_std(init, w, conv)
        assert w.std().item() == pytest.approx(expected_std(init, w, conv), rel=0.03), (init, layer)
    bound = 1 / _fans(model.fc.weight)[0] ** 0.5
    if init == "lecun":
        assert (model.fc.bias == 0).all()
    else:  # PyTorch's uniform default for the classifier (torchvision leaves it too)
        assert model.fc.weight.abs().max() <= bound and model.fc.bias.abs().max() <= bound
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert (bn.weight == 1).all() and (bn.bias == 0).all()


@pytest.mark.parametrize("init", INITS)
def test_sparse_rescale_init_works_with_every_init(init):
    from widen_cli.budget import plan_member
    from widen_cli.schema import MethodConfig
    from widen_cli.sparsity import sparsify

    cfg, spec = ModelConfig(name="resnet18", init=init), InputSpec(3, 32, 100)
    member = plan_member(cfg, spec, 16, 32, MethodConfig(name="sparse"))
    torch.manual_seed(0)
    model = build_model(cfg, 32, spec)
    sparsify(model, member, seed=0, rescale_init=True)
    layer = model.layer4[1].conv2  # the largest layer: sparsified first by the staggered distribution
    w = layer.weight.detach()
    kept = w[w != 0]
    fraction = kept.numel() / w.numel()
    assert fraction < 0.5
    assert kept.std().item() == pytest.approx(expected_std(init, w) / fraction ** 0.5, rel=0.05)


def test_linear_bottleneck_factors_follow_the_init():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18", init="lecun"), 32, InputSpec(3, 32, 10),
                        ranks={"layer3.0.conv2": 128})
    first, second = model.layer3[0].conv2
    for w in (first.weight.detach(), second.weight.detach()):
        assert w.std().item() == pytest.approx(expected_std("lecun", w), rel=0.05)
