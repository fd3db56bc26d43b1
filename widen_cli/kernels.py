"""Kernel distance of a sparse one-hidden-layer ReLU network (paper Section 3, App. F; docs/explanations/kernel-theory.md).

f(x) = (n d)^-1/2 v.[u x]_+ in NTK parameterisation, no biases. Its GP kernel at initialisation,
conditional on the first layer u, is Θ(x, y) = (1/(n d)) Σ_i [u_i.x]_+ [u_i.y]_+; the infinite-width
kernel is K_1(x, y)/d. Everything here is tensor maths on plain inputs; the CLI does the rest.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import pandas as pd
import torch
from omegaconf import OmegaConf

from widen_cli import budget, results
from widen_cli.budget import DENSE_LAST
from widen_cli.schema import MethodConfig, ModelConfig
from widen_cli.errors import UserError
from widen_cli.methods.sparse import SPARSE
from widen_cli.models import InputSpec

FIG7_WIDTHS = (8, 32, 128, 216, 328, 512, 635)
# Elements per intermediate (pairs x units) block: bounds memory at ~64 MB of float32 whatever the sizes.
CHUNK_ELEMENTS = 1 << 24
MASK_BLOCK = 64  # Theorem 1: pairs that share one set of Monte Carlo masks
DISTANCES = ("empirical", "theorem1", "eq6", "leading_order")
MAX_WIDTH = 1 << 16  # widths are searched up to this
# The network: a one-hidden-layer MLP without biases (NTK parameterisation), as models.mlp builds it.
NETWORK = ModelConfig(name="mlp", hidden_layers=1, bias=False, parameterization="ntk")
FIRST, LAST = "layers.0", "layers.1"


# ---------------------------------------------------------------- the networks: budget.py plans them

def network(width: int, n_weights: int, d: int, outputs: int, distribution: str) -> budget.Member:
    """The sparse network at `width` keeping exactly n_weights, spread over its two layers by the rule of
    that name: the same function, and so the same counts, as a sweep-width member (raises Infeasible)."""
    spec = InputSpec(channels=d, image_size=1, num_classes=outputs)  # d flat inputs
    if width < math.ceil(n_weights / (d + outputs)):
        raise budget.Infeasible(f"width {width} holds fewer than {n_weights:,} weights")
    return budget.sparse_member(NETWORK, spec, width, n_weights,
                                MethodConfig(name=SPARSE.name, distribution=distribution))


def first_layer_weights(m: budget.Member) -> int:
    return m.kept[FIRST]


def p1(m: budget.Member) -> float:
    """The first layer's connectivity: the only one Θ sees (it is conditional on the first layer)."""
    return m.kept[FIRST] / budget.numel(m.layers[FIRST])


def width_range(n_weights: int, d: int, outputs: int, distribution: str) -> tuple[int, int | None]:
    """Smallest and largest feasible width (None: none up to MAX_WIDTH)."""
    low = math.ceil(n_weights / (d + outputs))

    def feasible(width):
        try:
            return network(width, n_weights, d, outputs, distribution) is not None
        except budget.Infeasible:
            return False

    return low, budget.widest(feasible, low, MAX_WIDTH)


def plan(widths, n_weights: int, d: int, outputs: int, distribution: str) -> list[budget.Member]:
    """The family at one budget; impossible widths are refused with the valid range."""
    members, bad = [], []
    for n in widths:
        try:
            members.append(network(n, n_weights, d, outputs, distribution))
        except budget.Infeasible:
            bad.append(n)
    if bad:
        low, high = width_range(n_weights, d, outputs, distribution)
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        why = (" (the dense last layer must leave a first-layer weight; --distribution staggered lifts this cap)"
               if distribution == DENSE_LAST else "")
        raise UserError(f"width {', '.join(map(str, bad))} impossible for {n_weights:,} weights with "
                        f"input_dim {d}, {outputs} outputs and --distribution {distribution}{why}; valid widths: "
                        f"{valid}")
    return members


