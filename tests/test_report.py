"""`widen report` on result tables written in the real on-disk layout (fake numbers, and one real tiny sweep)."""
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.image import imread
from typer.testing import CliRunner

from widen_cli import report, results
from widen_cli.cli import app
from widen_cli.results import SUMMARY_COLUMNS

runner = CliRunner()
RESULTS_COLUMNS = [*SUMMARY_COLUMNS, "widening_factor", "run"]
ALL_FIGURES = ["test_acc_vs_width", "train_acc_vs_width", "test_acc_vs_connectivity", "improvement_fraction",
               "bottleneck", "mlp_grid", "kernel_distance", "layer_kept_fraction"]


def widen(*args):
    return runner.invoke(app, [str(a) for a in args])


def mlp_weights(width, inputs=64, classes=10):
    return width * (inputs + classes)


def write_sweep(folder, rows, dataset="digits", method="sparse", base_width=8, members=True):
    """A sweep folder as sweep-width leaves it: results.parquet, plan.parquet and one folder per member."""
    folder.mkdir(parents=True)
    df = pd.DataFrame(rows)
    df["run"] = [f"{dataset}-mlp-{r.method}-w{r.width}-s{r.seed}-{i:08x}" for i, r in enumerate(df.itertuples())]
    results.write_table(df, folder / "results.parquet", RESULTS_COLUMNS)
    if members:
        for r in df.to_dict("records"):
            run_dir = folder / r["run"]
            run_dir.mkdir()
            results.write_table(pd.DataFrame([r]), run_dir / "summary.parquet", SUMMARY_COLUMNS)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(
                {"model": {"name": "mlp", "activation": "relu"},
                 "method": {"name": r["method"], "within": "all", "distribution": r["distribution"]}}))
    plan = df.drop_duplicates(["method", "width", "last_layer_connectivity"])
    results.write_table(pd.DataFrame(dict(
        width=plan.width, widening_factor=plan.widening_factor, method=plan.method, connectivity=plan.connectivity,
        n_weights=plan.n_weights, layers=[["layers.0", "layers.1"]] * len(plan),
        layer_kept_fraction=[[min(1.0, c * 0.9), min(1.0, c * 1.8)] for c in plan.connectivity])),
        folder / "plan.parquet")
    return df


def row(method, width, base_width, seed, acc, dataset="digits", llc=None, n_weights=None):
    dense = mlp_weights(width)
    n = n_weights or (dense if method == "dense" else mlp_weights(base_width))
    return dict(dataset=dataset, model="mlp", method=method, width=width, base_width=base_width, n_weights=n,
                n_weights_dense=dense, connectivity=n / dense, seed=seed, epochs=3, status="finished", best_test_acc=acc,
                final_test_acc=acc - 0.01, best_train_acc=acc + 0.02, final_train_acc=acc + 0.01, wall_seconds=1.0,
                widening_factor=width / base_width, distribution=None if method == "dense" else "staggered",
                last_layer_connectivity=llc, run="", activation="relu", within=None if method == "dense" else "all",
                identity=None)


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    """Two sparse budgets with dense-wide rows and two seeds, an MLP grid, a bottleneck family, a kernel table."""
    root = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    sweeps = []
    for base in (4, 8):
        rows = [row("sparse", w, base, s, rng.uniform(0.5, 0.9)) for w in (base, 2 * base, 4 * base) for s in (0, 1)]
        rows += [row("dense", w, base, s, rng.uniform(0.5, 0.99)) for w in (2 * base, 4 * base) for s in (0, 1)]
        sweeps.append(write_sweep(root / "runs" / f"digits-b{base}", rows, base_width=base))
    grid = [row("sparse", w, 5, 0, rng.uniform(0.8, 0.98), dataset="mnist", llc=c, n_weights=3970)
            for w in (5, 10, 20) for c in (1.0, 0.5, 0.2) if not (w == 5 and c < 1)]
    for r in grid:
        r["n_weights_dense"] = mlp_weights(r["width"], inputs=784)
        r["connectivity"] = 3970 / r["n_weights_dense"]
    sweeps.append(write_sweep(root / "runs" / "grid", grid, dataset="mnist", members=False))
    bottleneck = [row("linear-bottleneck", w, 8, 0, rng.uniform(0.5, 0.9)) for w in (8, 16)] + [
        row("dense", 8, 8, 0, 0.7)]
    sweeps.append(write_sweep(root / "runs" / "linear", bottleneck, members=False))
    widths = np.array([4, 8, 16, 32])
    kernel = pd.DataFrame(dict(
        width=widths, base_width=4, n_weights=296, input_dim=64, connectivity=4 / widths,
        first_layer_connectivity=4 / widths, allocation="staggered", inputs="gaussian", pairs=100, inits=10,
        distance_empirical=1 / widths + 0.01, distance_empirical_se=0.002, distance_theorem1=1 / widths + 0.012,
        distance_theorem1_bias=1 / widths + 0.013, distance_eq6=1 / widths + 0.015, distance_leading_order=1 / widths))
    (root / "kernel-fig7").mkdir()
    results.write_table(kernel, root / "kernel-fig7" / "kernel_distance.parquet")
    return root, sweeps


@pytest.fixture(scope="module")
def fake_report(fake_results):
    root, sweeps = fake_results
    res = widen("report", root / "runs", root / "kernel-fig7", "--out", root / "report")
    assert res.exit_code == 0, res.output
    return root / "report", sweeps, res.output


