"""SET and RigL mask updates (widen_cli/methods/regrow.py) on hand-built layers and a tiny network trained on
random data: exact counts, where weights regrow, seeding, resuming, what is never touched, bad options."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widen_cli.errors import UserError
from widen_cli.methods.regrow import Updater, check_options, update_layer
from widen_cli.sparsity import Masks

STEPS_PER_EPOCH, EPOCHS = 25, 12  # 300 steps


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers on a shared 2-core machine: no oversubscription
    yield
    torch.set_num_threads(threads)


OPTIONS = {"set": {"zeta": 0.3}, "rigl": {"alpha": 0.3, "delta_t": 10, "t_end": 0.75}}


def _net(seed: int) -> nn.Module:
    """A hidden layer with bias and BatchNorm, a second hidden layer, a classifier left dense."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _masks(model: nn.Module, seed: int) -> Masks:
    """Layers "0" and "3" sparse (exactly 40 and 70 kept), the classifier "5" not masked."""
    g = torch.Generator().manual_seed(seed)
    drawn = {}
    for name, kept in (("0", 40), ("3", 70)):
        shape = getattr(model, name).weight.shape
        m = torch.zeros(shape.numel(), dtype=torch.bool)
        m[torch.randperm(shape.numel(), generator=g)[:kept]] = True
        drawn[name] = m.view(shape)
    masks = Masks(model, drawn)
    masks.apply_()
    return masks


def _data(n_steps: int):
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n_steps)]


def _setup(kind: str, seed: int = 0):
    model = _net(seed)
    masks = _masks(model, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return model, masks, opt, Updater(masks, model, opt, kind, OPTIONS[kind], STEPS_PER_EPOCH, EPOCHS, seed)


def _train(model, masks, opt, updater, data, start: int, end: int, check=None):
    model.train()
    for step in range(start, end):
        x, y = data[step]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        updater.after_backward(step)
        opt.step()
        masks.apply_()
        if check is not None:
            check(step)


@pytest.mark.parametrize("kind", ["set", "rigl"])
def test_every_layer_holds_its_count_after_every_update(kind):
    model, masks, opt, updater = _setup(kind)
    data = _data(STEPS_PER_EPOCH * EPOCHS)

    def check(step):
        state = masks.state()
        assert {n: int(m.sum()) for n, m in state.items()} == {"0": 40, "3": 70}, f"step {step}"
        for name, m in state.items():  # masked weights exactly zero
            assert not getattr(model, name).weight[~m].any()

    _train(model, masks, opt, updater, data, 0, len(data), check)
    expected = EPOCHS - 1 if kind == "set" else len(range(10, int(0.75 * len(data)), 10))
    assert updater.updates == expected
    log = updater.log()
    assert log["mask_updates"] == expected
    assert 0 < log["mask_kept_initial"] < 1
    # RigL's late updates drop floor(kept * a small fraction), often none
    assert all(0 <= v <= 1 for v in log["mask_changed"].values()) and log["mask_changed"][1] > 0
    if kind == "set":  # once per epoch, at its end, none after the last
        assert sorted(log["mask_changed"]) == list(range(1, EPOCHS))  # numbered from 1
        assert all(abs(v - (12 + 21) / 110) < 1e-9 for v in log["mask_changed"].values())  # floor(0.3 * kept)


def test_rigl_regrows_where_the_dense_gradient_is_largest():
    w = torch.arange(1.0, 17.0).view(4, 4)  # |w| grows with the position
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[0, 1, 5, 6, 10, 11, 14, 15]] = True
    mask = mask.view(4, 4)
    w = w * mask
    w.view(-1)[8] = 0.5  # stale: a weight the caller left at an empty position still grows from zero
    grad = torch.full((4, 4), 0.01)
    grad.view(-1)[[3, 8]] = torch.tensor([5.0, -7.0])  # the largest |gradient| among empty positions
    grad.view(-1)[0] = 9.0  # a kept weight's gradient: not a candidate unless dropped
    momentum = torch.ones(4, 4)
    fmask = mask.float()
    born = update_layer(w, fmask, 0.25, "rigl", torch.Generator().manual_seed(0), grad, momentum)
    new = fmask.bool().view(-1)
    # 2 dropped: the two smallest |w| kept (positions 0 and 1); position 0 has the largest gradient of all
    # and is regrown at once (rigl allows it), keeping its weight; the other grows at position 8.
    assert born == 1
    assert new.nonzero().squeeze(1).tolist() == [0, 5, 6, 8, 10, 11, 14, 15]
    assert w.view(-1)[0] == 1 and w.view(-1)[1] == 0 and w.view(-1)[8] == 0
    assert momentum.view(-1)[8] == 0 and grad.view(-1)[8] == 0  # the new weight stays 0 through the next step
    assert momentum.view(-1)[0] == 1 and grad.view(-1)[0] == 9  # the regrown old one keeps them
    assert (momentum.view(-1)[[1, 3, 5]] == 1).all()


