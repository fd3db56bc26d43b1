"""`widen report` on result tables written in the real on-disk layout (fake numbers, and one real tiny sweep)."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fake_runs import member_run, mlp_weights, row, write_sweep
from helpers import widen
from widen_cli import report, results
from widen_cli.identity import identity_of, run_dir

ALL_FIGURES = ["test_acc_vs_width", "train_acc_vs_width", "test_acc_vs_connectivity", "improvement_fraction",
               "widening_gain", "bottleneck", "mlp_grid", "kernel_distance", "layer_kept_fraction"]


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
    dense = dense.drop_duplicates(["width", "seed"])  # one experiment, however many sweeps ran it
    for width, d in dense.groupby("width"):
        assert table.loc[("digits mlp", "dense"), f"seeds_w{width}"] == 2
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
                           "improvement_fraction", "widening_gain", "layer_kept_fraction",
                           "training_accuracy", "training_loss"])
    gathered = pd.read_parquet(tmp_path / "runs" / "tiny" / "results.parquet")
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    sparse8 = gathered[(gathered.method == "sparse") & (gathered.width == 8)]
    assert table.loc["sparse b=4", "test_acc_w8"] == pytest.approx(100 * sparse8.best_test_acc.mean(), abs=1e-4)
    dense4 = gathered[gathered.width == 4]
    assert table.loc["dense", "test_acc_w4"] == pytest.approx(100 * dense4.best_test_acc.mean(), abs=1e-4)


def test_a_copied_sweep_folder_counts_each_seed_once(tmp_path):
    """A real two-method sweep and a backup copy of its folder beside it: every cell holds one sample per
    seed, with the mean of one run per seed."""
    import shutil

    res = widen("sweep-width", "--dataset", "digits", "--methods", "sparse,pruned", "--base-width", 4, "--widths",
                "4,8", "--seeds", "0,1", "--epochs", 1, "--out", tmp_path / "runs", "--name", "s")
    assert res.exit_code == 0, res.output
    shutil.copytree(tmp_path / "runs" / "s", tmp_path / "runs" / "s-backup")
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "16 runs (8 of them repeat another's experiment, counted once)" in flat  # 4 members, 2 seeds, twice
    assert "different numbers" not in flat  # the copies agree
    gathered = pd.read_parquet(tmp_path / "runs" / "s" / results.RESULTS_FILE)
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    for line, method, width in (("dense", "sparse", 4), ("dense", "dense", 8), ("sparse b=4", "sparse", 8),
                                ("pruned magnitude b=4", "pruned", 8)):
        runs = gathered[(gathered.method == method) & (gathered.width == width)]
        assert sorted(runs.seed) == [0, 1]
        assert table.loc[line, f"seeds_w{width}"] == 2
        assert table.loc[line, f"test_acc_w{width}"] == pytest.approx(100 * runs.best_test_acc.mean(), abs=1e-4)
    assert "(592, 2 seeds)" in (tmp_path / "report" / "table.md").read_text()
    drawn = next(p for p in report.figures(report.load([tmp_path / "runs"], lambda _: None))
                 if p.name == "test_acc_vs_width").data
    assert set(drawn.runs) == {2}


def test_repeats_that_disagree_are_named_and_counted_once(tmp_path):
    first = write_run(tmp_path / "a", 0.6, "digits", "sparse", 8, 4, 0, epochs=3)
    write_run(tmp_path / "a", 0.7, "digits", "sparse", 8, 4, 1, epochs=3)
    again = write_run(tmp_path / "b", 0.9, "digits", "sparse", 8, 4, 0, epochs=3)  # seed 0 again, other numbers
    res = widen("report", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = "".join(res.output.split())  # rich wraps long paths anywhere
    warning = "1experiment(s)wererunmorethanonce(sameidentityandseed)withdifferentnumbers"
    assert flat.count(warning) == 1
    assert f"{run_dir(first)}(test60.00)vs{run_dir(again)}(test90.00)".replace(" ", "") in flat
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    assert table.loc["sparse b=4", "seeds_w8"] == 2
    assert table.loc["sparse b=4", "test_acc_w8"] == pytest.approx(65.0)  # the first run of seed 0, and seed 1


def test_no_parquet_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    res = widen("report", tmp_path, "--out", tmp_path / "report")
    assert res.exit_code == 2 and "no Parquet files under" in res.output and "Traceback" not in res.output
    assert widen("report", tmp_path / "missing").exit_code == 2


def test_unknown_and_unreadable_tables_are_skipped_with_a_warning(fake_results, tmp_path):
    root, _ = fake_results
    odd = tmp_path / "odd"
    odd.mkdir()
    pd.DataFrame({"foo": [1, 2], "bar": ["a", "b"]}).to_parquet(odd / "results.parquet")  # not widen's
    (odd / "broken.parquet").write_bytes(b"not parquet at all")
    res = widen("report", odd, root / "kernel-fig7", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())  # rich may wrap long paths
    assert "skipping" in flat and "results.parquet: no widen table kind in its metadata" in flat
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


def test_interrupted_members_are_left_out_with_a_warning(tmp_path):
    """An interrupted sweep's results.parquet lists its unfinished members (status interrupted, no accuracies)."""
    stopped = row("sparse", 16, 4, 0, float("nan"))
    stopped.update(status="interrupted", best_train_acc=float("nan"), final_test_acc=float("nan"),
                   final_train_acc=float("nan"))
    write_sweep(tmp_path / "runs" / "b4", [row("sparse", 4, 4, 0, 0.8), stopped], base_width=4, members=False)
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert "leaving out 1 interrupted run" in " ".join(res.output.split())
    assert "test_acc_w16" not in pd.read_csv(tmp_path / "report" / "table.csv")


