"""Family-batched MLP training: the members of an MLP family train together as one stacked model.

Each member gets exactly what training it alone gives it (same initialisation and masks from its seed,
same batch order and augmentation from its seed, same SGD with momentum and weight decay, the shared
learning-rate schedule), to float tolerance, and still writes its own run folder with the same files.
`sweep-width` (local launcher) batches its MLP members this way.

Two stacks (widen_cli/models/stacked.py), chosen by method:
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

from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.console import Console

from widen_cli import checkpoint, datasets, hardware, lifecycle
from widen_cli.budget import Member
from widen_cli.identity import run_dir
from widen_cli.schema import RunConfig
from widen_cli.data import TensorLoader
from widen_cli.errors import Interrupted
from widen_cli.jobs import Job
from widen_cli.epochs import Epochs, interrupted
from widen_cli.lifecycle import EpochTotals, RunResult
from widen_cli.models import InputSpec, build_model
from widen_cli.models.mlp import MLP
from widen_cli.models.stacked import StackedMLP
from widen_cli.methods import method_of
from widen_cli.sparsity import Masks
from widen_cli.train import Totals, keep_weights, load_run_data, make_optimizer, run_training, train

CPU_EVAL_CHUNK = 256


def batch_key(run: RunConfig):
    """Runs with equal keys can train as one stacked model; None: this run trains alone.

    Same data, model options, recipe, device; sparse members of any width, dense members of one width.
    The recipe includes the learning rate: the stack has one optimiser, so a sweep over lrs (--lrs)
    batches per lr (a per-member lr would need its own SGD step, and a weight-decay term that scaling
    the loss cannot give). bf16 runs train alone (autocast would not reach the stacked layers the same way).
    """
    if (run.model.name != "mlp" or not method_of(run).batched or run.precision != "fp32"
            or datasets.get(run.dataset.name).layout != datasets.TENSOR):
        return None
    return (run.dataset, run.model, run.optim, run.device, run.method.name,
            run.width if method_of(run).dense else None)


def group(items: list, key) -> list[list]:
    """Items in batches of equal key(item) (first-seen order); items whose key is None alone."""
    batches: dict = {}
    for i, item in enumerate(items):
        k = key(item)
        batches.setdefault(("alone", i) if k is None else k, []).append(item)
    return list(batches.values())


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


def build(runs: list[RunConfig], members: list[Member], states: list[dict | None] | None = None) -> Stack:
    """Data, each member's initial model and masks exactly as `train.train` makes them, stacked;
    a member with a checkpoint in `states` has its weights and masks from it instead."""
    run = runs[0]
    states = states or [None] * len(runs)
    device = hardware.resolve_device(run.device)
    hardware.setup(device, next((s["threads"] for s in states if s is not None), None))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    train_loader, test_loader, spec = load_run_data(run, device, seeds[0])
    assert isinstance(train_loader, TensorLoader), "batch_key keeps streamed datasets out of batches"
    models, masks = [], []
    for r, member, state in zip(runs, members, states):
        torch.manual_seed(r.seed)
        model = build_model(r.model, r.width, spec, inner=member.inner, ranks=member.ranks).to(device)
        if state is None:
            masks.append(method_of(r).masks(r, model, member))
        else:  # a damaged checkpoint is refused in one line (checkpoint.py), as when resuming alone
            path = run_dir(r) / checkpoint.FILENAME
            checkpoint.check_fits(state, model, path)
            model.load_state_dict(state["model"])
            shapes = {n: torch.zeros(shape, dtype=torch.bool) for n, shape in member.layers.items()}
            masks.append(Masks(model, checkpoint.saved_masks(state, shapes, path)) if state["masks"] is not None else None)
        models.append(model)
    sparse = method_of(run).random_mask
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
    `train.run_training` writes (lifecycle.py owns it), and its checkpoint is a single run's (marked
    `batched`), so `widen train` can resume a member too.

    Finished members are read back. Members checkpointed by a stacked model resume in one again, with
    the fresh members (_train_in_stacks), and end as if never interrupted; a member checkpointed by a
    single run resumes alone, and a lone fresh member trains alone, as either would outside a batch.
    Members that another process is training (claims.py) are left out and waited for at the end.
    `seconds` and `wall_seconds` of each member are the batch's times divided by its number of members.
    """
    console = console or Console(stderr=True)
    assert len({batch_key(j.run) for j in jobs}) == 1 and batch_key(jobs[0].run) is not None, "not one batch"
    out: dict[int, RunResult] = {}
    later = []
    with ExitStack() as held:
        stacked: dict[int, lifecycle.Run] = {}
        for i, job in enumerate(jobs):
            run = held.enter_context(lifecycle.start(job, console, wait=False))
            if run.busy:
                later.append(i)
            elif run.result is not None:
                out[i] = run.result
            elif run.state is not None and not run.state.get("batched"):
                out[i] = train(run)
            else:
                stacked[i] = run
        if len(stacked) == 1 and next(iter(stacked.values())).state is None:
            [(i, run)] = stacked.items()
            out[i] = train(run)
        elif stacked:
            out.update(_train_in_stacks(stacked))
    for i in later:
        out[i] = run_training(jobs[i], console)
    return [out[i] for i in range(len(jobs))]


