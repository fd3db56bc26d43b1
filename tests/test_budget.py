"""Fixed-parameter-budget families (budget.py) and static sparse masks (sparsity.py).

The paper's rule: a family with base width b keeps N(b) weights (conv/linear weight tensors only) at
every width. These tests pin the planner (pure arithmetic) to the real modules and to the masks.
"""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from omegaconf import OmegaConf

from widen_cli import compose, validation

from widen_cli.identity import identity_of
from widen_cli.budget import (
    DISTRIBUTIONS, Member, count, default_widths, distribute, erk, family_budget,
    max_width, numel, plan_member, solve_bottleneck, staggered, uniform,
    weight_shapes,
)
from widen_cli.schema import MethodConfig, ModelConfig, OptimConfig
from widen_cli.datasets import spec_from_config
from widen_cli.errors import UserError
from widen_cli.models import InputSpec, build_model, count_weights, weight_layers
from widen_cli.models.resnet import BLOCK_MULTS
from widen_cli.sparsity import Masks, draw_masks, sparsify
from widen_cli.train import make_optimizer

RESNET = ModelConfig(name="resnet18")
MLP1 = ModelConfig(name="mlp")
MLP2 = ModelConfig(name="mlp", hidden_layers=2)
MLP3 = ModelConfig(name="mlp", hidden_layers=3)

CIFAR100 = InputSpec(3, 32, 100)
SMALL_IMAGENET = InputSpec(3, 96, 10)  # image_size > 64: ImageNet stem (7x7/2 conv + max-pool), cheap to build
IMAGENET = InputSpec(3, 224, 1000)
MNIST = InputSpec(1, 28, 10)
TINY = InputSpec(1, 4, 10)  # 16 inputs: the MLP's input layer no longer eats the whole budget when widened

SPARSE = MethodConfig(name="sparse")
LINEAR = MethodConfig(name="linear-bottleneck")
NONLINEAR = MethodConfig(name="nonlinear-bottleneck")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: intra-op threads only add overhead, and on a busy machine they make it several times
    slower. Restored afterwards for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sparse(distribution="staggered", within="all", llc=None):
    return MethodConfig(name="sparse", distribution=distribution, within=within, last_layer_connectivity=llc)


def built_shapes(model) -> dict[str, tuple[int, ...]]:
    return {n: tuple(m.weight.shape) for n, m in weight_layers(model).items()}


def meta_build(cfg, width, spec, **kw):
    """Shapes and counts only: no memory, no init cost, so wide members are cheap."""
    with torch.device("meta"):
        return build_model(cfg, width, spec, **kw)


def nonzero_init_(model):
    """torch's normal init gives an exact 0.0 about once in 2**24 draws; a kept weight that starts at 0 would
    make 'nonzero weights == kept' flaky. Uniform in [0.1, 1.1) with random signs is never 0."""
    with torch.no_grad():
        for layer in weight_layers(model).values():
            w = layer.weight
            sign = torch.where(torch.rand_like(w) < 0.5, -1.0, 1.0)
            w.copy_((torch.rand_like(w) + 0.1) * sign)
    return model


def base_count(cfg, base, spec) -> int:
    return count_weights(meta_build(cfg, base, spec))


# ---------------------------------------------------------------- 1. sparse members keep exactly N(b)

SPARSE_FAMILIES = [
    pytest.param(RESNET, CIFAR100, 4, [4, 6, 9, 16], id="resnet-cifar"),
    pytest.param(RESNET, SMALL_IMAGENET, 4, [4, 6, 11, 16], id="resnet-imagenet"),
    pytest.param(MLP1, MNIST, 5, [5, 7, 20, 80], id="mlp-b5"),
    pytest.param(MLP1, MNIST, 8, [8, 11, 32, 128], id="mlp-b8"),
]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("cfg,spec,base,widths", SPARSE_FAMILIES)
def test_sparse_member_keeps_exactly_the_base_count(cfg, spec, base, widths, distribution):
    n_base = base_count(cfg, base, spec)
    for width in widths:
        member = plan_member(cfg, spec, base, width, sparse(distribution))
        assert member.budget == member.n_weights == n_base
        model = nonzero_init_(build_model(cfg, width, spec, inner=member.inner, ranks=member.ranks))
        assert member.inner is None and member.ranks is None
        assert built_shapes(model) == member.layers
        masks = sparsify(model, member, seed=width)
        layers = weight_layers(model)
        assert set(masks.names) == set(layers)  # every counted layer is masked
        assert sum(int(m.sum()) for m in masks.masks) == n_base
        nonzero = {n: int((m.weight != 0).sum()) for n, m in layers.items()}
        assert nonzero == member.kept, (width, distribution)
        assert sum(nonzero.values()) == n_base
        for name, mask in zip(masks.names, masks.masks):  # zero exactly where masked
            assert torch.equal(layers[name].weight != 0, mask.bool())