def write_run(out, acc, *member, epochs):
    """A finished `widen train` run folder: metrics.parquet and summary.parquet through the real write path."""
    run = member_run(*member, epochs=epochs, out=out)
    run_dir(run).mkdir(parents=True)
    metrics = pd.DataFrame(dict(epoch=range(1, epochs + 1), lr=0.1, train_loss=0.5, train_acc=acc + 0.01,
                                test_loss=0.6, test_acc=np.linspace(acc / 2, acc, epochs), seconds=0.1))
    results.write_table(metrics, run_dir(run) / results.METRICS_FILE, "metrics")
    summary = row(run.method.name, run.width, run.base_width, run.seed, acc, dataset=run.dataset.name, epochs=epochs)
    results.write_table(pd.DataFrame([summary]), run_dir(run) / results.SUMMARY_FILE, "summary")
    return run


def test_runs_that_differ_in_more_than_the_seed_are_not_averaged(tmp_path):
    """The same member trained for 10 and for 400 epochs (two seeds each): two settings, never one mean."""
    accs = {10: (0.60, 0.64), 400: (0.90, 0.94)}
    for epochs, (a0, a1) in accs.items():
        for seed, acc in enumerate((a0, a1)):
            write_run(tmp_path / "runs", acc, "digits", "sparse", 8, 4, seed, epochs=epochs)
        write_run(tmp_path / "runs", 0.5, "digits", "sparse", 4, 4, 0, epochs=epochs)  # the dense baseline
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert flat.count("kept apart, not averaged") == 1 and "differ in optim.epochs:" in flat
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index(["setting", "row"])
    assert sorted(table.index) == [("digits mlp, epochs=10", "dense"), ("digits mlp, epochs=10", "sparse b=4"),
                                   ("digits mlp, epochs=400", "dense"), ("digits mlp, epochs=400", "sparse b=4")]
    for epochs, pair in accs.items():
        assert table.loc[(f"digits mlp, epochs={epochs}", "sparse b=4"), "test_acc_w8"] == \
            pytest.approx(100 * np.mean(pair), abs=1e-4)
    loaded = report.load([tmp_path / "runs"], lambda msg: None)
    drawn = next(p for p in report.figures(loaded) if p.name == "test_acc_vs_width").data
    sparse8 = drawn[(drawn.line == "sparse b=4") & (drawn.width == 8)].set_index("setting")
    assert sparse8.runs.to_dict() == {"digits mlp, epochs=10": 2, "digits mlp, epochs=400": 2}
    assert sparse8.test_mean.to_dict() == pytest.approx(
        {f"digits mlp, epochs={e}": 100 * np.mean(pair) for e, pair in accs.items()})