def _train_in_stacks(runs: dict[int, lifecycle.Run]) -> dict[int, RunResult]:
    """Train runs in stacked models, each from its checkpoint or from scratch. Runs saved at one epoch
    form one stack. Runs at different epochs (killed while the members' checkpoints were being written,
    or members added to an interrupted family): the furthest behind catch up first, stacked on their
    own, to the next epoch saved, and join the runs there, re-read from their checkpoints; so every
    member trains in a stacked model throughout, and once all are level, in one."""
    out, pending = {}, dict(runs)
    try:
        while pending:
            first = min(r.first for r in pending.values())
            behind = {i: r for i, r in pending.items() if r.first == first}
            until = min((r.saved for r in pending.values() if r.first > first), default=None)
            for (i, run), result in zip(behind.items(), _train_stack(list(behind.values()), until)):
                if result is None:
                    run.reload()  # its checkpoint is at `until` now
                else:
                    out[i] = result
                    del pending[i]
    except KeyboardInterrupt:  # name every unfinished member, not only the stack that was training
        raise Interrupted(interrupted([r for r in pending.values() if r.status != "diverged"])) from None
    return out


def _train_stack(runs: list[lifecycle.Run], until: int | None = None) -> list[RunResult | None]:
    """Runs saved at one epoch (or fresh) as one stacked model, to the end or to epoch `until`."""
    jobs, states = [r.job for r in runs], [r.state for r in runs]
    stack = build([j.run for j in jobs], [j.member for j in jobs], states)
    for i, (run, masks) in enumerate(zip(runs, stack.masks)):
        run.save_masks(masks)
        run.uses(next(stack.model.parameters()).device, stack.loaders[0], stack.test_loader, stack.val_loader)
        keep_weights(run, _member_model(stack, i, jobs[i].run), 0, initial=states[i] is None)
    model = stack.model
    opt, sched = make_optimizer(model, jobs[0].run.optim)
    if states[0] is not None:
        _restore(stack, opt, sched, states, jobs[0].run)
    title = describe([j.run for j in jobs])
    resumed = f", resuming after epoch {runs[0].saved}" if states[0] is not None else ""
    runs[0].console.print(f"{title}: {len(runs)} member{'s' if len(runs) > 1 else ''} in one stacked model"
                          f"{resumed}", highlight=False, soft_wrap=True)
    with Epochs(runs, title, until) as loop:
        for epoch in loop:
            for loader in stack.loaders:
                loader.set_epoch(epoch)
            lr = opt.param_groups[0]["lr"]
            tr_loss, tr_acc = _per_member(train_epoch(model, stack.loaders, opt))
            te_loss, te_acc = _per_member(evaluate(model, stack.test_loader))
            val = _per_member(evaluate(model, stack.val_loader)) if stack.val_loader is not None else ()
            sched.step()
            loop.end_epoch(lr, [EpochTotals(*t) for t in zip(tr_loss, tr_acc, te_loss, te_acc, *val)],
                           (_snapshot(stack, i, j.run, opt, sched) for i, j in enumerate(jobs)))
    return loop.finish([_member_model(stack, i, j.run) for i, j in enumerate(jobs)])


def _restore(stack: Stack, opt, sched, states: list[dict], run: RunConfig) -> None:
    """The stacked optimiser as the members' checkpoints left it: the learning rate and schedule they
    share (one epoch, from stacked models), each member's momentum in its slice; and the RNG state."""
    names = [n for n, _ in _member_model(stack, 0, run).named_parameters()]
    saved = opt.state_dict()
    saved["param_groups"][0].update({k: v for k, v in states[0]["optimizer"]["param_groups"][0].items()
                                     if k != "params"})
    momentum = [{names[k]: v["momentum_buffer"] for k, v in s["optimizer"]["state"].items()
                 if v.get("momentum_buffer") is not None} for s in states]
    if all(momentum):
        stacked = stack.model.stack_members(momentum)
        saved["state"] = {k: {"momentum_buffer": stacked[n]} for k, (n, _) in enumerate(stack.model.named_parameters())}
    opt.load_state_dict(saved)
    sched.load_state_dict(states[0]["scheduler"])
    torch.set_rng_state(states[0]["rng"]["torch"])  # nothing in a stack draws from it; as a single run resumes


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
    return dict(model=model, optimizer=member_opt, scheduler=member_sched, masks=stack.masks[i], batched=True)
