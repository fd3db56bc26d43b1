"""Kernel distance (widen_cli/kernels.py): closed forms against Monte Carlo, Theorem 1 against the
empirical distance, eq. (6) where it holds, and the `widen kernel-distance` command end to end."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from data_files import write_mnist
from widen_cli import kernels as K
from widen_cli import results
from widen_cli.cli import app
from widen_cli.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-core CI machine: no oversubscription
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- closed forms

def test_arccos_kernels_match_monte_carlo():
    g = gen(1)
    d, draws = 6, 400_000
    x, y = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    w = torch.randn(draws, d, generator=g, dtype=torch.float64)
    prod = torch.relu(w @ x) * torch.relu(w @ y)  # [w.x]_+ [w.y]_+
    k1, k2 = K.arccos_kernels((x @ x)[None], (y @ y)[None], (x @ y)[None])
    for closed, samples in ((k1, prod), (k2, prod ** 2)):
        se = samples.std() / math.sqrt(draws)
        assert abs(samples.mean() - closed.item()) < 4 * se


def test_arccos_kernels_special_values():
    x = torch.tensor([3.0, 4.0], dtype=torch.float64)  # |x| = 5
    k1, k2 = K.arccos_kernels(x @ x, x @ x, x @ x)
    assert k1.item() == pytest.approx(25 / 2) and k2.item() == pytest.approx(3 * 625 / 2)
    k1, k2 = K.arccos_kernels(x @ x, x @ x, -(x @ x))  # opposite vectors never both fire
    assert k1.item() == pytest.approx(0, abs=1e-9) and k2.item() == pytest.approx(0, abs=1e-9)
    k1, _ = K.arccos_kernels(torch.tensor(0.0), x @ x, torch.tensor(0.0))  # a zero input (fully masked)
    assert k1.item() == 0


# ---------------------------------------------------------------- budget

def test_plan_matches_the_papers_figure7_allocation():
    members = K.plan(K.FIG7_WIDTHS, 6352, 784, 10, "dense-last")
    assert [K.first_layer_weights(m) for m in members] == [6352 - 10 * n for n in K.FIG7_WIDTHS]
    assert K.p1(members[0]) == 1 and K.first_layer_weights(members[-1]) == 2  # 2 weights left at width 635
    uniform = K.plan([8, 635], 6352, 784, 10, "uniform")
    assert [K.p1(m) for m in uniform] == [1, pytest.approx(8 / 635)]
    assert K.default_widths(6352, 784, 10, "dense-last") == list(K.FIG7_WIDTHS)
    assert K.default_widths(592, 64, 10, "dense-last") == [8, 11, 16, 22, 30, 42, 59]


@pytest.mark.parametrize("widths, allocation", [([636], "dense-last"), ([7], "dense-last"), ([7], "uniform")])
def test_impossible_widths_are_refused(widths, allocation):
    with pytest.raises(UserError, match="valid widths: (>= )?8"):
        K.plan(widths, 6352, 784, 10, allocation)


# ---------------------------------------------------------------- Theorem 1 against experiment

def distances(d, widths, allocation, base=4, pairs=2000, inits=16, samples=64, seed=0, reference=None):
    g = gen(seed)
    x, y = K.gaussian_pairs(pairs, d, g)
    members = K.plan(widths, base * (d + 10), d, 10, allocation)
    return K.distance_table(x, y, members, inits=inits, mask_samples=samples, reference=reference, seed=seed)


def test_dense_empirical_distance_shrinks_like_one_over_width():
    rows = [distances(64, [n], "uniform", base=n, inits=12).iloc[0] for n in (4, 16, 64)]
    assert all(r.first_layer_connectivity == 1 for r in rows)
    emp = np.array([r.distance_empirical for r in rows])
    slope = np.polyfit(np.log([4, 16, 64]), np.log(emp), 1)[0]
    assert slope == pytest.approx(-1, abs=0.1)
    for r in rows:  # and at the variance Theorem 1 gives a dense layer
        assert abs(r.distance_empirical - r.distance_theorem1) < 4 * r.distance_empirical_se


@pytest.mark.parametrize("allocation, widths", [("dense-last", [4, 12, 24, 40]), ("uniform", [4, 12, 40, 120])])
def test_theorem1_agrees_with_the_empirical_distance(allocation, widths):
    # d = 100, budget 4 x 110: connectivities from 1 down to 0.01-0.03 (p d from 100 to 1-3)
    table = distances(100, widths, allocation)
    assert table.first_layer_connectivity.min() < 0.05
    z = (table.distance_empirical - table.distance_theorem1) / table.distance_empirical_se
    assert (z.abs() < 4).all(), table[["width", "distance_empirical", "distance_empirical_se", "distance_theorem1"]]
    assert (table.distance_theorem1_bias.abs() < 0.05 * table.distance_theorem1).all()  # Gaussian: bias negligible


def test_theorem1_standard_error_matches_its_spread_over_seeds():
    # 12 seeds (pairs and masks redrawn), a sparse width (p1 = 0.2): the reported s.e. is the spread
    # another seed gives. Masks shared by blocks of pairs make the spread several times what pairs
    # with independent masks would give, so an SE over pairs rather than blocks would fail this.
    rows = pd.concat([distances(100, [20], "uniform", pairs=1024, inits=2, samples=16, seed=s) for s in range(12)])
    assert rows.first_layer_connectivity.iloc[0] < 0.5
    spread, se = rows.distance_theorem1.std(), rows.distance_theorem1_se.mean()
    assert 0.6 < spread / se < 1.6, (spread, se)


def test_sparse_distance_differs_from_dense_at_the_same_width():
    # the mask adds variance: the same width at p = 0.05 is measurably further from the limit than dense
    # (32 inits: uniform masks now keep an exact count, a new random stream on which 16 left z = 4.7 of the
    # expected ~6 at seed 0)
    sparse = distances(100, [40], "uniform", base=2, inits=32).iloc[0]
    dense = distances(100, [40], "uniform", base=40, inits=32).iloc[0]
    assert sparse.distance_empirical - dense.distance_empirical > 5 * math.hypot(
        sparse.distance_empirical_se, dense.distance_empirical_se)
    assert sparse.distance_theorem1 > 1.3 * dense.distance_theorem1


def test_eq6_holds_when_p_d_is_large_and_not_when_small():
    table = distances(784, [8, 16, 400], "uniform", base=8, pairs=1000, inits=10)
    large, small = table.iloc[1], table.iloc[2]  # p d = 392 and 15.7
    assert large.distance_eq6 == pytest.approx(large.distance_theorem1, rel=0.03)
    assert abs(large.distance_eq6 - large.distance_empirical) < 4 * large.distance_empirical_se
    assert small.distance_eq6 > 3 * small.distance_empirical  # the disagreement docs/explanations/kernel-theory.md section 8 explains
    for r in table.itertuples():  # the leading-order formula holds throughout for Gaussian inputs
        assert r.distance_leading_order == pytest.approx(r.distance_theorem1, rel=0.07)


def test_dense_reference_adds_its_own_variance():
    analytic = distances(64, [8], "uniform", base=8, inits=12).iloc[0]
    dense = distances(64, [8], "uniform", base=8, inits=12, reference=8).iloc[0]
    # a width-8 dense reference is as noisy as the network itself: the distance about doubles
    assert dense.distance_theorem1 == pytest.approx(2 * analytic.distance_theorem1, rel=0.1)
    assert abs(dense.distance_empirical - dense.distance_theorem1) < 4 * dense.distance_empirical_se


def test_exact_count_masks_keep_exactly_the_count():
    member = K.plan([40], 4 * 110, 100, 10, "dense-last")[0]
    u = K.first_layers(member, 100, 3, gen())
    assert ((u != 0).sum(dim=(1, 2)) == K.first_layer_weights(member)).all()
    assert not torch.equal(u[0] != 0, u[1] != 0)  # a fresh mask for every initialisation


def test_a_widths_numbers_do_not_depend_on_the_others():
    alone = distances(64, [16], "dense-last", pairs=300, inits=4)
    together = distances(64, [4, 16, 29], "dense-last", pairs=300, inits=4)
    pd.testing.assert_frame_equal(alone.drop(columns=[c for c in alone if c.startswith("min_")]),
                                  together.iloc[[1]].reset_index(drop=True)
                                  .drop(columns=[c for c in alone if c.startswith("min_")]))


def test_chunking_does_not_change_the_numbers(monkeypatch):
    whole = distances(64, [4, 29], "dense-last", pairs=300, inits=4)
    monkeypatch.setattr(K, "CHUNK_ELEMENTS", 1000)  # forces many small blocks of pairs, inits and masks
    chunked = distances(64, [4, 29], "dense-last", pairs=300, inits=4)
    pd.testing.assert_frame_equal(whole, chunked, rtol=1e-5)


def test_data_pairs_are_standardised_per_pixel_and_distinct():
    g = gen()
    images = torch.randint(0, 256, (50, 1, 4, 4), generator=g, dtype=torch.uint8)
    images[:, :, 0, 0] = 7  # a constant pixel (like MNIST's borders) carries nothing
    x, y = K.data_pairs(images, 500, g)
    assert x.shape == (500, 16) and (x[:, 0] == 0).all()
    pool = images.reshape(50, -1).double()
    z = (pool - pool.mean(0)) / pool.std(0)
    rows = [int((z[:, 1:] - r[1:].double()).abs().sum(1).argmin()) for r in x[:20]]
    assert torch.allclose(x[:20, 1:].double(), z[rows, 1:], atol=1e-5)
    assert not (x == y).all(1).any()


# ---------------------------------------------------------------- the command

def test_command_writes_the_table(tmp_path):
    res = runner.invoke(app, ["kernel-distance", "--widths", "8,32,216,635", "--pairs", "200", "--inits", "3",
                              "--out", str(tmp_path), "--name", "fig7"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "fig7" / "kernel_distance.parquet")
    assert list(table.columns) == results.KERNEL_COLUMNS
    assert table.width.tolist() == [8, 32, 216, 635]
    assert (table.n_weights == 6352).all() and (table.base_width == 8).all() and (table.input_dim == 784).all()
    assert table.first_layer_weights.tolist() == [6272, 6032, 4192, 2]
    assert table.connectivity.tolist() == pytest.approx([6352 / (n * 794) for n in (8, 32, 216, 635)])
    assert set(table.distribution) == {"dense-last"} and set(table.inputs) == {"gaussian"}
    assert set(table.reference) == {"analytic"} and set(table.pairs) == {200} and set(table.inits) == {3}
    for name in K.DISTANCES:
        assert table[f"distance_{name}"].dtype == np.float64
        assert table[f"min_{name}"].sum() == 1
        assert table.width[table[f"min_{name}"]].item() == table.width[table[f"distance_{name}"].idxmin()]
    assert (table.distance_empirical_se > 0).all() and (table.distance_theorem1_se > 0).all()
    assert "minimising width" in res.output and "216" in res.output
    assert (tmp_path / "fig7" / "kernel.yaml").read_text().count("- 635") == 1


def test_command_single_width_and_budget_as_weights(tmp_path):
    res = runner.invoke(app, ["kernel-distance", "--width", "64", "--weights", "6352", "--distribution", "uniform",
                              "--reference", "dense:100", "--pairs", "100", "--inits", "2", "--out", str(tmp_path),
                              "--name", "one"])
    assert res.exit_code == 0, res.output
    row = pd.read_parquet(tmp_path / "one" / "kernel_distance.parquet").iloc[0]
    assert row.width == 64 and row.first_layer_connectivity == pytest.approx(6352 / (64 * 794))
    assert row.reference == "dense:100" and row.distribution == "uniform"


def test_command_on_mnist_files(tmp_path):
    write_mnist(tmp_path / "data", n_test=40)
    res = runner.invoke(app, ["kernel-distance", "--inputs", "mnist", "--data-root", str(tmp_path / "data"),
                              "--widths", "8,128", "--pairs", "200", "--inits", "2", "--out", str(tmp_path),
                              "--name", "mnist"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "mnist" / "kernel_distance.parquet")
    assert (table.input_dim == 784).all() and (table.inputs == "mnist").all() and (table.n_weights == 6352).all()


@pytest.mark.parametrize("args, message", [
    (["--widths", "8,700"], "width 700 impossible for 6,352 weights"),
    (["--widths", "4", "--distribution", "uniform"], "valid widths: >= 8"),
    (["--distribution", "bottom"], "--distribution must be one of staggered, dense-last, uniform, erk"),
    (["--inputs", "imagenet"], "unknown --inputs 'imagenet'"),
    (["--reference", "dense:x"], "--reference must be analytic or dense:N"),
    (["--pairs", "0"], "--pairs must be >= 1"),
    (["--base-width", "8", "--weights", "6352"], "not both"),
    (["--inputs", "digits", "--input-dim", "784"], "does not match digits images (64 values each)"),
    (["--inputs", "mnist", "--data-root", "/nonexistent/here"], "data root /nonexistent/here does not exist"),
])
def test_bad_options_exit_2_before_computing(tmp_path, args, message):
    res = runner.invoke(app, ["kernel-distance", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("n, eq6, leading", [(8, 2.808e-02, 2.808e-02), (158, 2.368e-03, 1.535e-03),
                                             (635, 5.341e-03, 4.719e-04), (3136, 2.824e-02, 1.909e-04)])
def test_formulas_reproduce_kernel_spec_protocol_t(n, eq6, leading):
    # an independent numpy evaluation (d = 784, both layers at p = 8/n): its eq. (6) and leading-order values
    assert K.eq6(8 / n, n, 784) == pytest.approx(eq6, rel=2e-3)
    assert K.leading_order(8 / n, n, 784) == pytest.approx(leading, rel=2e-3)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["kernel-distance", "--width", "8", "--pairs", "10", "--out", str(blocker)])
    assert res.exit_code == 2 and "cannot write to output folder" in res.output


# ---------------------------------------------------------------- eq. (29) and one allocation rule for both commands

def test_eq29_gives_the_papers_optimum_for_figure7():
    # the paper quotes n* ~ 158 for d = 784, 10 outputs, 6,352 weights
    assert K.eq29_width(6352, 784, 10) == pytest.approx(158, abs=1)
    # p* = sqrt(c / 4d) with c = n p = N / (d + outputs): the optimum moves with the budget as sqrt(c)
    assert K.eq29_width(4 * 6352, 784, 10) == pytest.approx(2 * K.eq29_width(6352, 784, 10))
    # and it is where eq. (6) under the paper's approximation (1/4)/p + d p / c is smallest
    n = np.arange(9, 3000)
    rough = 0.25 * n / 8 + 784 * 8 / n / 8
    assert abs(n[rough.argmin()] - K.eq29_width(6352, 784, 10)) <= 1


def test_command_reports_the_eq29_width(tmp_path):
    res = runner.invoke(app, ["kernel-distance", "--widths", "8,128,216", "--pairs", "50", "--inits", "2",
                              "--out", str(tmp_path), "--name", "eq29"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "eq29" / "kernel_distance.parquet")
    assert table.width_eq29.tolist() == pytest.approx([K.eq29_width(6352, 784, 10)] * 3)
    assert table.width[table.min_eq29].tolist() == [128]  # nearest 158.4 on the log scale
    assert "n* = 158.4" in res.output


@pytest.mark.parametrize("distribution", ["staggered", "dense-last", "uniform", "erk"])
def test_sweep_and_kernel_distance_keep_the_same_counts_per_layer(tmp_path, distribution):
    """The same rule name gives the same per-layer kept counts in sweep-width's plan.parquet and in
    kernel-distance's table (a one-hidden-layer MLP on digits: 64 inputs, 10 outputs, 592 weights)."""
    widths = "8,16,29,40,59"
    res = runner.invoke(app, ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", "8",
                              "--widths", widths, "--distribution", distribution, "--dry-run",
                              "--out", str(tmp_path), "--name", "sweep"])
    assert res.exit_code == 0, res.output
    sweep = pd.read_parquet(tmp_path / "sweep" / "plan.parquet")
    sweep = sweep[sweep.method == "sparse"].set_index("width")
    assert (sweep.distribution == distribution).all()
    res = runner.invoke(app, ["kernel-distance", "--inputs", "digits", "--base-width", "8", "--widths", widths,
                              "--distribution", distribution, "--pairs", "20", "--inits", "2", "--mask-samples", "2",
                              "--out", str(tmp_path), "--name", "kernel"])
    assert res.exit_code == 0, res.output
    kernel = pd.read_parquet(tmp_path / "kernel" / "kernel_distance.parquet").set_index("width")
    assert kernel.index.tolist() == sweep.index.tolist() == [8, 16, 29, 40, 59]
    for w in kernel.index:
        assert list(sweep.layer_kept[w]) == [kernel.first_layer_weights[w], kernel.last_layer_weights[w]], w
    assert (kernel.budget == 592).all() and (sweep.budget == 592).all() and (kernel.distribution == distribution).all()
    assert (kernel.dataset == "digits").all()
    # the planning function agrees too, at the Figure 7 budget, for MNIST's shapes
    for m in K.plan([8, 32, 216, 328, 512, 635], 6352, 784, 10, distribution):
        assert [K.first_layer_weights(m), m.kept["layers.1"]] == list(m.kept.values())
        assert sum(m.kept.values()) == 6352


def test_a_kernel_table_of_an_older_schema_is_skipped_with_a_warning(tmp_path):
    # As an unreleased earlier version wrote it: no distance_theorem1_se, schema version 2 in its metadata.
    import pyarrow.parquet as pq

    from widen_cli.report.load import load

    res = runner.invoke(app, ["kernel-distance", "--widths", "8,32", "--pairs", "128", "--inits", "2",
                              "--out", str(tmp_path), "--name", "old"])
    assert res.exit_code == 0, res.output
    path = tmp_path / "old" / results.KERNEL_FILE
    table = pq.read_table(path)
    old = table.drop_columns(["distance_theorem1_se"])
    pq.write_table(old.replace_schema_metadata({**table.schema.metadata, b"widen.schema_version": b"2"}), path)
    warnings = []
    with pytest.raises(UserError, match="none of the 1 Parquet files"):
        load([tmp_path / "old"], warnings.append)
    assert len(warnings) == 1 and "kernel table of schema version 2, older than this widen's" in warnings[0]
