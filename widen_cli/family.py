"""Family-batched MLP training: the members of an MLP family train together as one stacked model.

Each member gets exactly what training it alone gives it (same initialisation and masks from its seed,
same batch order and augmentation from its seed, same SGD with momentum and weight decay, the shared
learning-rate schedule), to float tolerance, and still writes its own run folder with the same files.
`sweep-width` (local launcher) batches its MLP members this way.

Two stacks, chosen by method:
- `sparse` members (any widths and seeds): every layer of every member is kept as its list of kept
  weights (row, column, value), and one `embedding_bag` per layer multiplies all members at once. The
  work is the family's kept weights times the batch, whatever the widths: a sparse member holds N(b)
  weights however wide it is, while masked dense compute would pay for the full width (100x the
  arithmetic at connectivity 0.01). Padding members to the widest would pay for it M times over.
- `dense` members of one width (its seeds): weights stacked as [M, out, in], one batched matmul per layer.

Activations are feature-major, [units of all members, batch], so a layer's input rows are the
previous layer's units of every member side by side.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from widen_cli import hardware, lifecycle, sparse_ops
from widen_cli.budget import Member
from widen_cli.config import RunConfig
from widen_cli.data import FOLDER_DATASETS, TensorLoader
from widen_cli.jobs import Job
from widen_cli.lifecycle import EpochTotals, RunResult
from widen_cli.models import InputSpec, build_model
from widen_cli.models.mlp import MLP, NTKLinear
from widen_cli.sparsity import sparsify
from widen_cli.train import Totals, keep_weights, load_run_data, make_optimizer, run_training, train_run

BATCHED_METHODS = ("sparse", "dense")
CPU_EVAL_CHUNK = 256


def batch_key(run: RunConfig):
    """Runs with equal keys can train as one stacked model; None: this run trains alone.

    Same data, model options, recipe, device; sparse members of any width, dense members of one width.
    The recipe includes the learning rate: the stack has one optimiser, so a sweep over lrs (--lrs)
    batches per lr (a per-member lr would need its own SGD step, and a weight-decay term that scaling
    the loss cannot give). bf16 runs train alone (autocast would not reach the stacked layers the same way).
    """
    if (run.model.name != "mlp" or run.method.name not in BATCHED_METHODS or run.precision != "fp32"
            or run.dataset.name in FOLDER_DATASETS):
        return None
    return (run.dataset, run.model, run.optim, run.device, run.method.name,
            run.width if run.method.name == "dense" else None)


def group(items: list, key) -> list[list]:
    """Items in batches of equal key(item) (first-seen order); items whose key is None alone."""
    batches: dict = {}
    for i, item in enumerate(items):
        k = key(item)
        batches.setdefault(("alone", i) if k is None else k, []).append(item)
    return list(batches.values())


# ---------------------------------------------------------------- stacked layers

class _SparseMatmul(torch.autograd.Function):
    """out = S @ x, S the layer's kept weights `w`, by embedding_bag: output unit r is the "bag" of the
    input rows its kept weights read, weighted by them. Backward: the gradient of each kept weight
    (embedding_bag's per-sample-weight gradient) and, where x needs one, S^T @ grad (embedding_bag over
    the transposed pattern), skipping embedding_bag's own slower dense backward (see sparse_ops)."""

    @staticmethod
    def forward(ctx, w, x, layer):
        ctx.save_for_backward(w, x)
        ctx.layer = layer
        return sparse_ops.bag_sum(x, layer.cols, layer.offsets, w)

    @staticmethod
    def backward(ctx, grad):
        w, x = ctx.saved_tensors
        layer = ctx.layer
        grad = grad.contiguous()
        grad_w = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_w = sparse_ops.bag_sum_weights_grad(grad, x, layer.cols, layer.offsets, layer.rows)
        if ctx.needs_input_grad[1]:
            grad_x = sparse_ops.bag_sum(grad, layer.rows_t, layer.offsets_t, w[layer.order_t])
        return grad_w, grad_x, None


def _offsets(keys: torch.Tensor, n: int) -> torch.Tensor:
    """CSR start of each of n groups, for keys sorted ascending."""
    counts = torch.bincount(keys, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])