def test_rigl_schedule():
    model, masks, opt, _ = _setup("rigl")
    up = Updater(masks, model, opt, "rigl", {"alpha": 0.4, "delta_t": 50, "t_end": 0.5}, 100, 10, 0)  # T_end 500
    assert [s for s in range(1000) if up.fraction(s) is not None] == [50, 100, 150, 200, 250, 300, 350, 400, 450]
    assert up.fraction(250) == pytest.approx(0.2)  # alpha/2 (1 + cos(pi/2))
    assert up.fraction(100) == pytest.approx(0.2 * (1 + 0.8090169943749475))


def test_set_regrows_only_at_empty_positions():
    chosen = set()
    for seed in range(40):
        mask = torch.zeros(10)
        mask[:7] = 1  # empties: 7, 8, 9
        w = torch.tensor([0.5, -0.1, 3.0, 0.05, -2.0, 1.0, 4.0, 0, 0, 0])
        born = update_layer(w, mask, 0.3, "set", torch.Generator().manual_seed(seed))  # floor(2.1) = 2
        grown = set(mask.nonzero().squeeze(1).tolist()) - {0, 2, 4, 5, 6}
        assert born == 2 and int(mask.sum()) == 7
        assert mask[[1, 3]].sum() == 0  # the smallest |w| dropped, never regrown at once
        assert grown <= {7, 8, 9} and len(grown) == 2
        assert (w[[1, 3]] == 0).all() and (w[list(grown)] == 0).all()
        chosen |= grown
    assert chosen == {7, 8, 9}  # at random among the empty ones
    mask, w = torch.ones(10), torch.arange(1.0, 11.0)
    mask[9] = 0  # one empty position: only one weight can move
    assert update_layer(w, mask, 0.3, "set", torch.Generator().manual_seed(0)) == 1
    assert mask[9] == 1 and mask[0] == 0 and int(mask.sum()) == 9


@pytest.mark.parametrize("kind", ["set", "rigl"])
def test_seeded_repeatable(kind):
    data = _data(STEPS_PER_EPOCH * 4)
    runs = []
    for seed in (0, 0, 1):  # the same network and masks; only the updates' seed differs
        model, masks, opt, _ = _setup(kind, 0)
        updater = Updater(masks, model, opt, kind, OPTIONS[kind], STEPS_PER_EPOCH, EPOCHS, seed)
        _train(model, masks, opt, updater, data, 0, len(data))
        runs.append((masks.state(), copy.deepcopy(model.state_dict()), updater.log()))
    for name in runs[0][0]:
        assert torch.equal(runs[0][0][name], runs[1][0][name])
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())
    assert runs[0][2] == runs[1][2]
    if kind == "set":  # random regrowth (RigL's is random only among equal gradients)
        assert any(not torch.equal(runs[0][0][n], runs[2][0][n]) for n in runs[0][0])