# ---------------------------------------------------------------- 2. planned shapes == built shapes

def _assert_shapes(cfg, width, spec, inner=None, ranks=None):
    planned = weight_shapes(cfg, width, spec, inner=inner, ranks=ranks)
    built = built_shapes(meta_build(cfg, width, spec, inner=inner, ranks=ranks))
    assert planned == built
    assert list(planned) == list(built)  # order matters: `distribute` takes the last one as the classifier
    return planned


@pytest.mark.parametrize("cfg,spec,widths", [
    (RESNET, CIFAR100, [1, 4, 7, 18, 64]),
    (RESNET, SMALL_IMAGENET, [1, 4, 7, 16]),
    (RESNET, IMAGENET, [64]),
    (MLP1, MNIST, [1, 5, 8, 100]),
    (MLP2, MNIST, [5, 13]),
    (MLP3, TINY, [8, 11]),
], ids=["resnet-cifar", "resnet-imagenet-small", "resnet-imagenet", "mlp1", "mlp2", "mlp3"])
def test_weight_shapes_dense_match_model(cfg, spec, widths):
    for width in widths:
        shapes = _assert_shapes(cfg, width, spec)
        assert count(shapes) == count_weights(meta_build(cfg, width, spec))


def test_resnet_stem_switches_above_64_pixels():
    assert _assert_shapes(RESNET, 4, InputSpec(3, 64, 10))["conv1"] == (4, 3, 3, 3)
    assert _assert_shapes(RESNET, 4, InputSpec(3, 65, 10))["conv1"] == (4, 3, 7, 7)
    assert _assert_shapes(ModelConfig(name="resnet18", stem="imagenet"), 4, CIFAR100)["conv1"] == (4, 3, 7, 7)


@pytest.mark.parametrize("cfg,spec,base", [
    (RESNET, CIFAR100, 18), (RESNET, SMALL_IMAGENET, 4), (MLP1, MNIST, 5), (MLP2, MNIST, 8),
], ids=["resnet-cifar", "resnet-imagenet", "mlp1", "mlp2"])
def test_weight_shapes_linear_bottleneck_match_model(cfg, spec, base):
    for width in default_widths(cfg, spec, base, LINEAR, 0.01)[:5]:
        member = plan_member(cfg, spec, base, width, LINEAR)
        assert member.ranks is not None and member.inner is None
        assert _assert_shapes(cfg, width, spec, ranks=member.ranks) == member.layers
        # every dense layer became a pair name.0 (to the rank) and name.1 (from it)
        dense = weight_shapes(cfg, width, spec)
        assert list(member.layers) == [f"{n}.{i}" for n in dense for i in (0, 1)]


@pytest.mark.parametrize("cfg,spec,base", [
    (RESNET, CIFAR100, 18), (RESNET, SMALL_IMAGENET, 4), (MLP2, TINY, 8), (MLP3, TINY, 16),
], ids=["resnet-cifar", "resnet-imagenet", "mlp2", "mlp3"])
def test_weight_shapes_nonlinear_bottleneck_match_model(cfg, spec, base):
    widths = default_widths(cfg, spec, base, NONLINEAR, 0.01)
    assert len(widths) >= 2  # at least one member actually wider than the base
    for width in widths:
        member = plan_member(cfg, spec, base, width, NONLINEAR)
        assert member.inner is not None and member.ranks is None
        assert _assert_shapes(cfg, width, spec, inner=member.inner) == member.layers


def test_weight_shapes_arbitrary_inner_and_ranks():
    rng = random.Random(0)
    inner = [rng.randint(1, 9) for _ in BLOCK_MULTS]
    for spec in (CIFAR100, SMALL_IMAGENET):
        _assert_shapes(RESNET, 5, spec, inner=inner)
        ranks = {n: rng.randint(1, 7) for n in weight_shapes(RESNET, 5, spec)}
        _assert_shapes(RESNET, 5, spec, ranks=ranks)
    _assert_shapes(MLP3, 6, MNIST, inner=[6, 2, 6])
    _assert_shapes(MLP2, 6, MNIST, ranks={"layers.0": 3, "layers.1": 1, "layers.2": 4})


