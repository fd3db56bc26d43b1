"""The sweep's axes: several budgets and methods in one plan, every member at several learning rates
with one selected per member and seed, the validation holdout, per-pixel standardisation, and the
Figure 7 presets. Real runs on the built-in digits, checked against the runs' own files."""
import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from helpers import widen
from widen_cli import results
from widen_cli.compose import load
from widen_cli.data import load_data
from widen_cli.identity import run_name

CPU = torch.device("cpu")


def summaries(sweep_dir):
    return {p.parent.name: results.read_table(p).iloc[0] for p in sweep_dir.glob("*/" + results.SUMMARY_FILE)}


def member_key(row) -> str:
    """A run's identity without its lr: what one member and seed share across --lrs."""
    ident = json.loads(row.identity)
    ident["optim"].pop("lr")
    return json.dumps(ident, sort_keys=True)


def check_selection(df: pd.DataFrame, sweep_dir, score: str) -> None:
    """Exactly one selected row per member and seed: the one whose own summary scores best."""
    own = summaries(sweep_dir)
    df = df.assign(own=[own[r][score] for r in df.run], member=[member_key(own[r]) for r in df.run])
    for _, rows in df.groupby("member"):
        assert rows.selected.sum() == 1, rows
        assert rows[rows.selected].own.iloc[0] == rows.own.max()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("lrs")
    args = ("sweep-width", "--experiment", "smoke_sweep", "--widths", "8,16", "--seeds", "0,1", "--lrs", "0.02,0.5",
            "--epochs", 2, "--out", out, "--name", "t")
    res = widen(*args)
    assert res.exit_code == 0, res.output
    return out / "t", args


def test_every_member_runs_at_every_lr_and_one_is_selected(tuned):
    sweep_dir, _ = tuned
    df = pd.read_parquet(sweep_dir / results.RESULTS_FILE)
    # 3 members (sparse 8, 16; dense 16) x 2 seeds x 2 lrs, each its own run folder
    assert len(df) == 12 and df.run.nunique() == 12 and sorted(df.lr.unique()) == [0.02, 0.5]
    assert set(df.lr) == {summaries(sweep_dir)[r].identity and json.loads(summaries(sweep_dir)[r].identity)["optim"]["lr"]
                          for r in df.run}
    check_selection(df, sweep_dir, "best_test_acc")
    assert df.selected.sum() == 6


def test_rerun_of_a_tuned_sweep_trains_nothing(tuned):
    sweep_dir, args = tuned
    mtimes = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/" + results.SUMMARY_FILE)}
    res = widen(*args)
    assert res.exit_code == 0, res.output
    assert "12 of 12 runs already finished; running 0" in res.output
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/" + results.SUMMARY_FILE)} == mtimes


def test_the_report_draws_only_the_selected_runs(tuned, tmp_path):
    sweep_dir, _ = tuned
    res = widen("report", sweep_dir, "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "report" / "table.csv")
    assert set(table.setting) == {"digits mlp, lr-tuned over 0.02,0.5"}
    df = pd.read_parquet(sweep_dir / results.RESULTS_FILE)
    sparse16 = df[df.selected & (df.method == "sparse") & (df.width == 16)]
    row = table[table.row == "sparse b=8"].iloc[0]
    assert row.test_acc_w16 == pytest.approx(100 * sparse16.best_test_acc.mean())


def test_select_on_val_holds_out_part_of_the_training_split(tmp_path):
    res = widen("sweep-width", "--experiment", "smoke_sweep", "--widths", "8,16", "--seeds", "0", "--lrs", "0.02,0.5",
                "--select-on", "val", "sweep.val_fraction=0.25", "--epochs", 2, "--out", tmp_path, "--name", "v")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "v" / results.RESULTS_FILE)
    assert len(df) == 6 and df.val_acc.notna().all()
    check_selection(df, tmp_path / "v", "val_acc")
    for run in df.run:  # every epoch's val accuracy recorded; the summary's is the last one
        metrics = pd.read_parquet(tmp_path / "v" / run / results.METRICS_FILE)
        assert metrics.val_acc.notna().all()
        assert df.set_index("run").val_acc[run] == metrics.val_acc.iloc[-1]
        assert json.loads(df.set_index("run").identity[run])["dataset"]["val_fraction"] == 0.25


def test_holdout_is_disjoint_from_training_and_the_same_for_every_run():
    run = load(["dataset=digits", "dataset.val_fraction=0.25"])[1]
    train, _, _ = load_data(run.dataset, 2000, CPU, seed=0)
    other, _, _ = load_data(run.dataset, 2000, CPU, seed=5)  # another run seed: the same holdout
    full, _, _ = load_data(replace(run.dataset, val_fraction=None), 2000, CPU, seed=0)
    assert full.val is None and train.num_samples + train.val.num_samples == full.num_samples
    assert train.val.num_samples == round(0.25 * full.num_samples)
    as_rows = lambda loader: {tuple(x) for x in loader.images.flatten(1).tolist()}  # noqa: E731
    assert not as_rows(train) & as_rows(train.val) or len(as_rows(full)) < full.num_samples
    assert torch.equal(train.val.images, other.val.images) and torch.equal(train.images, other.images)
    # disjoint by position: the held-out images and the trained ones together are the training split
    together = torch.cat([train.images, train.val.images]).flatten(1)
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, full.images.flatten(1).tolist()))
    assert run_name(run) != run_name(load(["dataset=digits"])[1])  # it changes what is trained on


