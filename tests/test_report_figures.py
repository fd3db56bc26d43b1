"""The report's figures checked on the numbers they draw (each Plot's data and the drawn artists), against
the runs they come from: training curves, standard errors and seed counts, axes, stale files."""
import numpy as np
import pandas as pd
import pytest

from fake_runs import row, write_sweep
from helpers import widen
from widen_cli import report, results
from widen_cli.report.axes import COLUMN
from widen_cli.report.figures import NAMES, fig_acc_vs_connectivity
from widen_cli.report.gains import fig_improvement_fraction, fig_widening_gain, widening_gains


def sem(values) -> float:
    values = np.asarray(values, dtype=float)
    return values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan


def error_bars(ax) -> list[tuple[float, float, float]]:
    """(x, centre, half length) of every error bar drawn on the axes."""
    bars = []
    for container in ax.containers:
        for segment in (container.lines[2][0].get_segments() if container.has_yerr else []):
            (x, lo), (_, hi) = segment
            bars.append((x, (lo + hi) / 2, (hi - lo) / 2))
    return bars


def test_training_curves_are_the_per_epoch_means_over_seeds(tmp_path):
    """A real sweep (2 seeds, 3 epochs): each family's curve at each width is the mean and standard error over
    seeds of the runs' metrics.parquet, and the drawn lines are those means."""
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 4, "--widths", "4,8", "--seeds", "0,1",
                "--epochs", 3, "--out", tmp_path / "runs", "--name", "s")
    assert res.exit_code == 0, res.output
    loaded = report.load([tmp_path / "runs"], lambda msg: None)
    plots = {p.name: p for p in report.figures(loaded)}
    gathered = pd.read_parquet(tmp_path / "runs" / "s" / results.RESULTS_FILE)
    metrics = pd.concat(pd.read_parquet(tmp_path / "runs" / "s" / r.run / results.METRICS_FILE).assign(
        method=r.method, width=r.width, seed=r.seed) for r in gathered.itertuples())
    lines = {("sparse", 4): "sparse b=4", ("sparse", 8): "sparse b=4", ("dense", 8): "dense"}
    for kind, name, scale in (("acc", "training_accuracy", 100), ("loss", "training_loss", 1)):
        plot = plots[name]
        data = plot.data.set_index(["line", "width", "epoch"])
        drawn = [tuple(np.round(l.get_ydata(), 6)) for ax in plot.figure.axes for l in ax.lines]
        assert len(data) == 3 * 3  # three (family, width) curves of three epochs
        for (method, width), line in lines.items():
            m = metrics[(metrics.method == method) & (metrics.width == width)]
            assert sorted(m.seed.unique()) == [0, 1]
            for split in ("test", "train"):
                per_epoch = m.groupby("epoch")[f"{split}_{kind}"]
                mean, err = scale * per_epoch.mean(), scale * per_epoch.agg(sem)
                cell = data.loc[line, width]
                assert cell[f"{split}_{kind}_mean"].to_numpy() == pytest.approx(mean.to_numpy())
                assert cell[f"{split}_{kind}_sem"].to_numpy() == pytest.approx(err.to_numpy())
                assert (cell.runs == 2).all()
                assert tuple(np.round(mean.to_numpy(), 6)) in drawn


def _digits(sweeps):
    """The digits runs of the fixture: both sparse budgets and the bottleneck sweep's dense baseline."""
    runs = pd.concat([sweeps[0], sweeps[1], sweeps[3]])
    dense = runs[(runs.method == "dense") | ((runs.method == "sparse") & (runs.width == runs.base_width))]
    return runs, dense.drop_duplicates(["width", "seed"])  # a dense model of one seed is one experiment


def test_widening_gains_and_fractions_carry_their_standard_errors(fake_results):  # noqa: F811
    root, sweeps = fake_results
    runs = report.load([root / "runs"], lambda msg: None).runs
    digits, dense = _digits(sweeps)
    acc = {w: 100 * d.sort_values("seed").best_test_acc.to_numpy() for w, d in dense.groupby("width")}
    gains = widening_gains(runs).set_index(["line", "width"])
    gain_plot, fraction_plot = fig_widening_gain(runs), fig_improvement_fraction(runs)
    for base in (4, 8):
        for width in (2 * base, 4 * base):
            sparse = 100 * digits[(digits.method == "sparse") & (digits.base_width == base)
                                  & (digits.width == width)].best_test_acc.to_numpy()
            g = gains.loc[(f"sparse b={base}", width)]
            assert (g.sparse_runs, g.dense_runs, g.baseline_runs) == (2, 2, 2)
            s, d, b = (sem(v) for v in (sparse, acc[width], acc[base]))
            assert g.gain_constant_weights_sem == pytest.approx(np.hypot(s, b))
            assert g.gain_growing_weights_sem == pytest.approx(np.hypot(d, b))
            # the ratio's error, to first order, by finite differences of f(s, d, b) = (s - b) / (d - b)
            f = lambda s_, d_, b_: (s_ - b_) / (d_ - b_)  # noqa: E731
            means, h = (sparse.mean(), acc[width].mean(), acc[base].mean()), 1e-6
            slopes = [(f(*[m + h * (i == j) for j, m in enumerate(means)]) - f(*means)) / h for i in range(3)]
            assert g.fraction_sem == pytest.approx(np.sqrt(sum((k * e) ** 2 for k, e in zip(slopes, (s, d, b)))),
                                                   rel=1e-4)
            assert g.fraction == pytest.approx(f(*means))
    # the bars drawn are these errors, centred on these means
    for plot, value in ((gain_plot, "gain_constant_weights"), (fraction_plot, "fraction")):
        bars = {(round(x, 6), round(c, 6)): e for ax in plot.figure.axes for x, c, e in error_bars(ax)}
        x = "width" if plot is gain_plot else "widening_factor"
        for r in plot.data.itertuples():
            assert bars[round(getattr(r, x), 6), round(getattr(r, value), 6)] == \
                pytest.approx(getattr(r, f"{value}_sem"))