# ---------------------------------------------------------------- 3. staggered, by hand

@pytest.mark.parametrize("n_keep,expected", [
    # sizes [100, 60, 30], total 190.
    # keep 150: remove 40. The largest (100) gives 40 and reaches the next (60) exactly -> [60, 60, 30].
    (150, [60, 60, 30]),
    # keep 160: remove 30, fewer than the 40 that separate 100 from 60: only the largest -> [70, 60, 30].
    (160, [70, 60, 30]),
    # keep 140: remove 50. 40 bring 100 to 60, the other 10 split 5/5 between the two 60s -> [55, 55, 30].
    (140, [55, 55, 30]),
    # keep 139: remove 51. 40, then 11 over two layers = 5 each + remainder 1 from the largest -> [54, 55, 30].
    (139, [54, 55, 30]),
    # keep 90: remove 100 = 40 (100 -> 60) + 2 * 30 (both 60s -> 30): all three exactly level -> [30, 30, 30].
    (90, [30, 30, 30]),
    # keep 89: remove 101: level at 30 as above (100 removed), the last 1 over three layers is 0 each
    # + remainder 1, taken from the largest layer -> [29, 30, 30].
    (89, [29, 30, 30]),
    # keep 61: remove 129: 100 to reach level 30, 29 more = 9 each + remainder 2 from the largest -> [19, 21, 21].
    (61, [19, 21, 21]),
    # keep 60: remove 130: 100 + 3 * 10 -> [20, 20, 20].
    (60, [20, 20, 20]),
    # keep everything: nothing removed.
    (190, [100, 60, 30]),
    # keep 3: remove 187 = 100 + 3 * 29 -> [1, 1, 1].
    (3, [1, 1, 1]),
])
def test_staggered_by_hand(n_keep, expected):
    assert staggered([100, 60, 30], n_keep) == expected
    assert sum(expected) == n_keep


def test_staggered_is_order_independent():
    sizes = [100, 60, 30]
    for n_keep in (190, 160, 150, 140, 139, 90, 89, 61, 7):
        kept = staggered(sizes, n_keep)
        for perm in ([2, 0, 1], [1, 2, 0], [2, 1, 0], [0, 2, 1]):
            assert staggered([sizes[i] for i in perm], n_keep) == [kept[i] for i in perm]


def test_staggered_properties_random():
    rng = random.Random(1)
    for _ in range(300):
        sizes = [rng.randint(1, 500) for _ in range(rng.randint(1, 7))]
        n_keep = rng.randint(1, sum(sizes))
        kept = staggered(sizes, n_keep)
        assert sum(kept) == n_keep
        assert all(0 <= k <= s for k, s in zip(kept, sizes))
        touched = [i for i in range(len(sizes)) if kept[i] < sizes[i]]
        if touched:
            level = max(kept[i] for i in touched)
            # the layers that lost weights end level, except that the largest of them also gives up the
            # remainder of the uneven split (less than one weight per layer involved)
            low = [i for i in touched if kept[i] < level]
            assert len(low) <= 1
            if low:
                assert level - kept[low[0]] < len(sizes)
                assert sizes[low[0]] == max(sizes)
            # untouched layers were no bigger than that level
            assert all(sizes[i] <= level for i in range(len(sizes)) if i not in touched)


def test_staggered_rejects_impossible():
    with pytest.raises(ValueError):
        staggered([10, 5], 16)
    with pytest.raises(ValueError):
        staggered([10, 5], 0)


# ---------------------------------------------------------------- 4. uniform and ERK

def test_uniform_exact_total_and_fractions():
    rng = random.Random(2)
    cases = [([100, 60, 30], 95), ([7, 7, 7], 10), ([1, 1000], 500)]
    cases += [([rng.randint(1, 10_000) for _ in range(rng.randint(1, 10))], None) for _ in range(200)]
    for sizes, n_keep in cases:
        n_keep = n_keep or rng.randint(1, sum(sizes))
        kept = uniform(sizes, n_keep)
        assert sum(kept) == n_keep
        frac = n_keep / sum(sizes)
        for k, s in zip(kept, sizes):
            assert 0 <= k <= s
            assert abs(k / s - frac) < 1 / s  # off by less than one weight from the exact fraction


def test_uniform_on_resnet_member():
    member = plan_member(RESNET, CIFAR100, 18, 51, sparse("uniform"))
    frac = member.budget / member.n_weights_dense
    for name, shape in member.layers.items():
        assert abs(member.kept[name] - frac * numel(shape)) < 1