def default_widths(n_weights: int, d: int, outputs: int, distribution: str, count: int = 7) -> list[int]:
    """The paper's Figure 7 widths where they fit the budget, else `count` geometric steps to the largest
    (for rules without one, to the largest dense-last width: one first-layer weight left)."""
    low, high = width_range(n_weights, d, outputs, distribution)
    high = high if high is not None else width_range(n_weights, d, outputs, DENSE_LAST)[1]
    if all(low <= w <= high for w in FIG7_WIDTHS):
        return list(FIG7_WIDTHS)
    high = max(high, low)
    return sorted({round(low * (high / low) ** (i / (count - 1))) for i in range(count)})


# ---------------------------------------------------------------- closed forms

def arccos_kernels(xx: torch.Tensor, yy: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K_1, K_2 of eq. (5) from |x|^2, |y|^2, x.y (Cho & Saul with the paper's 1/(2π))."""
    norm = (xx * yy).sqrt()
    cos = torch.where(norm > 0, xy / norm.clamp_min(1e-300), torch.zeros_like(norm)).clamp(-1, 1)
    theta = torch.arccos(cos)
    sin = (1 - cos * cos).clamp_min(0).sqrt()
    j1 = sin + (math.pi - theta) * cos
    j2 = 3 * sin * cos + (math.pi - theta) * (1 + 2 * cos * cos)
    return norm * j1 / (2 * math.pi), xx * yy * j2 / (2 * math.pi)


def eq6(p: float, n: int, d: int) -> float:
    """The paper's approximation (6), valid for i.i.d. unit-variance inputs and p d >> 1."""
    return (0.25 * (p ** -0.5 - 1) ** 2 + d / n * (1 - 1 / math.pi ** 2)) / (4 * d)


def eq29_width(n_weights: int, d: int, outputs: int) -> float:
    """The paper's eq. (29): the width n* where eq. (6) is smallest at a fixed budget, continuous.

    The paper holds n p = c fixed, c = n_weights / (d + outputs) (the base width: the mean weight count
    over d + outputs). For sqrt(p) << 1, eq. (6) is then roughly (1/4) p^-1 + d p / c, smallest at
    p* = sqrt(c / (4 d)), so n* = c / p* = 2 sqrt(c d). The Figure 7 set-up (6,352 weights, d = 784,
    10 outputs) gives n* = 2 sqrt(8 * 784) = 158.4."""
    c = n_weights / (d + outputs)
    return c / math.sqrt(c / (4 * d))


def leading_order(p: float, n: int, d: int) -> float:
    """Theorem 1 to leading order for i.i.d. unit-variance inputs, x != y (docs/explanations/kernel-theory.md, section 8)."""
    return ((1 - 1 / math.pi ** 2) + 3 * (1 - p) / (d * p)) / (4 * n)


# ---------------------------------------------------------------- Monte Carlo over networks and masks

def _chunks(total: int, per_item: int):
    step = max(1, CHUNK_ELEMENTS // max(per_item, 1))
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


def gp_kernel(u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Θ(x_k, y_k) for R first layers u (R x n x d) and pairs x, y (P x d): a P x R matrix."""
    r, n, d = u.shape
    flat = u.reshape(r * n, d)
    out = torch.empty(len(x), r, dtype=torch.float64, device=x.device)
    for s in _chunks(len(x), r * n):
        hx = torch.relu(x[s] @ flat.T).view(-1, r, n)
        hy = torch.relu(y[s] @ flat.T).view(-1, r, n)
        out[s] = (hx * hy).sum(-1, dtype=torch.float64)
    return out / (n * d)


def first_layers(member: budget.Member, d: int, inits: int, generator: torch.Generator) -> torch.Tensor:
    """`inits` independent first layers, fresh mask and values each, as eq. (2): N(0, 1/p1) on the kept
    entries, which are exactly the member's first-layer count placed uniformly at random (the authors'
    code; the theory's Bernoulli mask differs only where very few weights survive). The read-out layer
    is not drawn: Θ is conditional on the first layer and the read-out weights (E v_i^2 = 1 at any
    connectivity) do not enter it.

    Drawn one after another, so the numbers do not depend on how many are held at once."""
    n, p, k = member.width, p1(member), first_layer_weights(member)
    layers = []
    for _ in range(inits):
        u = torch.randn(n * d, generator=generator) / math.sqrt(p)
        if k < n * d:
            mask = torch.zeros(n * d)
            mask[torch.randperm(n * d, generator=generator)[:k]] = 1
            u *= mask
        layers.append(u.view(n, d))
    return torch.stack(layers)


def reference_kernel(x: torch.Tensor, y: torch.Tensor, reference: int | None, generator: torch.Generator):
    """Θ^∞ on each pair: analytic K_1/d, or one dense width-N network at initialisation (the paper's)."""
    d = x.shape[1]
    if reference is None:
        return arccos_kernels(*_moments(x, y))[0] / d
    u = torch.randn(1, reference, d, generator=generator).to(x.device)
    return gp_kernel(u, x, y)[:, 0]


def empirical(x, y, ref, member: budget.Member, inits: int, generator) -> tuple[float, float]:
    """Mean over inits and pairs of (Θ - Θ^∞)^2, and its standard error over the inits."""
    group = max(1, CHUNK_ELEMENTS // (member.width * x.shape[1]))  # first layers held at once
    per_init = torch.cat([
        ((gp_kernel(first_layers(member, x.shape[1], len(g), generator).to(x.device), x, y)
          - ref[:, None]) ** 2).mean(0)
        for g in torch.arange(inits).split(group)
    ])
    se = per_init.std().item() / math.sqrt(inits) if inits > 1 else math.nan
    return per_init.mean().item(), se


def theorem1(x, y, p: float, n: int, samples: int, generator, reference: int | None
             ) -> tuple[float, float, float]:
    """Theorem 1 (eq. 3), averaged over the pairs: (bias^2 + variance, its standard error, bias^2).

    The Gaussian integrals are the arc-cosine kernels of the masked inputs; the sum over the 2^d masks
    is a Monte Carlo average over `samples` Bernoulli(p) masks per pair, fresh for every block of
    MASK_BLOCK pairs. The pairs of a block share their masks, so their mask noise does not average out
    over the pairs: it is correlated within the block and only averages over the blocks. The standard
    error is therefore the one of a mean over independent blocks (block sums, unequal last block
    allowed): it covers both the mask noise and the choice of pairs, i.e. what another seed would
    change. (A fresh mask per pair spreads ~8x less, but costs ~10x the time: more than the empirical
    column at every width; docs/explanations/kernel-theory.md, section 5.) NaN with a single block.
    The mask noise is removed from the squares, so a tiny bias can come out slightly negative.
    A dense width-N reference adds its variance.
    """
    d = x.shape[1]
    k1, k2 = arccos_kernels(*_moments(x, y))
    if p >= 1:
        t1, s2, t2 = k1, torch.zeros_like(k1), k2
    else:
        blocks = math.ceil(len(x) / MASK_BLOCK)
        t1, t2, s2 = (torch.empty_like(k1) for _ in range(3))
        for c in _chunks(blocks, d * (samples + 3 * MASK_BLOCK) + 3 * samples * MASK_BLOCK):  # per block
            lo, hi = c.start * MASK_BLOCK, min(c.stop * MASK_BLOCK, len(x))
            masks = torch.stack([torch.rand(samples, d, generator=generator) < p for _ in range(c.start, c.stop)])
            masks = masks.float().to(x.device)
            # per block of pairs: d x (3 pairs) columns x_i^2, y_i^2, x_i y_i, zero-padded to a whole block
            moments = torch.zeros((c.stop - c.start) * MASK_BLOCK, 3, d, device=x.device)
            xs, ys = x[lo:hi], y[lo:hi]
            torch.stack([xs * xs, ys * ys, xs * ys], 1, out=moments[:hi - lo])
            moments = moments.view(-1, MASK_BLOCK * 3, d).transpose(1, 2)
            # |x_s|^2, |y_s|^2 and x_s.y_s for every (mask, pair) of a block: one batched matmul
            a = torch.bmm(masks, moments).view(-1, samples, MASK_BLOCK, 3)
            a = a.permute(1, 0, 2, 3).reshape(samples, -1, 3)[:, :hi - lo]
            m1, m2 = arccos_kernels(a[..., 0], a[..., 1], a[..., 2])
            m1, m2 = m1.double() / p, m2.double() / p ** 2  # σ^2 = 1/p
            t1[lo:hi], t2[lo:hi] = m1.mean(0), m2.mean(0)  # K~_1,p and K~_2,p
            s2[lo:hi] = m1.var(0) / samples  # the Monte Carlo variance of t1
    bias = ((t1 - k1) ** 2 - s2) / d ** 2
    variance = (t2 - (t1 * t1 - s2)) / (d ** 2 * n)
    total = bias + variance
    if reference is not None:
        total = total + (k2 - k1 * k1) / (d ** 2 * reference)
    return total.mean().item(), block_se(total), bias.mean().item()


def block_se(values: torch.Tensor) -> float:
    """Standard error of values.mean() when each block of MASK_BLOCK consecutive values shares its
    masks: the blocks are the independent units (a cluster-robust SE; the last block may be partial)."""
    count = len(values)
    blocks = math.ceil(count / MASK_BLOCK)
    if blocks < 2:
        return math.nan
    padded = torch.zeros(blocks * MASK_BLOCK, dtype=values.dtype, device=values.device)
    padded[:count] = values
    sizes = torch.full((blocks,), float(MASK_BLOCK), dtype=values.dtype, device=values.device)
    sizes[-1] = count - (blocks - 1) * MASK_BLOCK
    residual = padded.view(blocks, MASK_BLOCK).sum(1) - sizes * values.mean()
    return math.sqrt((residual ** 2).sum().item() * blocks / (blocks - 1)) / count


# ---------------------------------------------------------------- inputs

def _moments(x, y):
    """|x|^2, |y|^2 and x.y of each pair, in float64."""
    return tuple((a * b).sum(1, dtype=torch.float64) for a, b in ((x, x), (y, y), (x, y)))


def gaussian_pairs(pairs: int, d: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(2, pairs, d, generator=generator)
    return z[0], z[1]


def data_pairs(images: torch.Tensor, pairs: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random distinct pairs of images, flattened and standardised per pixel (the paper's App. A)."""
    if len(images) < 2:
        raise UserError(f"need at least 2 images to form pairs, got {len(images)}")
    x = images.reshape(len(images), -1).double()
    std = x.std(0)
    x = torch.where(std > 0, (x - x.mean(0)) / std.clamp_min(1e-12), torch.zeros_like(x)).float()
    i = torch.randint(0, len(x), (pairs,), generator=generator)
    j = (i + torch.randint(1, len(x), (pairs,), generator=generator)) % len(x)  # never i itself
    return x[i], x[j]


# ---------------------------------------------------------------- the whole table

def distance_table(x, y, members: list[budget.Member], *, inits: int, mask_samples: int,
                   reference: int | None, seed: int, on_width=None) -> pd.DataFrame:
    """One row per width: empirical, Theorem 1, eq. (6) and leading order, on the same pairs; and the
    paper's eq. (29) optimum for the budget."""
    d = x.shape[1]
    ref = reference_kernel(x, y, reference, torch.Generator().manual_seed(seed + 7919))
    ref_excess = (1 - 1 / math.pi ** 2) / (4 * reference) if reference else 0.0
    rows = []
    for m in members:
        g = torch.Generator().manual_seed(seed * 1_000_003 + m.width)  # a width's numbers do not depend on the others
        emp, se = empirical(x, y, ref, m, inits, g)
        th, th_se, th_bias = theorem1(x, y, p1(m), m.width, mask_samples, g, reference)
        rows.append({
            "width": m.width, "n_weights": m.n_weights, "input_dim": d, "connectivity": m.connectivity,
            "first_layer_connectivity": p1(m), "first_layer_weights": first_layer_weights(m),
            "last_layer_weights": m.kept[LAST], "distribution": m.distribution, "budget": m.budget,
            "distance_empirical": emp, "distance_empirical_se": se,
            "distance_theorem1": th, "distance_theorem1_se": th_se, "distance_theorem1_bias": th_bias,
            "distance_eq6": eq6(p1(m), m.width, d) + ref_excess,
            "distance_leading_order": leading_order(p1(m), m.width, d) + ref_excess,
        })
        if on_width is not None:
            on_width(m)
    table = pd.DataFrame(rows)
    for name in DISTANCES:
        col = table[f"distance_{name}"]
        table[f"min_{name}"] = col == col.min()
    outputs = members[0].layers[LAST][0]
    table["width_eq29"] = eq29_width(members[0].budget, d, outputs)
    off = (table.width.map(math.log) - math.log(table.width_eq29.iloc[0])).abs()
    table["min_eq29"] = off == off.min()  # the listed width nearest n*, on the log scale the widths follow
    return table


# ---------------------------------------------------------------- the command

def family(cfg) -> list[budget.Member]:
    """The KernelConfig's members, refusing impossible widths before any data is read."""
    widths = cfg.widths or default_widths(cfg.n_weights, cfg.input_dim, cfg.outputs, cfg.distribution)
    return plan(widths, cfg.n_weights, cfg.input_dim, cfg.outputs, cfg.distribution)


def inputs(cfg, dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The input pairs, drawn from the seed: Gaussian vectors or test images of a dataset."""
    g = torch.Generator().manual_seed(cfg.seed)
    if dataset is None:
        x, y = gaussian_pairs(cfg.pairs, cfg.input_dim, g)
    else:
        from widen_cli.datasets.readers import load_tensors

        _, test = load_tensors(dataset)
        x, y = data_pairs(test.images, cfg.pairs, g)
    return x.to(device), y.to(device)


def run(cfg, dataset, device: torch.device, on_width=None) -> pd.DataFrame:
    """Compute the table for a KernelConfig and write <out>/<name>/kernel_distance.parquet. `dataset`
    (a DatasetConfig, None for Gaussian inputs) names the table's `dataset`, as a run's summary does."""
    members = family(cfg)
    run_dir = cfg.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to output folder {run_dir}: {e.strerror or e}") from None
    x, y = inputs(cfg, dataset, device)
    table = distance_table(x, y, members, inits=cfg.inits, mask_samples=cfg.mask_samples, reference=cfg.reference,
                           seed=cfg.seed, on_width=on_width)
    reference = "analytic" if cfg.reference is None else f"dense:{cfg.reference}"
    table = table.assign(base_width=pd.array([cfg.base_width] * len(table), dtype="Int64"), outputs=cfg.outputs,
                         inputs=cfg.inputs, dataset=None if dataset is None else dataset.name, reference=reference,
                         pairs=cfg.pairs, inits=cfg.inits, mask_samples=cfg.mask_samples,
                         seed=cfg.seed)[results.KERNEL_COLUMNS]
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    settings["widths"] = [m.width for m in members]
    results.write_text(OmegaConf.to_yaml(settings), run_dir / results.KERNEL_CONFIG_FILE)
    results.write_table(table, run_dir / results.KERNEL_FILE, "kernel")
    return table
