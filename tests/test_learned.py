"""set and rigl as methods (methods/learned.py over regrow.py), through the real CLI on digits: exact
per-layer counts after every update, the same plan and initial mask as sparse, seeded repeatability,
kill and resume, a mixed sweep and its report, bad values refused."""
from __future__ import annotations

import json
import signal

import pandas as pd
import pytest
import torch

from helpers import metrics, start, wait_for, widen
from widen_cli import checkpoint, report, results
from widen_cli.methods import regrow

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one thread, so runs compare bit for bit

DIGITS = ["train", "--dataset", "digits", "--base-width", 8, "method.distribution=staggered"]


def masks_of(run) -> dict[str, torch.Tensor]:
    return torch.load(run / results.MASKS_FILE, weights_only=True)


def counts(masks) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


@pytest.mark.parametrize("method,options", [("set", ["method.zeta=0.5"]), ("rigl", ["method.delta_t=2"])])
def test_every_update_keeps_the_sparse_members_counts(tmp_path, monkeypatch, method, options):
    """A whole run: after every update each layer holds the count the sparse member of that width holds
    (same plan), the run starts from the sparse member's mask (same seed), and masks.pt is the final mask."""
    seen = []  # after every update: (updates so far, per-layer counts, changed from the start?)
    real = regrow.Updater.after_backward

    def watched(self, step):
        before = self.updates
        real(self, step)
        if self.updates > before:
            seen.append((self.updates, counts(self.masks.state()), self.initial))

    monkeypatch.setattr(regrow.Updater, "after_backward", watched)
    for m in ("sparse", method):
        res = widen(*DIGITS, "--method", m, "--width", 32, "--epochs", 3, "--out", tmp_path, "--name", m,
                    *(options if m == method else ()))
        assert res.exit_code == 0, res.output
    sparse, moved = masks_of(tmp_path / "sparse"), masks_of(tmp_path / method)
    assert counts(moved) == counts(sparse) and len(sparse) == 2
    summary = pd.read_parquet(tmp_path / method / results.SUMMARY_FILE).iloc[0]
    updates = 2 if method == "set" else len([s for s in range(1, 45) if s % 2 == 0 and s < 0.75 * 45])
    assert [u for u, _, _ in seen] == list(range(1, updates + 1)) and summary.mask_updates == updates
    assert all(c == counts(sparse) for _, c, _ in seen)
    initial = seen[0][2]  # the mask the moving run started with: the sparse member's, where it can move
    assert all(torch.equal(initial[n], sparse[n]) for n in initial) and initial
    kept_initial = sum(int((moved[n] & initial[n]).sum()) for n in initial) / sum(int(initial[n].sum()) for n in initial)
    assert summary.mask_kept_initial == pytest.approx(kept_initial) and kept_initial < 1
    assert any(not torch.equal(moved[n], sparse[n]) for n in sparse)
    rows = pd.read_parquet(tmp_path / method / results.METRICS_FILE)
    assert rows.mask_changed.notna().sum() == (2 if method == "set" else 3) and (rows.mask_changed.dropna() > 0).all()
    assert pd.read_parquet(tmp_path / "sparse" / results.METRICS_FILE).mask_changed.isna().all()
    assert pd.read_parquet(tmp_path / "sparse" / results.SUMMARY_FILE).mask_updates.isna().all()


def test_same_command_gives_the_same_masks_and_numbers(tmp_path):
    for method, option in (("set", "method.zeta=0.4"), ("rigl", "method.delta_t=3")):
        runs = []
        for name in ("a", "b"):
            res = widen(*DIGITS, "--method", method, "--width", 16, "--epochs", 2, option,
                        "--out", tmp_path, "--name", f"{method}-{name}")
            assert res.exit_code == 0, res.output
            runs.append(tmp_path / f"{method}-{name}")
        pd.testing.assert_frame_equal(metrics(runs[0]), metrics(runs[1]), check_exact=True)
        a, b = masks_of(runs[0]), masks_of(runs[1])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        a, b = (torch.load(r / results.MODEL_FILE, weights_only=True) for r in runs)
        assert all(torch.equal(a[k], b[k]) for k in a)


# As test_reliability's SLOW (~0.1 s an epoch, everything with state), with RigL updates every 20 of an
# epoch's 64 steps until epoch 9: some before the kill, more after it.
SLOW = ["train", "--dataset", "synthetic", "--model", "mlp", "--method", "rigl", "--width", 512, "--base-width",
        128, "--epochs", 12, "dataset.train_size=4096", "dataset.test_size=256", "dataset.image_size=16",
        "dataset.augment=[crop,flip]", "optim.batch_size=64", "optim.milestones=[6]", "optim.lr=0.02",
        "optim.momentum=0.9", "method.delta_t=20"]