def test_erk_exact_total_and_density_at_most_one():
    rng = random.Random(3)
    for _ in range(200):
        shapes = [tuple(rng.randint(1, 30) for _ in range(rng.choice([2, 4]))) for _ in range(rng.randint(1, 6))]
        sizes = [numel(s) for s in shapes]
        n_keep = rng.randint(1, sum(sizes) - 1) if sum(sizes) > 1 else 1
        kept = erk(shapes, n_keep)
        assert sum(kept) == n_keep
        assert all(0 <= k <= s for k, s in zip(kept, sizes))


def test_erk_caps_small_layers_at_density_one():
    # score (2+2)/4 = 1 vs 2000/1e6: scaled to keep 100,000, the small layer would exceed density 1
    assert erk([(2, 2), (1000, 1000)], 100_000) == [4, 99_996]


def test_erk_small_layers_get_higher_density():
    shapes = weight_shapes(RESNET, 16, CIFAR100)
    kept = distribute(shapes, base_count(RESNET, 4, CIFAR100), sparse("erk"))
    density = {n: kept[n] / numel(s) for n, s in shapes.items()}
    assert max(density.values()) <= 1
    biggest = [n for n in shapes if n.startswith("layer4") and n.endswith(("conv1", "conv2"))]
    assert density["conv1"] > max(density[n] for n in biggest)
    assert density["fc"] > max(density[n] for n in biggest)
    # uncapped layers: density proportional to the ERK score sum(shape) / prod(shape), up to rounding
    score = {n: sum(s) / numel(s) for n, s in shapes.items()}
    c = density["layer4.1.conv2"] / score["layer4.1.conv2"]
    for n, s in shapes.items():
        if density[n] < 1:
            assert abs(kept[n] - c * score[n] * numel(s)) < 2


def test_erk_keeping_everything_returns_the_sizes():
    """All layers end up dense; with floating point the last one may come out at density 1 + 1e-16."""
    for shapes in ([(48, 42, 11, 3)], [(10, 10), (5, 5)], list(weight_shapes(RESNET, 5, CIFAR100).values())):
        sizes = [numel(s) for s in shapes]
        assert erk(shapes, sum(sizes)) == sizes


@pytest.mark.parametrize("cfg,spec,base", [(RESNET, CIFAR100, 5), (RESNET, CIFAR100, 33), (MLP1, MNIST, 22)],
                         ids=["resnet-b5", "resnet-b33", "mlp-b22"])
def test_erk_base_member_is_dense(cfg, spec, base):
    """The base width of an ERK family keeps every weight (and must not crash)."""
    member = plan_member(cfg, spec, base, base, sparse("erk"))
    assert member.kept == {n: numel(s) for n, s in member.layers.items()}
    assert default_widths(cfg, spec, base, sparse("erk"), 0.01)[0] == base


# ---------------------------------------------------------------- 5. within = io (whole kernels)

@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("spec,base,widths", [
    (CIFAR100, 4, [6, 9, 16]), (SMALL_IMAGENET, 4, [6, 11, 16]),
], ids=["cifar", "imagenet"])
def test_within_io_keeps_whole_kernels(spec, base, widths, distribution):
    """`io` keeps the same exact per-layer counts as `all`: whole kernels, plus at most one partial kernel
    (the count's remainder) per layer."""
    for width in widths:
        member = plan_member(RESNET, spec, base, width, sparse(distribution, within="io"))
        flat = plan_member(RESNET, spec, base, width, sparse(distribution, within="all"))
        assert member.kept == flat.kept
        assert member.deviation == 0 and member.n_weights == member.budget == sum(member.kept.values())

        masks = draw_masks(member, seed=width)
        for name, m in masks.items():
            assert int(m.sum()) == member.kept[name]
            per_kernel = m.reshape(m.shape[0], m.shape[1], -1)
            kk = per_kernel.shape[-1]
            assert int(per_kernel.all(-1).sum()) == member.kept[name] // kk, name
            partial = int((per_kernel.any(-1) & ~per_kernel.all(-1)).sum())
            assert partial == (1 if member.kept[name] % kk else 0), name

        model = nonzero_init_(build_model(RESNET, width, spec))
        sparsify(model, member, seed=width)
        assert sum(int((l.weight != 0).sum()) for l in weight_layers(model).values()) == member.n_weights


