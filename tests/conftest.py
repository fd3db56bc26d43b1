"""Fixtures shared by several test modules, and the `slow` marker put on tests by name (SLOW below), so
`make test-fast` (-m 'not slow and not slurm and not gpu') runs the unit layer in under two minutes.
Plain helpers are in helpers.py, the dataset writers in data_files.py, fake result tables in fake_runs.py."""
import numpy as np
import pandas as pd
import pytest
import torch

from fake_runs import mlp_weights, row, write_sweep
from widen_cli import results

# Tests that take seconds each (training, subprocesses, big plans): `make test` runs them, `make test-fast`
# does not. As "file::test function" (every parametrisation of it), found with `--durations` on 2 cores.
SLOW = {
}


def pytest_collection_modifyitems(items):
    for item in items:
        if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread in this process and in every run it starts (helpers.ENV says why)."""
    monkeypatch.setenv("WIDEN_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    """Two sparse budgets with dense-wide rows and two seeds, an MLP grid, a bottleneck family, a kernel table."""
    root = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    dense = {}  # a dense model of one width and seed is one experiment, whichever sweep ran it: one accuracy

    def acc(method, w, base, s, low, high):
        drawn = rng.uniform(low, high)
        return dense.setdefault((w, s), drawn) if method == "dense" or w == base else drawn

    sweeps = []
    for base in (4, 8):
        rows = [row("sparse", w, base, s, acc("sparse", w, base, s, 0.5, 0.9)) for w in (base, 2 * base, 4 * base)
                for s in (0, 1)]
        rows += [row("dense", w, base, s, acc("dense", w, base, s, 0.5, 0.99)) for w in (2 * base, 4 * base)
                 for s in (0, 1)]
        sweeps.append(write_sweep(root / "runs" / f"digits-b{base}", rows, base_width=base))
    grid = [row("sparse", w, 5, 0, rng.uniform(0.8, 0.98), dataset="mnist", llc=c, n_weights=3970)
            for w in (5, 10, 20) for c in (1.0, 0.5, 0.2) if not (w == 5 and c < 1)]
    for r in grid:
        r["n_weights_dense"] = mlp_weights(r["width"], inputs=784)
        r["connectivity"] = 3970 / r["n_weights_dense"]
    sweeps.append(write_sweep(root / "runs" / "grid", grid, dataset="mnist", members=False))
    bottleneck = [row("linear-bottleneck", w, 8, 0, rng.uniform(0.5, 0.9)) for w in (8, 16)] + [
        row("dense", 8, 8, 0, dense[8, 0])]
    sweeps.append(write_sweep(root / "runs" / "linear", bottleneck, members=False))
    widths = np.array([4, 8, 16, 32])
    kernel = pd.DataFrame(dict(
        width=widths, base_width=4, n_weights=296, input_dim=64, outputs=10, connectivity=4 / widths,
        first_layer_connectivity=4 / widths, first_layer_weights=256, distribution="staggered", inputs="gaussian",
        dataset=None, budget=296, last_layer_weights=40, width_eq29=2 * (4 * 64) ** 0.5, min_eq29=widths == 32,
        reference="analytic", pairs=100, inits=10, mask_samples=8, seed=0,
        distance_empirical=1 / widths + 0.01, distance_empirical_se=0.002, distance_theorem1=1 / widths + 0.012,
        distance_theorem1_bias=1 / widths + 0.013, distance_eq6=1 / widths + 0.015, distance_leading_order=1 / widths))
    for name in ("empirical", "theorem1", "eq6", "leading_order"):
        kernel[f"min_{name}"] = kernel[f"distance_{name}"] == kernel[f"distance_{name}"].min()
    (root / "kernel-fig7").mkdir()
    results.write_table(kernel, root / "kernel-fig7" / "kernel_distance.parquet", "kernel")
    return root, sweeps
