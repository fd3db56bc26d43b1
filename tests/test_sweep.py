import shutil

import pandas as pd
import pytest
import torch

from helpers import sweep_args, widen
from widen_cli.results import SUMMARY_COLUMNS


def test_dry_run_cifar100_base18_plan(tmp_path):
    res = widen("sweep-width", "--dataset", "cifar100", "--base-width", 18, "--dry-run",
                "--data-root", tmp_path / "no-data-here", "--out", tmp_path, "--name", "plan")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "plan" / "plan.parquet")
    sparse = plan[plan.method == "sparse"]
    assert sparse.width.tolist()[:5] == [18, 25, 36, 51, 72]
    assert (sparse.n_weights == 897_462).all() and (sparse.deviation == 0).all()
    assert (sparse.connectivity >= 0.01).all() and sparse.connectivity.iloc[0] == 1.0
    assert "897,462" in res.output and "kept fraction per layer" in res.output
    dense = plan[plan.method == "dense"]
    assert dense.width.tolist() == sparse.width.tolist()[1:]  # dense-wide at every wider width
    assert (dense.n_weights == dense.n_weights_dense).all()
    for row in sparse.itertuples():  # per-layer kept counts add up to the budget
        assert sum(row.layer_kept) == 897_462 and len(row.layers) == 21
    assert not any(p.is_dir() for p in (tmp_path / "plan").iterdir())  # nothing ran


def test_dry_run_imagenet_table1_needs_no_data(tmp_path):
    res = widen("sweep-width", "--experiment", "table1_imagenet", "--dry-run", "--out", tmp_path, "--name", "t1")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "t1" / "plan.parquet")
    sparse = plan[plan.method == "sparse"]
    assert sparse.width.tolist() == [64, 90, 128, 181, 256]
    assert (sparse.n_weights == 11_678_912).all()
    assert [round(n / 1e6, 2) for n in plan[plan.method == "dense"].n_weights] == [22.80, 45.67, 90.72, 180.61]


@pytest.mark.parametrize("method", ["linear-bottleneck", "nonlinear-bottleneck"])
def test_dry_run_bottleneck_families_report_deviation(tmp_path, method):
    res = widen("sweep-width", "--dataset", "cifar10", "--method", method, "--base-width", 12,
                "--factors", "1,2,4", "--dry-run", "--out", tmp_path, "--name", "b")
    assert res.exit_code == 0, res.output
    plan = pd.read_parquet(tmp_path / "b" / "plan.parquet")
    family = plan[plan.method == method]
    assert family.width.tolist() == [12, 24, 48]
    budget = family.budget.iloc[0]
    assert (family.deviation <= 0).all() and (family.deviation > -0.001 * budget).all()
    assert (family.n_weights == family.budget + family.deviation).all()
    assert family.bottleneck_ratio.iloc[0] == 1.0 and family.bottleneck_ratio.is_monotonic_decreasing


SWEEP = sweep_args()
IDENTITY = ["method", "width", "seed", "base_width", "n_weights", "n_weights_dense", "connectivity"]
METRICS = ["best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc"]