def _preset(path):
    """The preset's family made sparse with `within: io`: its config, input spec and widths (the preset's
    own, else the sweep's default ones); no data is read."""
    composed = compose.compose_config([f"+experiment={path.stem}", "method=sparse", "method.within=io"])
    cfg = validation.validate(composed)
    spec = spec_from_config(cfg.dataset)
    widths = OmegaConf.select(composed, "sweep.widths") or default_widths(cfg.model, spec, cfg.base_width,
                                                                          cfg.method, 0.01)
    return cfg, spec, widths


CIFAR_AND_MLP_PRESETS = [p for p in sorted((compose.CONF_DIR / "experiment").glob("*.yaml"))
                         if "override /dataset: cifar" in p.read_text() or "override /model: mlp" in p.read_text()]


@pytest.mark.parametrize("path", CIFAR_AND_MLP_PRESETS, ids=lambda p: p.stem)
def test_within_io_holds_the_budget_exactly_on_presets(path):
    cfg, spec, widths = _preset(path)
    assert len(widths) > 1
    for width in widths:
        member = plan_member(cfg.model, spec, cfg.base_width, width, cfg.method)
        assert member.within == "io"
        assert member.deviation == 0 and member.n_weights == member.budget == sum(member.kept.values())
    small = plan_member(cfg.model, spec, cfg.base_width, widths[1], cfg.method)
    masks = draw_masks(small, seed=0)
    assert {n: int(m.sum()) for n, m in masks.items()} == small.kept


# ---------------------------------------------------------------- 6. masks survive SGD

OPTIM = OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=8, epochs=1, schedule="constant")


def _train_steps(model, masks, x, y, steps=5, remask=True):
    opt, _ = make_optimizer(model, OPTIM)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if remask:
            masks.apply_()


@pytest.mark.parametrize("cfg,spec,base,width", [
    (RESNET, InputSpec(3, 16, 10), 4, 8), (MLP1, MNIST, 5, 20), (MLP3, MNIST, 5, 12),
], ids=["resnet", "mlp1", "mlp3"])
def test_masked_weights_stay_zero_under_sgd(cfg, spec, base, width):
    torch.manual_seed(0)
    member = plan_member(cfg, spec, base, width, SPARSE)
    model = build_model(cfg, width, spec)
    masks = sparsify(model, member, seed=0)
    control = copy.deepcopy(model)
    before = {n: l.weight.detach().clone() for n, l in weight_layers(model).items()}
    x = torch.randn(8, spec.channels, spec.image_size, spec.image_size)
    y = torch.randint(0, spec.num_classes, (8,))

    _train_steps(model, masks, x, y)
    layers = weight_layers(model)
    for name, mask in zip(masks.names, masks.masks):
        w, keep = layers[name].weight.detach(), mask.bool()
        assert bool((w[~keep] == 0).all()), name
        assert bool((w[keep] != before[name][keep]).any()), name  # the kept weights did train
        assert int((w != 0).sum()) == member.kept[name]

    # control: without re-masking after each step, masked weights do not stay zero (so the test can fail)
    control_masks = Masks(control, {n: m.bool() for n, m in zip(masks.names, masks.masks)})
    _train_steps(control, control_masks, x, y, remask=False)
    leaked = sum(int((weight_layers(control)[n].weight[~m.bool()] != 0).sum())
                 for n, m in zip(masks.names, masks.masks))
    assert leaked > 0


# ---------------------------------------------------------------- 7. bottleneck families

def _unit_costs(cfg, width, spec, member):
    """(cost of one unit, is the unit below its full size) per shrinkable size, computed independently."""
    if member.method == "linear-bottleneck":
        dense = weight_shapes(cfg, width, spec)
        return [(numel(s[1:]) + s[0], member.ranks[n] < min(numel(s[1:]), s[0])) for n, s in dense.items()]
    if cfg.name == "mlp":
        out = []
        for i in range(1, cfg.hidden_layers, 2):
            after = width if i + 1 < cfg.hidden_layers else spec.num_classes
            out.append((width + after, member.inner[i] < width))
        return out
    chans = [width * m for m in BLOCK_MULTS]
    ins = [width] + chans[:-1]
    return [(9 * (i + o), mid < o) for i, o, mid in zip(ins, chans, member.inner)]