@pytest.mark.parametrize("name", ALL_FIGURES)
def test_every_figure_is_drawn_and_linked(fake_report, name):
    out, _, _ = fake_report
    png = out / f"{name}.png"
    assert png.stat().st_size > 10_000 and (out / f"{name}.svg").stat().st_size > 10_000
    image = imread(png)[..., :3]
    assert image.std() > 0.05 and (image.mean(axis=-1) < 0.5).mean() > 0.005  # real ink on a white page
    page = (out / "index.html").read_text()
    assert f"alt='{name}.png'" in page and f"data behind {name}.png" in page


def test_index_html_is_self_contained(fake_report):
    out, _, _ = fake_report
    page = (out / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(ALL_FIGURES)
    assert "<table" in page and "Table 1" in page


def test_table_csv_holds_the_means_of_the_inputs(fake_report):
    out, sweeps, output = fake_report
    table = pd.read_csv(out / "table.csv").set_index(["setting", "row"])
    runs = pd.concat(sweeps[:2])  # the two digits budgets
    digits = pd.concat([runs, sweeps[3]])  # the bottleneck family's dense baseline is a digits MLP too
    dense = digits[(digits.method == "dense") | ((digits.width == digits.base_width) & (digits.method == "sparse"))]
    for width, d in dense.groupby("width"):
        assert table.loc[("digits mlp", "dense"), f"test_acc_w{width}"] == \
            pytest.approx(100 * d.best_test_acc.mean(), abs=1e-4)
        assert table.loc[("digits mlp", "dense"), f"n_weights_w{width}"] == mlp_weights(width)
    for base in (4, 8):
        members = runs[(runs.method == "sparse") & (runs.base_width == base) & (runs.width > base)]
        for width, m in members.groupby("width"):
            assert len(m) == 2  # two seeds per cell
            assert table.loc[("digits mlp", f"sparse b={base}"), f"test_acc_w{width}"] == \
                pytest.approx(100 * m.best_test_acc.mean(), abs=1e-4)
            assert table.loc[("digits mlp", f"sparse b={base}"), f"n_weights_w{width}"] == mlp_weights(base)
        assert pd.isna(table.loc[("digits mlp", f"sparse b={base}"), f"test_acc_w{base}"])
    assert ("mnist mlp", "sparse b=5, last layer 0.5") in table.index
    assert "digits mlp" in output and "sparse b=4" in output  # the rich table
    assert (out / "table.md").read_text().startswith("| setting | row |")


def test_members_are_counted_once(fake_results):
    root, sweeps = fake_results
    res = report.load([root / "runs", root / "runs" / "digits-b4"], lambda msg: pytest.fail(msg))
    assert len(res.runs) == sum(len(s) for s in sweeps)  # results.parquet and member summaries: same runs
    assert len(res.plans) == 4 and res.runs.run_dir.is_unique


def test_real_sweep_report(tmp_path):
    sweep = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 4, "--widths", "4,8",
             "--seeds", "0,1", "--epochs", 1, "--out", tmp_path / "runs", "--name", "tiny"]
    assert widen(*sweep).exit_code == 0
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert "6 runs, 1 plans" in res.output  # 2 members + dense-wide, 2 seeds, each read once
    made = sorted(p.stem for p in (tmp_path / "report").glob("*.png"))
    assert made == sorted(["test_acc_vs_width", "train_acc_vs_width", "test_acc_vs_connectivity",
                           "improvement_fraction", "layer_kept_fraction"])
    gathered = pd.read_parquet(tmp_path / "runs" / "tiny" / "results.parquet")
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    sparse8 = gathered[(gathered.method == "sparse") & (gathered.width == 8)]
    assert table.loc["sparse b=4", "test_acc_w8"] == pytest.approx(100 * sparse8.best_test_acc.mean(), abs=1e-4)
    dense4 = gathered[gathered.width == 4]
    assert table.loc["dense", "test_acc_w4"] == pytest.approx(100 * dense4.best_test_acc.mean(), abs=1e-4)


def test_no_parquet_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    res = widen("report", tmp_path, "--out", tmp_path / "report")
    assert res.exit_code == 2 and "no Parquet files under" in res.output and "Traceback" not in res.output
    assert widen("report", tmp_path / "missing").exit_code == 2


def test_unknown_and_unreadable_tables_are_skipped_with_a_warning(fake_results, tmp_path):
    root, _ = fake_results
    odd = tmp_path / "odd"
    odd.mkdir()
    results.write_table(pd.DataFrame({"foo": [1, 2], "bar": ["a", "b"]}), odd / "results.parquet")
    (odd / "broken.parquet").write_bytes(b"not parquet at all")
    res = widen("report", odd, root / "kernel-fig7", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())  # rich may wrap long paths
    assert "skipping" in flat and "results.parquet: unknown columns" in flat
    assert "broken.parquet: not a readable Parquet table" in flat
    assert (tmp_path / "report" / "kernel_distance.png").exists()
    assert not (tmp_path / "report" / "table.csv").exists()  # no runs, no Table 1
    only_odd = widen("report", odd, "--out", tmp_path / "report2")
    assert only_odd.exit_code == 2 and "is a result table" in only_odd.output


def test_failed_members_are_left_out_with_a_warning(tmp_path):
    rows = [row("sparse", w, 4, 0, acc) for w, acc in ((4, 0.8), (8, 0.85))]
    failed = row("sparse", 16, 4, 0, float("nan"))
    failed.update(status="failed", best_train_acc=float("nan"), final_test_acc=float("nan"),
                  final_train_acc=float("nan"))
    write_sweep(tmp_path / "runs" / "b4", [*rows, failed], base_width=4, members=False)
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert "leaving out 1 failed run" in " ".join(res.output.split())
    table = pd.read_csv(tmp_path / "report" / "table.csv")
    assert "test_acc_w16" not in table and table.filter(like="test_acc_w8").notna().any().any()