def sorted_rows(df):
    return df.sort_values(["method", "width", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps")
    res = widen(*SWEEP, "--out", out, "--name", "local")
    assert res.exit_code == 0, res.output
    return out, res


def test_sweep_runs_every_member_and_seed(local_sweep):
    out, _ = local_sweep
    df = sorted_rows(pd.read_parquet(out / "local" / "results.parquet"))
    assert set(SUMMARY_COLUMNS + ["widening_factor", "distribution"]) <= set(df.columns)
    assert list(zip(df.method, df.width, df.seed)) == [
        ("dense", 32, 0), ("dense", 32, 1), ("sparse", 8, 0), ("sparse", 8, 1), ("sparse", 32, 0), ("sparse", 32, 1)]
    sparse = df[df.method == "sparse"]
    assert (sparse.n_weights == 3 * 8 * 8 * 8 + 8 * 10).all()  # base width 8 on 3x8x8 input, 10 classes
    assert sparse.distribution.eq("dense-last").all()  # the MLP's default (Figure 7's rule)
    assert (sparse.budget == 3 * 8 * 8 * 8 + 8 * 10).all()
    assert df.widening_factor.tolist() == [4.0, 4.0, 1.0, 1.0, 4.0, 4.0]
    # Each member is an ordinary run folder; the sparse ones carry their masks, exactly at the budget.
    for run in df[df.method == "sparse"].run:
        masks = torch.load(out / "local" / run / "masks.pt", weights_only=True)
        assert sum(int(m.sum()) for m in masks.values()) == 3 * 8 * 8 * 8 + 8 * 10
    # The two seeds are different runs.
    assert df[df.method == "sparse"].run.nunique() == 4


def test_local_launcher_trains_mlp_families_batched(local_sweep):
    # Sparse members (both widths, both seeds) shared one stacked model, the dense ones (one width,
    # two seeds) another: a batch's members carry the same per-epoch time, the batch's time over its size.
    out, _ = local_sweep
    df = pd.read_parquet(out / "local" / "results.parquet")
    for method, size in (("sparse", 4), ("dense", 2)):
        seconds = [pd.read_parquet(out / "local" / run / "metrics.parquet").seconds.tolist()
                   for run in df[df.method == method].run]
        assert len(seconds) == size and all(s == seconds[0] for s in seconds)


def test_rerun_trains_nothing(local_sweep):
    out, _ = local_sweep
    before = {p: p.stat().st_mtime_ns for p in (out / "local").glob("*/summary.parquet")}
    res = widen(*SWEEP, "--out", out, "--name", "local")
    assert res.exit_code == 0, res.output
    assert "6 of 6 runs already finished; running 0" in res.output
    assert {p: p.stat().st_mtime_ns for p in (out / "local").glob("*/summary.parquet")} == before


def test_missing_member_is_run_on_rerun(local_sweep, tmp_path):
    out, _ = local_sweep
    shutil.copytree(out / "local", tmp_path / "grown")
    res = widen(*sweep_args(widths="8,32,64", seeds="0"), "--out", tmp_path, "--name", "grown")
    assert res.exit_code == 0, res.output
    assert "3 of 5 runs already finished; running 2" in res.output  # width 64: sparse and dense-wide
    df = pd.read_parquet(tmp_path / "grown" / "results.parquet")
    assert sorted(zip(df.method, df.width)) == [("dense", 32), ("dense", 64), ("sparse", 8), ("sparse", 32),
                                                 ("sparse", 64)]


# submitit on this machine's processes, never a SLURM that may be installed here (tests/test_slurm.py). It
# starts a Python process per member, so it runs one seed's members (seed 1, not the default: the seed reaches
# the job): every method and width, half the process starts; the pool runs both seeds.
@pytest.mark.parametrize("launcher,seeds", [("pool", [0, 1]), ("submitit", [1])])
def test_launchers_give_the_same_rows(local_sweep, launcher, seeds):
    out, _ = local_sweep
    local = ["sweep.submitit.cluster=local"] if launcher == "submitit" else []
    res = widen(*sweep_args(seeds=",".join(map(str, seeds))), *local, "--out", out, "--name", launcher,
                "--launcher", launcher, "--jobs", 2)
    assert res.exit_code == 0, res.output
    local = sorted_rows(pd.read_parquet(out / "local" / "results.parquet"))
    other = sorted_rows(pd.read_parquet(out / launcher / "results.parquet"))
    assert sorted(set(other.seed)) == seeds
    local = local[local.seed.isin(seeds) & local.width.isin([8, 32])].reset_index(drop=True)
    pd.testing.assert_frame_equal(local[IDENTITY + ["run"]], other[IDENTITY + ["run"]])
    pd.testing.assert_frame_equal(local[METRICS], other[METRICS], atol=1e-6, rtol=0)


def test_train_one_sparse_member_directly(tmp_path):
    res = widen("train", "--dataset", "synthetic", "--model", "resnet18", "--method", "sparse", "--width", 8,
                "--base-width", 4, "--epochs", 1, "--out", tmp_path, "--name", "m", "dataset.train_size=32",
                "dataset.test_size=16", "optim.batch_size=16")
    assert res.exit_code == 0, res.output
    s = pd.read_parquet(tmp_path / "m" / "summary.parquet").iloc[0]
    assert (s.method, s.width, s.base_width) == ("sparse", 8, 4)
    assert s.n_weights == 27 * 4 + 2724 * 16 + 8 * 4 * 10  # the base width's count (closed form)
    assert s.n_weights_dense == 27 * 8 + 2724 * 64 + 8 * 8 * 10
    assert s.connectivity == pytest.approx(s.n_weights / s.n_weights_dense)


@pytest.mark.parametrize("args,needle", [
    (("--base-width", 18, "--widths", "12,18"), "width 12 is below the base width 18"),
    (("--base-width", 18, "--widths", "18,300", "--method", "nonlinear-bottleneck"),
     "valid widths for base width 18 with nonlinear-bottleneck: 18 to 131"),
    (("--base-width", 18, "--widths", "18,36", "method.last_layer_connectivity=1.5"),
     "method.last_layer_connectivity must be in (0, 1], got 1.5"),
    (("--base-width", 18, "--widths", "18,abc"), "--widths takes comma-separated ints"),
    (("--base-width", 18, "--launcher", "slurm"), "unknown launcher 'slurm'; valid: local, pool, submitit"),
    (("--base-width", 18, "--method", "lottery"), "unknown method 'lottery'"),
    (("--base-width", 0,), "width must be an integer >= 1, got 0"),
    (("--base-width", 18, "--connectivity-floor", 0), "--connectivity-floor must be in (0, 1], got 0.0"),
])
def test_impossible_family_refused(tmp_path, args, needle):
    res = widen("sweep-width", "--dataset", "cifar100", "--dry-run", "--out", tmp_path, *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not (tmp_path.exists() and any(tmp_path.rglob("plan.parquet")))


def test_impossible_member_refused_before_reading_data(tmp_path):
    # 784-5-10 holds 3,970 weights. With the last layer at connectivity 0.5, width 5 would have to keep
    # 3,945 first-layer weights of 3,920; width 6 is the narrowest whose first layer (4,704) holds them.
    # At width 794 the last layer alone would keep 0.5 * 7,940 = 3,970: 793 is the widest.
    res = widen("train", "--dataset", "mnist", "--data-root", tmp_path / "absent", "--method", "sparse",
                "--base-width", 5, "--width", 5, "method.last_layer_connectivity=0.5", "--out", tmp_path)
    assert res.exit_code == 2, res.output
    assert "valid widths for base width 5 with sparse: 6 to 793" in res.output
    assert not any(tmp_path.iterdir())


def test_sweep_is_refused_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = widen("sweep-width", "--experiment", "smoke_sweep", "--out", tmp_path)
    assert res.exit_code == 2 and "use torchrun with widen train" in res.output
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- what a sweep refuses or says before it starts

def test_same_name_with_other_settings_is_refused_unless_restart(tmp_path):
    first = ["sweep-width", "--experiment", "smoke_sweep", "--dry-run", "--out", tmp_path, "--name", "s"]
    assert widen(*first).exit_code == 0
    # (48, not 64: the MLP default, dense-last, holds 592 weights up to width 59)
    assert widen(*first, "--widths", "8,16,32,48", "--seeds", "0,1").exit_code == 0  # a family may grow
    changed = widen(*first, "--epochs", 7)
    assert changed.exit_code == 2
    assert changed.output.startswith("error:") and changed.output.count("\n") == 1
    assert "optim.epochs: 7 here, 3 in" in changed.output and "--restart" in changed.output
    assert widen(*first, "--epochs", 7, "--restart").exit_code == 0


def _planned(out, *overrides):
    """A digits sweep's composed config and plan, as sweep-width makes them, under --name s."""
    from widen_cli import compose, plan

    cfg = compose.compose_config(["dataset=digits", "model=mlp", "method=sparse", "base_width=8", f"out={out}",
                                 *overrides], ())
    return cfg, plan.plan_sweep(plan.family_run(cfg, None), plan.settings(cfg, widths=[8, 16]), "s")


def test_a_sweep_that_checked_before_another_claimed_the_folder_is_refused(tmp_path, monkeypatch):
    """The race of two sweeps of one --name, forced: B finds no sweep.yaml, A claims the folder, then B
    would write. B is refused and A's sweep.yaml stays."""
    import yaml

    from widen_cli import sweep
    from widen_cli.errors import UserError

    cfg_a, a = _planned(tmp_path, "optim.epochs=1")
    cfg_b, b = _planned(tmp_path, "optim.epochs=2")
    assert a.sweep_dir == b.sweep_dir
    check = sweep._check_identity

    def a_claims_meanwhile(*args):
        check(*args)  # B: no sweep there yet
        monkeypatch.setattr(sweep, "_check_identity", check)
        sweep.claim(a.sweep_dir, a, cfg_a, False)

    monkeypatch.setattr(sweep, "_check_identity", a_claims_meanwhile)
    with pytest.raises(UserError, match="optim.epochs: 2 here, 1 in"):
        sweep.claim(b.sweep_dir, b, cfg_b, False)
    assert yaml.safe_load((a.sweep_dir / "sweep.yaml").read_text())["optim"]["epochs"] == 1
    assert sorted(p.name for p in a.sweep_dir.iterdir()) == ["sweep.yaml"]  # no leftovers of B


RACER = """import sys, time
from pathlib import Path
import hydra, omegaconf, pandas, torch  # loaded before the start line, so both start from the same point
from widen_cli import cli, plan, sweep
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
sys.argv = ["widen", *sys.argv[3:]]
cli.main()
"""


@pytest.mark.parametrize("epochs,refused", [((1, 2), 1), ((1, 1), 0)])
def test_two_sweeps_of_one_name_started_together(tmp_path, epochs, refused):
    """Two real sweep-width processes released at once under one --name: with other settings exactly one is
    refused (one error line, exit 2) and sweep.yaml holds the other's; with the same settings both run."""
    import subprocess
    import sys

    import yaml
    from helpers import ENV, wait_for

    go = tmp_path / "go"
    procs = []
    for i, e in enumerate(epochs):
        args = ["sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", e,
                "--dry-run", "--out", tmp_path / "runs", "--name", "s"]
        procs.append(subprocess.Popen([sys.executable, "-c", RACER, tmp_path / f"ready{i}", go, *map(str, args)],
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for i, proc in enumerate(procs):
        wait_for(tmp_path / f"ready{i}", proc, timeout=600)
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0] * (2 - refused) + [2] * refused, outputs
    for (_, err), code, e in zip(outputs, codes, epochs):
        if code == 2:
            assert err.startswith("error:") and err.count("\n") == 1 and "optim.epochs" in err, err
        else:
            assert "error" not in err and "Traceback" not in err, err
            assert yaml.safe_load((tmp_path / "runs" / "s" / "sweep.yaml").read_text())["optim"]["epochs"] == e


@pytest.mark.parametrize("text,needle", [("optim: {epochs: [3\n", "not valid YAML"),
                                         ("- 1\n- 2\n", "does not describe a sweep"),
                                         ("", "does not describe a sweep")])
def test_a_garbled_sweep_yaml_is_refused(tmp_path, text, needle):
    first = ["sweep-width", "--experiment", "smoke_sweep", "--dry-run", "--out", tmp_path, "--name", "s"]
    assert widen(*first).exit_code == 0
    (tmp_path / "s" / "sweep.yaml").write_text(text)
    (tmp_path / "s" / "plan.parquet").unlink()
    res = widen(*first)
    assert res.exit_code == 2 and res.output.startswith("error:") and res.output.count("\n") == 1, res.output
    assert needle in res.output and "sweep.yaml" in res.output
    assert (tmp_path / "s" / "sweep.yaml").read_text() == text and not (tmp_path / "s" / "plan.parquet").exists()
    assert widen(*first, "--restart").exit_code == 0  # --restart writes these settings there
    assert widen(*first).exit_code == 0


def test_a_sweep_of_several_methods_plans_the_dense_baseline_once(tmp_path):
    """The sparse member at the base width keeps every weight: it is the dense baseline that pruned (or
    linear-bottleneck) plans too, so one run per seed, as the sparse member (its family's first point)."""
    for methods in ("sparse,pruned", "pruned,sparse"):
        res = widen("sweep-width", "--dataset", "digits", "--methods", methods, "--base-width", 8, "--widths", "8,16",
                    "--seeds", "0,1", "--dry-run", "--out", tmp_path, "--name", methods)
        assert res.exit_code == 0, res.output
        assert "8 runs (4 members, 2 seeds)" in " ".join(res.output.split())
        plan = pd.read_parquet(tmp_path / methods / "plan.parquet")
        assert sorted(plan.method[plan.width == 8]) == ["sparse"]
        assert sorted(plan.method[plan.width == 16]) == ["dense", "pruned", "sparse"]


def test_missing_data_is_refused_before_any_member_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    res = widen("sweep-width", "--dataset", "mnist", "--model", "mlp", "--base-width", 8, "--widths", "8,16",
                "--epochs", 1, "--data-root", tmp_path / "empty", "--out", tmp_path, "--name", "m")
    assert res.exit_code == 2, res.output
    assert "MNIST/raw" in res.output and "--download" in res.output
    assert not (tmp_path / "m").exists()  # refused before the plan is written: no sweep folder at all


def test_plan_says_what_it_starts_and_warns_of_cpu_days(tmp_path):
    big = widen("sweep-width", "--dataset", "cifar100", "--base-width", 18, "--seeds", "0,1", "--dry-run",
                "--device", "cpu", "--out", tmp_path)
    assert big.exit_code == 0, big.output
    assert "26 runs (13 members, 2 seeds), 7,800 epochs in all, about" in big.output
    assert "EFLOP of training compute" in big.output and "warning:" in big.output  # ~2e18
    small = widen("sweep-width", "--experiment", "smoke_sweep", "--dry-run", "--device", "cpu", "--out", tmp_path)
    assert "5 runs (5 members, 1 seed), 15 epochs in all" in small.output and "warning:" not in small.output


def test_pool_workers_take_one_gpu_each(monkeypatch):
    from widen_cli import pool

    seen = []
    for slot, visible in enumerate((None, None, None, "3,5", "3,5")):
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        seen.append(pool.gpu_of(slot, 2))
    assert seen == ["0", "1", "0", "5", "3"]  # worker k: GPU k mod 2, among those already visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert pool.gpu_of(0, 0) is None  # no GPUs to share (cpu, or a fixed cuda:N): left alone


def test_submitit_without_slurm_is_refused(tmp_path, monkeypatch):
    """No sbatch/srun on PATH (a login node without SLURM): one line, nothing run or written, unless
    local processes are asked for."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no srun there, whatever this machine has
    res = widen(*SWEEP, "--out", tmp_path, "--name", "s", "--launcher", "submitit", "--jobs", 2)
    assert res.exit_code == 2, res.output
    assert "error: --launcher submitit needs SLURM" in res.output and "sweep.submitit.cluster=local" in res.output
    assert not (tmp_path / "s").exists()


def test_submitit_local_honours_jobs(tmp_path):
    res = widen(*sweep_args(widths="8", seeds="0,1,2"), "sweep.submitit.cluster=local", "--out", tmp_path,
                "--name", "s", "--launcher", "submitit", "--jobs", 1)
    assert res.exit_code == 0, res.output
    assert "members run as processes on this machine, 1 at a time" in res.output
    logs = sorted((tmp_path / "s" / ".submitit").glob("*_log.out"))
    assert len(logs) == 3 and all("training" in p.read_text() for p in logs)  # each member's own log