class SparseLayer(nn.Module):
    """One layer of every member, holding only the kept weights: out[r] = sum_j values[j] x[col_j] over
    the kept weights j of unit r (all members' units stacked)."""

    def __init__(self, weights: list[torch.Tensor], masks: list[torch.Tensor], biases: list[torch.Tensor | None],
                 in_offsets: list[int], n_in: int, ntk: bool):
        super().__init__()
        rows, cols, values, divisors, self.spans = [], [], [], [], []
        out_offset, start = 0, 0
        for w, m, in_off in zip(weights, masks, in_offsets):
            r, c = m.nonzero(as_tuple=True)
            rows.append(r + out_offset)
            cols.append(c + in_off)
            values.append(w.detach()[r, c])
            divisors.append(torch.full_like(values[-1], math.sqrt(w.shape[1])))
            self.spans.append((start, start + len(r), out_offset, in_off, tuple(w.shape)))
            out_offset, start = out_offset + w.shape[0], start + len(r)
        rows, cols = torch.cat(rows), torch.cat(cols)
        assert bool((rows[1:] >= rows[:-1]).all()), "embedding_bag needs the weights grouped by unit"
        self.n_out = out_offset
        self.values = nn.Parameter(torch.cat(values))
        self.register_buffer("divisor", torch.cat(divisors) if ntk else None)  # NTK: w / sqrt(fan-in)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("offsets", _offsets(rows, self.n_out))
        order = torch.argsort(cols * self.n_out + rows)  # the transpose, for the input gradient
        self.register_buffer("order_t", order)
        self.register_buffer("rows_t", rows[order])
        self.register_buffer("offsets_t", _offsets(cols[order], n_in))
        self.bias = nn.Parameter(torch.cat(biases)) if biases[0] is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.values / self.divisor if self.divisor is not None else self.values
        out = _SparseMatmul.apply(w, x, self)
        return out if self.bias is None else out.add_(self.bias[:, None])

    def member_weight(self, i: int, values: torch.Tensor | None = None) -> torch.Tensor:
        """Member i's weight matrix, from the kept `values` (default: the weights; or e.g. their momentum)."""
        start, end, out_off, in_off, shape = self.spans[i]
        values = (self.values if values is None else values).detach()
        w = values.new_zeros(shape)
        w[self.rows[start:end] - out_off, self.cols[start:end] - in_off] = values[start:end]
        return w

    def member_bias(self, i: int, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        _, _, out_off, _, shape = self.spans[i]
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.detach()[out_off:out_off + shape[0]]


class DenseLayer(nn.Module):
    """One layer of M members of one width: weights [M, out, in], one batched matmul."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor | None], ntk: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([w.detach() for w in weights]))
        self.bias = nn.Parameter(torch.stack(biases)) if biases[0] is not None else None
        self.ntk = ntk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, n_out, n_in = self.weight.shape
        w = self.weight / math.sqrt(n_in) if self.ntk else self.weight
        x = x.view(m, n_in, -1)
        out = torch.bmm(w, x) if self.bias is None else torch.baddbmm(self.bias[:, :, None], w, x)
        return out.view(m * n_out, -1)

    def member_weight(self, i: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        return (self.weight if weight is None else weight).detach()[i]

    def member_bias(self, i: int, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.detach()[i]


class StackedMLP(nn.Module):
    """M MLPs as one module. Input: [G * d, B], the flattened batches of G data streams (one per seed)
    side by side; member i reads stream `streams[i]`. Output: logits [M, classes, B]."""

    def __init__(self, models: list[MLP], masks: list[dict[str, torch.Tensor] | None], streams: list[int],
                 n_streams: int, sparse: bool):
        super().__init__()
        first = models[0].layers
        self.relu, self.n_members, self.n_classes = models[0].relu, len(models), first[-1].out_features
        self.input_dim, self.streams, self.n_streams = first[0].in_features, list(streams), n_streams
        ntk = isinstance(first[0], NTKLinear)
        layers = []
        for i in range(len(first)):
            weights = [m.layers[i].weight for m in models]
            biases = [m.layers[i].bias for m in models]
            if sparse:
                masks_i = [mk[f"layers.{i}"] if mk is not None else torch.ones_like(w, dtype=torch.bool)
                           for mk, w in zip(masks, weights)]
                fan_in = [w.shape[1] for w in weights]
                in_offsets = ([s * self.input_dim for s in streams] if i == 0
                              else [sum(fan_in[:j]) for j in range(len(models))])
                n_in = n_streams * self.input_dim if i == 0 else sum(fan_in)
                layers.append(SparseLayer(weights, [mk.to(w.device) for mk, w in zip(masks_i, weights)],
                                          biases, in_offsets, n_in, ntk))
            else:
                layers.append(DenseLayer(weights, biases, ntk))
        self.layers = nn.ModuleList(layers)
        self.sparse = sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sparse and self.streams != list(range(self.n_streams)):  # dense: one input per member
            x = x.view(self.n_streams, self.input_dim, -1)[self.streams].view(-1, x.shape[-1])
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.relu and i < len(self.layers) - 1:
                x = torch.relu_(x) if self.sparse else F.relu(x)  # sparse: x is a fresh tensor
        return x.view(self.n_members, self.n_classes, -1)

    def member_state(self, i: int, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Member i's weights as its own MLP's state_dict (masked weights exactly zero). With `tensors`
        (stacked parameter name -> a tensor shaped like it, e.g. its momentum), the same slices of those."""
        state = {}
        for j, layer in enumerate(self.layers):
            weight = f"layers.{j}.{'values' if isinstance(layer, SparseLayer) else 'weight'}"
            if tensors is None or weight in tensors:
                state[f"layers.{j}.weight"] = layer.member_weight(i, None if tensors is None else tensors[weight]).clone()
            if layer.bias is not None and (tensors is None or f"layers.{j}.bias" in tensors):
                bias = None if tensors is None else tensors[f"layers.{j}.bias"]
                state[f"layers.{j}.bias"] = layer.member_bias(i, bias).clone()
        return state


# ---------------------------------------------------------------- training

def _inputs(batches: list[tuple[torch.Tensor, torch.Tensor]], streams: list[int]):
    """One batch per stream -> ([G * d, B] inputs, [M, B] labels of each member)."""
    x = torch.cat([xb.flatten(1).t() for xb, _ in batches])
    y = torch.stack([batches[s][1] for s in streams])
    return x, y


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy over its batch: [M]. Logits [M, classes, B], as cross_entropy
    takes a batch of "images" of B pixels: the softmax runs vectorised along the batch."""
    return F.cross_entropy(logits, y, reduction="none").mean(1)


def train_epoch(model: StackedMLP, loaders: list, opt) -> Totals:
    """One pass over every stream in lockstep; the summed loss gives each member its own gradient."""
    model.train()
    totals = Totals()
    for batches in zip(*loaders):
        x, y = _inputs(batches, model.streams)
        logits = model(x)
        losses = _losses(logits, y)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        totals.add(logits.detach(), y, losses.detach(), class_dim=1)
    return totals


@torch.no_grad()
def evaluate(model: StackedMLP, loader) -> Totals:
    model.eval()
    totals = Totals()
    for xb, yb in loader:
        # On CPU in slices of CPU_EVAL_CHUNK samples: embedding_bag's input table then stays in cache.
        chunk = CPU_EVAL_CHUNK if xb.device.type == "cpu" else len(yb)
        for xc, yc in zip(xb.split(chunk), yb.split(chunk)):
            x, y = _inputs([(xc, yc)] * model.n_streams, model.streams)
            logits = model(x)
            totals.add(logits, y, _losses(logits, y), class_dim=1)
    return totals


def _per_member(totals: Totals) -> tuple[list[float], list[float]]:
    n = max(totals.count, 1)
    return (totals.loss / n).tolist(), (totals.correct.double() / n).tolist()


@dataclass
class Stack:
    """A batch of runs made into one stacked model, with what training it needs."""

    model: StackedMLP
    loaders: list[TensorLoader]  # one training stream per distinct seed
    test_loader: TensorLoader
    val_loader: TensorLoader | None  # the held-out part of the training split (dataset.val_fraction)
    masks: list  # each member's Masks (sparse) or None, as training alone would draw them
    spec: InputSpec


def build(runs: list[RunConfig], members: list[Member]) -> Stack:
    """Data, each member's initial model and masks exactly as `train.train_run` makes them, stacked."""
    run = runs[0]
    device = hardware.resolve_device(run.device)
    hardware.setup(device)
    seeds = list(dict.fromkeys(r.seed for r in runs))
    train_loader, test_loader, spec = load_run_data(run, device, seeds[0])
    assert isinstance(train_loader, TensorLoader), "batch_key keeps streamed datasets out of batches"
    models, masks = [], []
    for r, member in zip(runs, members):
        torch.manual_seed(r.seed)
        model = build_model(r.model, r.width, spec, inner=member.inner, ranks=member.ranks).to(device)
        masks.append(sparsify(model, member, r.seed, r.method.rescale_init) if r.method.name == "sparse" else None)
        models.append(model)
    sparse = run.method.name == "sparse"
    stacked = StackedMLP(models, [mk.state() if mk is not None else None for mk in masks],
                         [seeds.index(r.seed) for r in runs], len(seeds), sparse).to(device)
    return Stack(stacked, [train_loader.reseeded(s) for s in seeds], test_loader, train_loader.val, masks, spec)


def describe(runs: list[RunConfig]) -> str:
    widths = sorted({r.width for r in runs})
    seeds = sorted({r.seed for r in runs})
    return (f"{runs[0].method.name} family, width{'s' if len(widths) > 1 else ''} "
            f"{','.join(map(str, widths))}, seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}")


def train_family(jobs: list[Job], console: Console | None = None) -> list[RunResult]:
    """Train jobs that share a `batch_key` as one stacked model; each member's run folder gets what
    `train.run_training` writes (lifecycle.py owns it), and its checkpoint is a single run's, so an
    interrupted member resumes alone with `widen train` or the same sweep command.

    Members that have finished are read back; members with a checkpoint resume alone; members that
    another process is training (claims.py) are left out of the batch and waited for at the end.
    `seconds` and `wall_seconds` of each member are the batch's times divided by its number of members.
    """
    console = console or Console(stderr=True)
    assert len({batch_key(j.run) for j in jobs}) == 1 and batch_key(jobs[0].run) is not None, "not one batch"
    out: dict[int, RunResult] = {}
    later = []
    with ExitStack() as held:
        fresh: list[tuple[int, lifecycle.Run]] = []
        for i, job in enumerate(jobs):
            opened = lifecycle.start(job, console, wait=False)
            if opened is None:
                later.append(i)
            elif isinstance(opened, RunResult):
                out[i] = opened
            elif held.enter_context(opened).state is not None:
                out[i] = train_run(opened)
            else:
                fresh.append((i, opened))
        if len(fresh) == 1:
            out[fresh[0][0]] = train_run(fresh[0][1])
        elif fresh:
            out.update(zip([i for i, _ in fresh], _train_batch([run for _, run in fresh])))
    for i in later:
        out[i] = run_training(jobs[i], console)
    return [out[i] for i in range(len(jobs))]


def _train_batch(runs: list[lifecycle.Run]) -> list[RunResult]:
    jobs = [r.job for r in runs]
    stack = build([j.run for j in jobs], [j.member for j in jobs])
    for i, (run, masks) in enumerate(zip(runs, stack.masks)):
        run.save_masks(masks)
        keep_weights(run, _member_model(stack, i, jobs[i].run), 0)
    model = stack.model
    opt, sched = make_optimizer(model, jobs[0].run.optim)

    def step(epoch: int, progress) -> tuple[float, list[EpochTotals]]:
        for loader in stack.loaders:
            loader.set_epoch(epoch)
        lr = opt.param_groups[0]["lr"]
        tr_loss, tr_acc = _per_member(train_epoch(model, stack.loaders, opt))
        te_loss, te_acc = _per_member(evaluate(model, stack.test_loader))
        val = _per_member(evaluate(model, stack.val_loader)) if stack.val_loader is not None else ()
        sched.step()
        return lr, [EpochTotals(*t) for t in zip(tr_loss, tr_acc, te_loss, te_acc, *val)]

    return lifecycle.drive(runs, describe([j.run for j in jobs]), step,
                           lambda i: _snapshot(stack, i, jobs[i].run, opt, sched),
                           lambda i: _member_model(stack, i, jobs[i].run))


def _member_model(stack: Stack, i: int, run: RunConfig) -> MLP:
    """Member i as the plain MLP that training it alone would have."""
    model = build_model(run.model, run.width, stack.spec).to(hardware.resolve_device(run.device))
    model.load_state_dict(stack.model.member_state(i))
    return model


def _snapshot(stack: Stack, i: int, run: RunConfig, opt, sched) -> dict:
    """Member i's end-of-epoch state in a single run's format: its weights, its slices of the
    momentum buffers, the shared schedule and its masks."""
    model = _member_model(stack, i, run)
    member_opt, member_sched = make_optimizer(model, run.optim)
    member_sched.load_state_dict(sched.state_dict())
    for group in member_opt.param_groups:
        group["lr"] = opt.param_groups[0]["lr"]
    buffers = {name: opt.state[p]["momentum_buffer"] for name, p in stack.model.named_parameters()
               if "momentum_buffer" in opt.state.get(p, {})}
    if buffers:
        momentum = stack.model.member_state(i, buffers)
        for name, p in model.named_parameters():
            if name in momentum:
                member_opt.state[p]["momentum_buffer"] = momentum[name]
    masks = stack.masks[i]
    return dict(model=model, optimizer=member_opt, scheduler=member_sched,
                masks=masks.state() if masks is not None else None)