def test_per_pixel_standardisation_uses_the_training_images_only():
    run = load(["dataset=digits", "dataset.normalize=per-pixel", "dataset.subset=500"])[1]
    train, test, _ = load_data(run.dataset, 500, CPU, seed=0)
    x = torch.cat([xb for xb, _ in train]).double()
    varying = x.std(0) > 0
    assert torch.allclose(x.mean(0), torch.zeros_like(x[0]), atol=1e-5)
    assert torch.allclose(x.std(0)[varying], torch.ones_like(x[0])[varying], atol=1e-4)
    assert (x[:, ~varying] == 0).all() and (~varying).any()  # constant pixels (digits' corners) become 0
    xt = torch.cat([xb for xb, _ in test])
    raw = test.images.double() / 255
    mean = train.images.double().mean(0) / 255
    assert torch.allclose(xt[:, varying].double(), ((raw - mean) * (train.scale[0] * 255))[:, varying], atol=1e-4)


def test_several_budgets_and_methods_in_one_plan(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", "4,8", "--methods", "sparse,linear-bottleneck",
                "--widths", "8,16", "--dry-run", "--out", tmp_path, "--name", "m")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "m" / results.PLAN_FILE)
    assert sorted(plan.base_width.unique()) == [4, 8]
    for b, rows in plan.groupby("base_width"):
        assert set(rows.method) == {"sparse", "linear-bottleneck", "dense"}
        # dense members shared by both methods are one row (one run)
        dense = rows[rows.method == "dense"]
        assert dense.width.is_unique
        sparse = rows[rows.method == "sparse"]
        assert set(sparse.n_weights) == set(sparse.budget) == {b * 74}  # each family keeps its own budget


def test_several_budgets_get_their_own_default_widths(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", "4,8", "--dry-run", "--out", tmp_path,
                "--name", "d")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "d" / results.PLAN_FILE)
    sparse = plan[plan.method == "sparse"]
    assert sparse[sparse.base_width == 4].width.min() == 4 and sparse[sparse.base_width == 8].width.min() == 8


def test_dense_runs_shared_between_methods_run_once(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", "8", "--methods", "sparse,linear-bottleneck",
                "--widths", "8,16", "--epochs", 1, "--seeds", "0,1", "--out", tmp_path, "--name", "s")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE)
    assert df.run.is_unique and len(df) == len(list((tmp_path / "s").glob("*/" + results.SUMMARY_FILE)))
    # Width 16 (both methods' dense-wide) once per seed; the base (linear-bottleneck's dense baseline) is the
    # sparse member at width 8, which keeps every weight: trained once, as that member.
    assert sorted(df[df.method == "dense"].width) == [16, 16]
    assert sorted(df[df.width == 8].method) == ["linear-bottleneck"] * 2 + ["sparse"] * 2
    res = widen("report", tmp_path / "s", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("row")
    assert table.loc["dense", "seeds_w8"] == table.loc["dense", "seeds_w16"] == 2  # one sample per seed
    base = df[(df.method == "sparse") & (df.width == 8)]
    assert table.loc["dense", "test_acc_w8"] == pytest.approx(100 * base.best_test_acc.mean(), abs=1e-4)


def test_a_sweep_of_other_budgets_under_the_same_name_is_refused(tmp_path):
    common = ("sweep-width", "--dataset", "digits", "--widths", "8,16", "--dry-run", "--out", tmp_path, "--name", "r")
    assert widen(*common, "--base-width", "4,8").exit_code == 0
    res = widen(*common, "--base-width", "4,6")
    assert res.exit_code == 2 and "base_width" in res.output
    assert widen(*common, "--base-width", "4,8", "--widths", "8,16,24").exit_code == 0  # widths may grow


def test_a_tuned_sweep_may_grow_its_lrs(tmp_path):
    common = ("sweep-width", "--experiment", "smoke_sweep", "--dry-run", "--out", tmp_path)
    first = widen(*common, "--lrs", "0.1,0.3")
    grown = widen(*common, "--lrs", "0.1,0.3,1")
    assert first.exit_code == grown.exit_code == 0
    assert len([p for p in tmp_path.iterdir()]) == 1  # the same sweep folder


@pytest.mark.parametrize("preset,members,base,widths", [
    ("fig7_mlp", 13, 8, [8, 32, 128, 216, 328, 512, 635]),
    ("fig7_digits", 13, 16, [16, 24, 32, 48, 64, 88, 116]),  # a dense read-out caps width at budget / 10
])
def test_fig7_presets_plan_the_papers_tuned_sweep(tmp_path, preset, members, base, widths):
    res = widen("sweep-width", "--experiment", preset, "--dry-run", "--data-root", tmp_path / "no-data",
                "--out", tmp_path, "--name", "f")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "f" / results.PLAN_FILE)
    assert len(plan) == members
    assert sorted(plan[plan.method == "sparse"].width) == widths
    assert sorted(plan[plan.method == "dense"].width) == widths[1:]
    inputs = 784 if preset == "fig7_mlp" else 64
    assert set(plan[plan.method == "sparse"].n_weights) == {base * (inputs + 10)}  # no biases
    assert "runs (13 members, 3 seeds, 7 learning rates)" in " ".join(res.output.split())
    run = load([f"+experiment={preset}", "dataset.root=x"])[1]
    assert (run.model.bias, run.model.parameterization, run.dataset.normalize) == (False, "ntk", "per-pixel")
    assert (run.optim.momentum, run.optim.weight_decay, run.optim.schedule) == (0.0, 0.0, "constant")
    assert (run.optim.batch_size, run.optim.epochs) == (256, 300)
    assert run.dataset.subset == (2048 if preset == "fig7_mlp" else None)