def test_a_differing_method_option_splits_the_family(tmp_path):
    """Sparse members with and without init rescaling: two families (lines) in one setting."""
    for rescale, acc in ((True, 0.8), (False, 0.6)):
        run = member_run("digits", "sparse", 8, 4, 0, out=tmp_path / "runs")
        run = replace(run, method=replace(run.method, rescale_init=rescale))
        run_dir(run).mkdir(parents=True)
        summary = row("sparse", 8, 4, 0, acc)
        summary["identity"] = json.dumps(identity_of(run), sort_keys=True)
        results.write_table(pd.DataFrame([summary]), run_dir(run) / results.SUMMARY_FILE, "summary")
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert "differ in method.rescale_init:" in " ".join(res.output.split())
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    assert table.test_acc_w8.to_dict() == pytest.approx({"sparse b=4, rescale_init=True": 80.0,
                                                         "sparse b=4, rescale_init=False": 60.0})


OLD_SUMMARY_COLUMNS = results.SUMMARY_COLUMNS[:results.SUMMARY_COLUMNS.index("wall_seconds") + 1]


def test_tables_without_a_kind_or_of_an_older_schema_are_skipped_with_a_warning(tmp_path):
    """Only the tables this widen writes are read (0.1.0 is the first release): one without a kind in its
    metadata, or of an older schema version, is skipped with a warning; the run beside them is reported."""
    import pyarrow.parquet as pq

    old = pd.DataFrame([row("sparse", w, 4, s, 0.7 + 0.01 * s + 0.1 * (w == 8)) for w in (4, 8) for s in (0, 1)])
    old["run"] = [f"old-{i}" for i in range(len(old))]
    (tmp_path / "runs" / "old").mkdir(parents=True)
    old[[*OLD_SUMMARY_COLUMNS, "widening_factor", "distribution", "last_layer_connectivity", "run", "error"]] \
        .to_parquet(tmp_path / "runs" / "old" / results.RESULTS_FILE, index=False)
    new = write_run(tmp_path / "runs", 0.5, "digits", "sparse", 8, 4, 0, epochs=3)
    older = tmp_path / "runs" / "older"
    older.mkdir()
    table = pq.read_table(run_dir(new) / results.SUMMARY_FILE)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"widen.schema_version": b"1"}),
                   older / results.SUMMARY_FILE)
    res = widen("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "old/results.parquet: no widen table kind in its metadata" in flat
    assert "summary table of schema version 1, older than this widen's" in flat
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index(["setting", "row"])
    assert list(table.index) == [("digits mlp", "sparse b=4")]
    assert table.loc[("digits mlp", "sparse b=4"), "test_acc_w8"] == pytest.approx(50.0)


def test_a_table_of_a_newer_schema_is_skipped_with_a_warning(fake_results, tmp_path):
    import pyarrow.parquet as pq

    root, _ = fake_results
    table = pq.read_table(root / "runs" / "linear" / results.RESULTS_FILE)
    newer = tmp_path / "newer"
    newer.mkdir()
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"widen.schema_version": b"99"}),
                   newer / results.RESULTS_FILE)
    res = widen("report", newer, root / "kernel-fig7", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    ours = results.TABLES["results"].version
    assert f"results table of schema version 99, newer than this widen's {ours}" in " ".join(res.output.split())
    assert not (tmp_path / "report" / "table.csv").exists()


def _dense_models(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows.method == "dense") | ((rows.method == "sparse") & (rows.width == rows.base_width)
                                            & (rows.connectivity >= 1))]