BOTTLENECK_FAMILIES = [
    pytest.param(RESNET, CIFAR100, 18, LINEAR, id="resnet-cifar-linear"),
    pytest.param(RESNET, CIFAR100, 18, NONLINEAR, id="resnet-cifar-nonlinear"),
    pytest.param(RESNET, SMALL_IMAGENET, 4, LINEAR, id="resnet-imagenet-linear"),
    pytest.param(RESNET, SMALL_IMAGENET, 4, NONLINEAR, id="resnet-imagenet-nonlinear"),
    pytest.param(MLP1, MNIST, 5, LINEAR, id="mlp1-linear"),
    pytest.param(MLP2, MNIST, 8, LINEAR, id="mlp2-linear"),
    pytest.param(MLP2, TINY, 8, NONLINEAR, id="mlp2-nonlinear"),
    pytest.param(MLP3, TINY, 16, NONLINEAR, id="mlp3-nonlinear"),
]


@pytest.mark.parametrize("cfg,spec,base,method", BOTTLENECK_FAMILIES)
def test_bottleneck_members_hold_the_budget(cfg, spec, base, method):
    budget = family_budget(cfg, base, spec, method.name)
    widths = default_widths(cfg, spec, base, method, 0.01)
    assert widths[0] == base and len(widths) >= 2
    for width in widths:
        member = plan_member(cfg, spec, base, width, method)
        assert member.budget == budget
        assert member.n_weights <= budget, width
        gap = budget - member.n_weights
        costs = _unit_costs(cfg, width, spec, member)
        # what is left cannot buy one more unit of any layer that is not at its full size
        assert gap < min((c for c, below_full in costs if below_full), default=1), (width, gap)
        if cfg.name == "resnet18":
            assert gap < 0.01 * budget and gap < max(c for c, _ in costs), (width, gap)
        model = meta_build(cfg, width, spec, inner=member.inner, ranks=member.ranks)
        assert count_weights(model) == member.n_weights
        assert built_shapes(model) == member.layers
        assert member.connectivity >= 0.01


def test_linear_bottleneck_base_member_is_full_rank():
    for cfg, spec, base in ((RESNET, CIFAR100, 18), (RESNET, SMALL_IMAGENET, 4), (MLP1, MNIST, 5)):
        member = plan_member(cfg, spec, base, base, LINEAR)
        assert member.bottleneck_ratio == 1.0
        dense = weight_shapes(cfg, base, spec)
        assert member.ranks == {n: min(numel(s[1:]), s[0]) for n, s in dense.items()}
        assert member.n_weights == member.budget
        assert member.deviation == 0
    # the explicit count of the full-rank pair for ResNet-18, CIFAR-100, width 18 (see the planner)
    assert family_budget(RESNET, 18, CIFAR100, "linear-bottleneck") == 1_024_750


def test_nonlinear_bottleneck_base_member_is_the_dense_model():
    for cfg, spec, base in ((RESNET, CIFAR100, 18), (RESNET, SMALL_IMAGENET, 4), (MLP3, TINY, 8)):
        member = plan_member(cfg, spec, base, base, NONLINEAR)
        dense = plan_member(cfg, spec, base, base, MethodConfig(name="dense"))
        assert member.bottleneck_ratio == 1.0
        assert member.layers == dense.layers == weight_shapes(cfg, base, spec)
        assert member.n_weights == member.budget == dense.n_weights == base_count(cfg, base, spec)
    assert plan_member(RESNET, CIFAR100, 18, 18, NONLINEAR).inner == [18 * m for m in BLOCK_MULTS]


@pytest.mark.parametrize("base", [5, 8])
def test_mlp_linear_bottleneck_is_as_close_to_budget_as_whole_ranks_allow(base):
    """solve_bottleneck's contract: 'as close to budget as whole units allow, never above'. With two layers
    every pair of ranks can be tried."""
    for width in default_widths(MLP1, MNIST, base, LINEAR, 0.01):
        member = plan_member(MLP1, MNIST, base, width, LINEAR)
        fan_in = MNIST.channels * MNIST.image_size ** 2
        c0, c1 = fan_in + width, width + MNIST.num_classes
        best = max(r0 * c0 + r1 * c1 for r0 in range(1, width + 1)
                   for r1 in range(1, min(width, MNIST.num_classes) + 1) if r0 * c0 + r1 * c1 <= member.budget)
        assert member.n_weights == best, (width, member.ranks, member.budget - member.n_weights,
                                          member.budget - best)


def test_solve_bottleneck_none_when_even_rank_one_is_too_big():
    assert solve_bottleneck(MLP1, 5, MNIST, "linear-bottleneck", budget=100) is None


# ---------------------------------------------------------------- 8. refusals

def test_refuses_width_below_base():
    with pytest.raises(UserError, match=r"below the base width 18.*>= 18"):
        plan_member(RESNET, CIFAR100, 18, 17, SPARSE)