@pytest.mark.parametrize("kind", ["set", "rigl"])
@pytest.mark.parametrize("stop", [STEPS_PER_EPOCH * 5, 137])  # at an epoch's end; mid-epoch
def test_resume_equals_uninterrupted(kind, stop):
    data = _data(STEPS_PER_EPOCH * EPOCHS)
    model, masks, opt, updater = _setup(kind)
    _train(model, masks, opt, updater, data, 0, len(data))

    model2, masks2, opt2, updater2 = _setup(kind)
    _train(model2, masks2, opt2, updater2, data, 0, stop)
    saved = copy.deepcopy(dict(model=model2.state_dict(), opt=opt2.state_dict(), masks=masks2.state(),
                               updater=updater2.state_dict()))
    del model2, masks2, opt2, updater2
    model3 = _net(5)  # other weights and masks until loaded
    masks3 = Masks(model3, saved["masks"])
    model3.load_state_dict(saved["model"])
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt3.load_state_dict(saved["opt"])
    updater3 = Updater(masks3, model3, opt3, kind, OPTIONS[kind], STEPS_PER_EPOCH, EPOCHS, 0)
    updater3.load_state_dict(saved["updater"])
    _train(model3, masks3, opt3, updater3, data, stop, len(data))

    assert updater3.log() == updater.log()
    assert all(torch.equal(masks3.state()[n], m) for n, m in masks.state().items())
    assert all(torch.equal(v, model3.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kind", ["set", "rigl"])
def test_update_touches_only_masked_weights(kind):
    """At an update step: biases, BatchNorm, the unmasked classifier, their gradients and momentum unchanged."""
    model, masks, opt, updater = _setup(kind)
    data = _data(STEPS_PER_EPOCH)
    step = STEPS_PER_EPOCH - 1 if kind == "set" else 10
    _train(model, masks, opt, updater, data, 0, step)
    x, y = data[step]
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    before = {n: (p.detach().clone(), p.grad.clone(), opt.state[p]["momentum_buffer"].clone())
              for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    masks_before = masks.state()
    updater.after_backward(step)
    assert updater.updates == 1
    for n, p in model.named_parameters():
        same = all(torch.equal(a, b) for a, b in zip(before[n], (p, p.grad, opt.state[p]["momentum_buffer"])))
        assert same == (n not in ("0.weight", "3.weight")), n
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(not torch.equal(masks_before[n], m) for n, m in masks.state().items())


def test_full_mask_skipped():
    model = _net(0)
    masks = Masks(model, {"0": torch.ones(24, 12, dtype=torch.bool), "3": torch.rand(16, 24) < 0.5})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = Updater(masks, model, opt, "set", None, 1, 3, 0)
    w0 = model[0].weight.detach().clone()
    F.cross_entropy(model(torch.randn(4, 12)), torch.tensor([0, 1, 2, 0])).backward()
    updater.after_backward(0)
    assert updater.updates == 1 and torch.equal(model[0].weight, w0) and bool(masks.masks[0].all())


@pytest.mark.parametrize("kind,options,name", [
    ("set", {"zeta": 0}, "method.zeta"), ("set", {"zeta": 1.0}, "method.zeta"),
    ("set", {"zeta": -0.1}, "method.zeta"),
    ("set", {"zeta": "0.3"}, "method.zeta"),
    ("rigl", {"alpha": 1.5}, "method.alpha"), ("rigl", {"alpha": 0.0}, "method.alpha"),
    ("rigl", {"delta_t": 0}, "method.delta_t"), ("rigl", {"delta_t": 2.5}, "method.delta_t"),
    ("rigl", {"t_end": 0}, "method.t_end"), ("rigl", {"t_end": 1.01}, "method.t_end"),
    ("rigl", {"t_end": float("nan")}, "method.t_end"),
])
def test_bad_options_refused(kind, options, name):
    with pytest.raises(UserError, match=name.replace(".", r"\.")) as e:
        check_options(kind, options)
    assert "\n" not in str(e.value)


def test_options_defaults():
    assert check_options("set", None) == {"zeta": 0.3}
    assert check_options("rigl", {"t_end": 1}) == {"alpha": 0.3, "delta_t": 100, "t_end": 1}

    class Method:  # a config object with the options as attributes, unset ones None
        alpha, delta_t, t_end = 0.5, None, None

    assert check_options("rigl", Method()) == {"alpha": 0.5, "delta_t": 100, "t_end": 0.75}
    with pytest.raises(UserError, match="unknown"):
        check_options("static", {})
    with pytest.raises(UserError, match=r"method\.within=io"):  # whole-kernel masks: not by single weights
        check_options("set", {"within": "io"})
    assert check_options("set", {"within": "all"}) == {"zeta": 0.3}


@pytest.mark.parametrize("kind", ["set", "rigl"])
def test_channels_last_convolution(kind):
    """A convolution's weights and mask in channels_last (as train.py lays them out for ResNets)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 3))
    model = model.to(memory_format=torch.channels_last)
    mask = torch.zeros(8 * 3 * 9, dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=torch.Generator().manual_seed(0))[:50]] = True
    masks = Masks(model, {"0": mask.view(8, 3, 3, 3)})
    masks.apply_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    updater = Updater(masks, model, opt, kind, {"zeta": 0.3, "delta_t": 2}, 2, 6, 0)
    start = masks.state()["0"]
    for step in range(12):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 6, 6)), torch.tensor([0, 1, 2, 0])).backward()
        updater.after_backward(step)
        opt.step()
        masks.apply_()
        assert int(masks.state()["0"].sum()) == 50 and not model[0].weight[~masks.state()["0"]].any()
    assert masks.masks[0].is_contiguous(memory_format=torch.channels_last)
    assert updater.updates > 0 and not torch.equal(masks.state()["0"], start)