def test_figure_12_gains_from_widening_at_constant_and_growing_weight_count(fake_results):
    from widen_cli.report.gains import fig_widening_gain, widening_gain_data

    root, sweeps = fake_results
    runs = report.load([root / "runs"], lambda msg: None).runs
    data = widening_gain_data(runs).set_index(["line", "width"])
    digits = pd.concat([sweeps[0], sweeps[1], sweeps[3]])  # the bottleneck family's dense baseline is digits too
    dense = _dense_models(digits).drop_duplicates(["width", "seed"]).groupby("width").best_test_acc.mean() * 100
    for base in (4, 8):
        sparse = sweeps[0 if base == 4 else 1]
        sparse = sparse[(sparse.method == "sparse") & (sparse.width > base)].groupby("width").best_test_acc.mean() * 100
        for width, acc in sparse.items():
            row = data.loc[(f"sparse b={base}", width)]
            assert row.baseline == pytest.approx(dense[base])
            assert row.gain_constant_weights == pytest.approx(acc - dense[base])
            assert row.gain_growing_weights == pytest.approx(dense[width] - dense[base])
            assert (row.n_weights_sparse, row.n_weights_dense) == (mlp_weights(base), mlp_weights(width))
    assert len(data) == 4  # two wider widths per budget; the MNIST grid (last layer fixed) is not a family here
    drawn = fig_widening_gain(runs)
    assert drawn.name == "widening_gain" and drawn.data.equals(widening_gain_data(runs))


def test_figure_4_colour_scale_is_centred_on_the_dense_baseline_and_widths_are_categories(fake_results):
    from widen_cli.report.figures import fig_mlp_grid, mlp_grid_data

    root, sweeps = fake_results
    runs = report.load([root / "runs"], lambda msg: None).runs
    data = mlp_grid_data(runs)
    grid = sweeps[2]
    baseline = 100 * grid[(grid.width == 5) & (grid.last_layer_connectivity == 1.0)].best_test_acc.mean()
    assert np.allclose(data.baseline, baseline)
    # Equally spaced categories, in width order and in last-layer connectivity order.
    assert dict(zip(data.width, data.x)) == {5: 0, 10: 1, 20: 2}
    assert dict(zip(data.last_layer_connectivity, data.y)) == {0.2: 0, 0.5: 1, 1.0: 2}
    cell = data[(data.width == 10) & (data.last_layer_connectivity == 0.5)].test_mean.item()
    assert cell == pytest.approx(100 * grid[(grid.width == 10) & (grid.last_layer_connectivity == 0.5)]
                                 .best_test_acc.mean())
    plot = fig_mlp_grid(runs)
    norm = plot.figure.axes[0].collections[0].norm
    assert norm.vcenter == pytest.approx(baseline) and norm.vmax == pytest.approx(data.test_mean.max())
    assert plot.data.equals(data)