def test_refuses_too_wide_nonlinear_bottleneck_with_valid_range():
    with pytest.raises(UserError) as e:
        plan_member(RESNET, CIFAR100, 18, 300, NONLINEAR)
    assert "valid widths" in str(e.value) and "18 to 131" in str(e.value)
    plan_member(RESNET, CIFAR100, 18, 131, NONLINEAR)  # the edge of the range is valid
    with pytest.raises(UserError, match="18 to 131"):
        plan_member(RESNET, CIFAR100, 18, 132, NONLINEAR)
    assert max_width(RESNET, CIFAR100, 18, NONLINEAR) == 131


def test_refuses_too_wide_linear_bottleneck_with_valid_range():
    top = max_width(RESNET, CIFAR100, 18, LINEAR)
    plan_member(RESNET, CIFAR100, 18, top, LINEAR)
    with pytest.raises(UserError, match=f"valid widths.*18 to {top}"):
        plan_member(RESNET, CIFAR100, 18, top + 1, LINEAR)


@pytest.mark.parametrize("llc", [0, 0.0, -0.5, 1.5])
def test_refuses_last_layer_connectivity_outside_0_1(llc):
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        plan_member(MLP1, MNIST, 5, 10, sparse(llc=llc))


def test_refuses_last_layer_connectivity_that_leaves_no_budget():
    # connectivity 1 at width w keeps the whole 10 x w classifier: more than 3,970 weights above w = 396
    plan_member(MLP1, MNIST, 5, 396, sparse(llc=1.0))
    with pytest.raises(UserError, match="valid widths for base width 5 with sparse: 5 to 396"):
        plan_member(MLP1, MNIST, 5, 1000, sparse(llc=1.0))


def test_refuses_mlp_nonlinear_bottleneck_with_one_hidden_layer():
    with pytest.raises(UserError, match="hidden_layers >= 2"):
        plan_member(MLP1, MNIST, 5, 10, NONLINEAR)


# ---------------------------------------------------------------- 9. default widths

def test_default_widths_cifar100_resnet_sparse():
    for distribution in DISTRIBUTIONS:
        method = sparse(distribution)
        widths = default_widths(RESNET, CIFAR100, 18, method, 0.01)
        assert widths[:5] == [18, 25, 36, 51, 72]
        assert widths == sorted(set(widths))
        for width in widths:
            member = plan_member(RESNET, CIFAR100, 18, width, method)
            assert member.n_weights == 897_462
            assert member.connectivity >= 0.01
        # the next power of sqrt(2) would fall below the floor
        nxt = round(18 * round(math.sqrt(2) ** len(widths), 2))
        assert plan_member(RESNET, CIFAR100, 18, nxt, method).connectivity < 0.01


def test_default_widths_imagenet_table1():
    assert default_widths(RESNET, IMAGENET, 64, SPARSE, 0.01)[:5] == [64, 90, 128, 181, 256]


def test_default_widths_respect_the_floor():
    loose = default_widths(RESNET, CIFAR100, 18, SPARSE, 0.01)
    strict = default_widths(RESNET, CIFAR100, 18, SPARSE, 0.1)
    assert strict == loose[:len(strict)] and len(strict) < len(loose)
    assert all(plan_member(RESNET, CIFAR100, 18, w, SPARSE).connectivity >= 0.1 for w in strict)


def test_member_properties():
    member = plan_member(RESNET, CIFAR100, 18, 36, SPARSE)
    assert isinstance(member, Member)
    assert member.widening_factor == 2
    assert member.n_weights_dense == base_count(RESNET, 36, CIFAR100)
    assert member.connectivity == pytest.approx(897_462 / member.n_weights_dense)
    assert member.deviation == 0


# ---------------------------------------------------------------- 10. masks: seeds and files