def test_table_1_holds_the_standard_error_and_seed_count_of_every_cell(fake_results, tmp_path):  # noqa: F811
    root, sweeps = fake_results
    assert widen("report", root / "runs", "--out", tmp_path / "report").exit_code == 0
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index(["setting", "row"])
    digits, dense = _digits(sweeps)
    for width, d in dense.groupby("width"):
        cell = table.loc[("digits mlp", "dense")]
        assert cell[f"test_sem_w{width}"] == pytest.approx(100 * sem(d.best_test_acc), abs=1e-4)
        assert cell[f"seeds_w{width}"] == 2
    for (base, width), m in digits[(digits.method == "sparse") & (digits.width > digits.base_width)].groupby(
            ["base_width", "width"]):
        assert table.loc[("digits mlp", f"sparse b={base}"), f"test_sem_w{width}"] == \
            pytest.approx(100 * sem(m.best_test_acc), abs=1e-4)
    mnist = table.loc[("mnist mlp", "sparse b=5, last layer 0.5")]
    assert pd.isna(mnist.test_sem_w10) and mnist.seeds_w10 == 1  # one seed: no error to give
    d8 = dense[dense.width == 8].best_test_acc
    shown = f"{100 * d8.mean():.2f} ± {100 * sem(d8):.2f} (592, 2 seeds)"
    assert shown in (tmp_path / "report" / "table.md").read_text()


def test_a_second_report_into_the_same_folder_removes_the_first_reports_figures(fake_results, tmp_path):  # noqa: F811
    root, _ = fake_results
    out = tmp_path / "report"
    assert widen("report", root / "runs", root / "kernel-fig7", "--out", out).exit_code == 0
    first = {p.name for p in out.iterdir()}
    assert {"kernel_distance.png", "mlp_grid.svg", "table.csv", "table.md"} <= first
    mine = ["kernel_distance.txt", "notes.png", "mlp_grid.pdf"]  # the user's, beside the report's
    for name in mine:
        (out / name).write_text("mine")
    res = widen("report", root / "kernel-fig7", "--out", out)  # now only the kernel table
    assert res.exit_code == 0, res.output
    left = {p.name for p in out.iterdir()}
    assert left == {"kernel_distance.png", "kernel_distance.svg", "index.html", *mine}
    assert all((out / name).read_text() == "mine" for name in mine)
    assert {f"{n}.{fmt}" for n in NAMES for fmt in ("png", "svg")} >= {p for p in first if p.endswith((".png", ".svg"))}


def test_axes_at_paper_size(fake_results, tmp_path):  # noqa: F811
    """Panels one column wide; the connectivity axis ticked at every connectivity drawn; one scale for every
    kept-fraction panel."""
    root, sweeps = fake_results
    runs = report.load([root / "runs"], lambda msg: None).runs
    plot = fig_acc_vs_connectivity(runs)
    digits = plot.figure.axes[0]
    assert digits.get_title() == "digits mlp"
    assert sorted(digits.get_xticks()) == pytest.approx(sorted(plot.data[plot.data.setting == "digits mlp"]
                                                               .connectivity.round(2).unique()))
    assert len(digits.get_xticks()) == 3  # 0.25 too, not only the 0.5 and 1 a 1-2-5 log locator gives
    write_sweep(tmp_path / "wide", [row("sparse", w, 4, 0, 0.8) for w in (4, 64)], base_width=4)  # kept < 0.1
    write_sweep(tmp_path / "narrow", [row("sparse", w, 4, 0, 0.8) for w in (4, 8)], base_width=4)
    plots = report.figures(report.load([tmp_path], lambda msg: None))
    kept = next(p for p in plots if p.name == "layer_kept_fraction")
    assert [ax.get_yscale() for ax in kept.figure.axes] == ["log", "log"]
    for p in plots:
        columns = len({round(ax.get_position().x0, 2) for ax in p.figure.axes if ax.get_label() != "<colorbar>"})
        assert p.figure.get_size_inches()[0] <= COLUMN * max(columns, 1) + 1e-9, p.name