def test_kernel_overlay_joins_only_matching_families(tmp_path):
    """Real kernel-distance tables and real tiny sweeps over two datasets, two budgets and two allocation rules:
    each kernel table gets exactly the runs of its family (dataset, budget, rule), checked on the figure's data."""
    tiny = ["--epochs", 1, "--seeds", 0, "--no-dense-wide"]
    sweeps = {  # name -> sweep-width options
        "digits-b4-dense-last": ["--dataset", "digits", "--base-width", 4, "--widths", "4,8,16"],
        "digits-b4-uniform": ["--dataset", "digits", "--base-width", 4, "--widths", "4,8,16", "--distribution",
                              "uniform"],
        "digits-b8-llc1": ["--dataset", "digits", "--base-width", 8, "--widths", "8,16,32",
                           "--last-layer-connectivity", "1.0"],  # a dense classifier: dense-last's networks
        "digits-b8-llc05": ["--dataset", "digits", "--base-width", 8, "--widths", "16,32",
                            "--last-layer-connectivity", "0.5"],  # no rule: drawn over nothing
        "synthetic-b4": ["--dataset", "synthetic", "--base-width", 4, "--widths", "4,8", "dataset.image_size=8",
                         "dataset.train_size=64", "dataset.test_size=32"],
    }
    for name, options in sweeps.items():
        res = widen("sweep-width", "--model", "mlp", *options, *tiny, "--out", tmp_path / "runs", "--name", name)
        assert res.exit_code == 0, (name, res.output)
    kernels = {  # name -> kernel-distance options
        "k-digits-b4-dense-last": ["--inputs", "digits", "--base-width", 4, "--widths", "4,8,16,24"],
        "k-digits-b4-uniform": ["--inputs", "digits", "--base-width", 4, "--widths", "4,8,16",
                                "--distribution", "uniform"],
        "k-digits-b8-dense-last": ["--inputs", "digits", "--base-width", 8, "--widths", "8,16,32"],
        "k-gaussian-b4": ["--input-dim", 64, "--base-width", 4, "--widths", "4,8,16"],  # digits' budget, no dataset
        "k-mnist-b8": ["--input-dim", 784, "--weights", 6352, "--widths", "8,16"],  # Gaussian, the Figure 7 budget
    }
    for name, options in kernels.items():
        res = widen("kernel-distance", *options, "--pairs", 30, "--inits", 2, "--mask-samples", 2,
                    "--out", tmp_path / "kernels", "--name", name)
        assert res.exit_code == 0, (name, res.output)
    res = report.load([tmp_path / "runs", tmp_path / "kernels"], lambda msg: None)
    data = report.kernel_overlay(res.kernels, res.runs)
    drawn = data[data.line.notna()]
    assert set(drawn.table) == {"k-digits-b4-dense-last", "k-digits-b4-uniform", "k-digits-b8-dense-last"}
    lines = drawn.groupby("table").line.unique().map(sorted).to_dict()
    assert lines == {"k-digits-b4-dense-last": ["sparse b=4"], "k-digits-b4-uniform": ["sparse b=4 uniform"],
                     "k-digits-b8-dense-last": ["sparse b=8, last layer 1"]}
    for name, d in drawn.groupby("table"):  # the runs drawn are those of the table's family, at their widths
        keys = report.kernel_keys(d)
        runs = res.runs[res.runs.line.isin(d.line) & (res.runs.dataset == keys["dataset"])]
        assert (runs.budget == keys["budget"]).all() and len(runs) == d.test_error_mean.notna().sum()
        assert d.set_index("width").test_error_mean.dropna().to_dict() == pytest.approx(
            (100 - runs.set_index("width").test).to_dict())
    assert drawn[drawn.table == "k-digits-b4-dense-last"].budget.unique().tolist() == [4 * 74]
    assert drawn[drawn.table == "k-digits-b8-dense-last"].budget.unique().tolist() == [8 * 74]
    # width 24 has a kernel row but no run; no table gets the synthetic runs or the llc 0.5 ones
    assert drawn[drawn.table == "k-digits-b4-dense-last"].set_index("width").test_error_mean.isna().to_dict() == {
        4: False, 8: False, 16: False, 24: True}
    assert not drawn.line.str.contains("last layer 0.5").any() and "synthetic" not in set(drawn.dataset)
    stats = report.tracking(data)
    assert sorted(stats.table) == sorted(set(drawn.table)) and (stats.widths == 3).all()
    assert stats.spearman_empirical.between(-1, 1).all() and stats.pearson_log_empirical.between(-1, 1).all()
    assert stats.width_eq29.tolist() == pytest.approx([2 * (4 * 64) ** 0.5, 2 * (4 * 64) ** 0.5, 2 * (8 * 64) ** 0.5])
    # the page writes the same numbers
    assert widen("report", tmp_path / "runs", tmp_path / "kernels", "--out", tmp_path / "report").exit_code == 0
    written = pd.read_csv(tmp_path / "report" / "kernel_tracking.csv")
    assert written.table.tolist() == stats.table.tolist()
    assert written.spearman_empirical.tolist() == pytest.approx(stats.spearman_empirical.tolist(), abs=1e-3)