def test_masks_are_deterministic_per_seed_and_differ_across_seeds():
    member = plan_member(RESNET, CIFAR100, 4, 8, SPARSE)
    a, b, c = draw_masks(member, 0), draw_masks(member, 0), draw_masks(member, 1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    partial = [n for n in a if 0 < member.kept[n] < numel(member.layers[n])]
    assert partial and all(not torch.equal(a[n], c[n]) for n in partial)
    # sparsify uses the same draw, whatever the global RNG state
    m1, m2 = build_model(RESNET, 8, CIFAR100), build_model(RESNET, 8, CIFAR100)
    torch.manual_seed(123)
    s1 = sparsify(m1, member, 7).state()
    torch.manual_seed(456)
    s2 = sparsify(m2, member, 7).state()
    assert all(torch.equal(s1[n], s2[n]) for n in s1)


def test_masks_save_round_trip(tmp_path):
    member = plan_member(MLP1, MNIST, 5, 20, SPARSE)
    model = build_model(MLP1, 20, MNIST)
    masks = sparsify(model, member, 3)
    path = tmp_path / "masks.pt"
    masks.save(path)
    loaded = torch.load(path, weights_only=True)
    drawn = draw_masks(member, 3)
    assert list(loaded) == list(drawn)
    for name, m in loaded.items():
        assert m.dtype == torch.bool and m.device.type == "cpu"
        assert torch.equal(m, drawn[name])
        assert int(m.sum()) == member.kept[name]


# ---------------------------------------------------------------- 11. last-layer connectivity

@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("llc", [0.05, 0.3, 0.5, 1.0])
def test_last_layer_connectivity_mlp(llc, distribution):
    base, width = 5, 10
    member = plan_member(MLP1, MNIST, base, width, sparse(distribution, llc=llc))
    last_size = numel(member.layers["layers.1"])
    assert member.kept["layers.1"] == round(llc * last_size)
    assert member.kept["layers.0"] == 3970 - round(llc * last_size)
    assert member.n_weights == 3970
    model = nonzero_init_(build_model(MLP1, width, MNIST))
    sparsify(model, member, 0)
    nonzero = {n: int((l.weight != 0).sum()) for n, l in weight_layers(model).items()}
    assert nonzero == member.kept


def test_last_layer_connectivity_resnet_total_exact():
    member = plan_member(RESNET, CIFAR100, 4, 8, sparse("staggered", llc=0.25))
    assert member.kept["fc"] == round(0.25 * 100 * 64)
    assert member.n_weights == base_count(RESNET, 4, CIFAR100)


# ---------------------------------------------------------------- 10. dense-last (Figure 7) and the model's default

def test_dense_last_keeps_the_classifier_dense():
    # one hidden layer: the first layer keeps exactly budget - width * outputs (the authors' Figure 7 code)
    for width in (8, 32, 216, 635):
        member = plan_member(MLP1, MNIST, 8, width, sparse("dense-last"))
        assert member.kept == {"layers.0": 6352 - 10 * width, "layers.1": 10 * width}
    # deeper: the last layer dense, the rest staggered over the earlier layers
    deep = ModelConfig(name="mlp", hidden_layers=2, bias=False)
    member = plan_member(deep, MNIST, 8, 64, sparse("dense-last"))
    base = family_budget(deep, 8, MNIST, "sparse")
    sizes = [numel(s) for s in member.layers.values()]
    assert member.kept["layers.2"] == sizes[2]
    assert [member.kept["layers.0"], member.kept["layers.1"]] == staggered(sizes[:2], base - sizes[2])
    resnet = plan_member(RESNET, CIFAR100, 18, 36, sparse("dense-last"))
    fc = list(resnet.layers)[-1]
    assert resnet.kept[fc] == numel(resnet.layers[fc]) and resnet.n_weights == resnet.budget
    # beyond the widest width (one first-layer weight left) the rule has no member
    with pytest.raises(UserError, match="valid widths for base width 8 with sparse: 8 to 635"):
        plan_member(MLP1, MNIST, 8, 636, sparse("dense-last"))


@pytest.mark.parametrize("overrides, expected", [
    (["dataset=mnist", "method=sparse"], "dense-last"),  # the MLP's default: Figure 7's rule
    (["dataset=cifar10", "model=resnet18", "method=sparse"], "staggered"),  # ResNet's: Appendix B
    (["dataset=mnist", "method=sparse", "method.last_layer_connectivity=0.5"], "staggered"),  # the rest staggered
    (["dataset=mnist", "method=sparse", "method.distribution=dense-last",
      "method.last_layer_connectivity=0.5"], "staggered"),  # one name for one network
    (["dataset=mnist", "method=sparse", "method.distribution=uniform"], "uniform"),
    (["dataset=mnist"], "staggered"),  # dense runs keep the identity (and folder) they had
])
def test_distribution_null_is_the_models_default(overrides, expected):
    run = compose.load(overrides)[1]
    assert run.method.distribution == expected
    assert identity_of(run)["method"]["distribution"] == expected


def test_the_old_name_proportional_is_refused():
    with pytest.raises(UserError, match="method.distribution must be one of staggered, dense-last, uniform, erk"):
        compose.load(["dataset=mnist", "method=sparse", "method.distribution=proportional"])