@pytest.mark.slow
def test_killed_rigl_run_resumes_as_if_never_interrupted(tmp_path):
    proc = start(*SLOW, "--out", tmp_path, "--name", "cut")
    wait_for(tmp_path / "cut" / checkpoint.FILENAME, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / results.SUMMARY_FILE).exists()  # killed mid-run
    state = torch.load(tmp_path / "cut" / checkpoint.FILENAME, weights_only=True)
    assert state["updater"]["updates"] >= 3 and not (tmp_path / "cut" / results.MASKS_FILE).exists()

    assert widen(*SLOW, "--out", tmp_path, "--name", "cut").exit_code == 0
    whole = widen(*SLOW, "--out", tmp_path, "--name", "whole")
    assert whole.exit_code == 0, whole.output
    cut, ref = tmp_path / "cut", tmp_path / "whole"
    pd.testing.assert_frame_equal(metrics(cut), metrics(ref), check_exact=True)
    a, b = masks_of(cut), masks_of(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = (torch.load(r / results.MODEL_FILE, weights_only=True) for r in (cut, ref))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (pd.read_parquet(r / results.SUMMARY_FILE).iloc[0] for r in (cut, ref))
    assert sa.mask_updates == sb.mask_updates > state["updater"]["updates"]
    assert sa.mask_kept_initial == sb.mask_kept_initial < 1


@pytest.mark.slow
def test_mixed_sweep_trains_and_the_report_draws_set_and_rigl(tmp_path):
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 4, "--widths", "4,8,16", "--seeds", 0,
                "--epochs", 2, "--methods", "sparse,set,rigl", "method.distribution=staggered", "method.delta_t=5",
                "--no-dense-wide", "--out", tmp_path / "runs", "--name", "mixed")
    assert res.exit_code == 0, res.output
    gathered = pd.read_parquet(tmp_path / "runs" / "mixed" / results.RESULTS_FILE)
    wide = gathered[gathered.width > 4]
    assert sorted(map(tuple, wide[["method", "width"]].values)) == [
        (m, w) for m in ("rigl", "set", "sparse") for w in (8, 16)]
    assert (wide.n_weights == gathered.n_weights.iloc[0]).all()  # one budget
    moving = gathered[gathered.method.isin(["set", "rigl"])]
    assert (moving.mask_updates > 0).all() and moving.mask_kept_initial.between(0, 1, "neither").all()
    identities = {m: json.loads(i)["method"] for m, i in zip(gathered.method, gathered.identity)}
    assert "zeta" in identities["set"] and "alpha" not in identities["set"] and "alpha" in identities["rigl"]
    assert not {"zeta", "alpha", "delta_t", "t_end"} & identities["sparse"].keys()

    plots = {p.name: p.data for p in report.figures(report.load([tmp_path / "runs"], lambda msg: None))}
    test = 100 * gathered.set_index(["method", "width"]).best_test_acc
    for name in ("test_acc_vs_width", "budget_methods", "test_acc_vs_connectivity"):
        data = plots[name]
        for method in ("set", "rigl"):
            line = data[data.line == f"{method} b=4 staggered"].set_index("width")
            assert sorted(line.index) == [8, 16], name
            for w in (8, 16):
                assert line.test_mean[w] == pytest.approx(test[method, w]), name
        assert (data.line == "sparse b=4 staggered").any()
    assert plots["test_acc_vs_connectivity"].set_index("line").loc["rigl b=4 staggered"].connectivity.tolist() == \
        pytest.approx(sorted(gathered[gathered.method == "rigl"].connectivity, reverse=True))
    assert (plots["budget_methods"].line == "dense b=4").any()  # the baseline they share
    assert "set" not in set(plots.get("layer_kept_fraction", pd.DataFrame(columns=["method"])).get("method", []))


@pytest.mark.parametrize("args,needle", [
    (["--method", "set", "method.zeta=0"], "method.zeta must be a number in (0, 1)"),
    (["--method", "set", "method.zeta=1"], "method.zeta"),
    (["--method", "rigl", "method.alpha=1.5"], "method.alpha"),
    (["--method", "rigl", "method.delta_t=0"], "method.delta_t must be a whole number of steps >= 1"),
    (["--method", "rigl", "method.t_end=0"], "method.t_end must be a number in (0, 1]"),
    (["--method", "rigl", "method.t_end=1.5"], "method.t_end"),
    (["--method", "set", "method.within=io"], "method.within=io"),
])
def test_bad_values_are_refused_in_one_line(tmp_path, args, needle):
    for command in (["train", "--width", 16], ["sweep-width", "--widths", "8,16"]):
        res = widen(*command, "--dataset", "digits", "--base-width", 8, "--epochs", 1, *args, "--out", tmp_path / "o")
        assert res.exit_code == 2, res.output
        assert res.output.startswith("error: ") and needle in res.output and res.output.count("\n") == 1, res.output
        assert not (tmp_path / "o").exists()


def test_a_method_option_goes_only_to_the_listed_methods_that_have_it(tmp_path):
    """rigl's method.delta_t beside sparse is rigl's; with no listed method having it, it is refused."""
    ok = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--methods", "sparse,rigl",
               "method.delta_t=7", "--dry-run", "--out", tmp_path / "a", "--name", "a")
    assert ok.exit_code == 0, ok.output
    plan = pd.read_parquet(tmp_path / "a" / "a" / results.PLAN_FILE)
    assert {"sparse", "rigl"} <= set(plan.method)
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--methods", "sparse,set",
                "method.delta_t=7", "--dry-run", "--out", tmp_path / "b")
    assert res.exit_code == 2 and res.output.startswith("error: unknown config key 'method.delta_t'"), res.output
    assert not (tmp_path / "b").exists()
