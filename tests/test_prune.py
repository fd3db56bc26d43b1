"""Pruned families (method pruned): budgets kept exactly on the trained models, masks that keep the largest
weights, structured ResNet pruning with consistent residual shapes, exact rewinding, one parent for
members that share it, and kill/resume during fine-tuning."""
from __future__ import annotations

import signal
import subprocess
import time

import pandas as pd
import pytest
import torch

from helpers import ENV, WIDEN, start, widen
from widen_cli import budget, checkpoint, compose, prune, results, schema

from widen_cli.identity import identity_of, run_dir, run_name
from widen_cli.budget import Member
from widen_cli.jobs import make_job, parent_run
from widen_cli.models import InputSpec, build_model, count_weights, weight_layers
from widen_cli.models.mlp import MLP

# Real `widen` subprocesses at one CPU thread (so resumed and whole runs agree bit for bit), as the
# reliability tests run them (conftest.py's one_thread fixture).
pytestmark = pytest.mark.usefixtures("one_thread")
DIGITS = ["--dataset", "digits", "--model", "mlp", "--epochs", 2]


# ---------------------------------------------------------------- maths on hand-made weights

def test_magnitude_masks_keep_the_largest_weights_per_layer_and_globally():
    model = MLP(2, [2], 2)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[0.1, -5.0], [3.0, 0.2]]))
        model.layers[1].weight.copy_(torch.tensor([[4.0, -3.5], [0.05, 1.0]]))
    layers = {"layers.0": (2, 2), "layers.1": (2, 2)}
    member = Member(width=2, base_width=1, method="pruned", budget=3, n_weights=3, n_weights_dense=8, layers=layers,
                    kept={"layers.0": 2, "layers.1": 1}, variant="magnitude")
    by_layer = prune.magnitude_masks(model, member, "layer")
    assert by_layer["layers.0"].tolist() == [[False, True], [True, False]]  # -5 and 3
    assert by_layer["layers.1"].tolist() == [[True, False], [False, False]]  # 4
    overall = prune.magnitude_masks(model, member, "global")  # 5, 4, 3.5: the second layer gets two
    assert overall["layers.0"].tolist() == [[False, True], [False, False]]
    assert overall["layers.1"].tolist() == [[True, True], [False, False]]


def _randomise(model: torch.nn.Module) -> None:
    """Every parameter and BatchNorm statistic random, so that a wrong slice anywhere shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def test_structured_resnet18_keeps_residual_shapes_and_computes_the_masked_wide_model():
    cfg = schema.ModelConfig(name="resnet18")
    spec = InputSpec(channels=3, image_size=8, num_classes=10)
    big = build_model(cfg, 8, spec)
    _randomise(big)
    shapes = budget.weight_shapes(cfg, 4, spec)
    small = prune.structured(big, build_model(cfg, 4, spec), "resnet18", shapes)
    assert count_weights(small) == budget.family_budget(cfg, 4, spec, "pruned")
    assert {n: tuple(m.weight.shape) for n, m in weight_layers(small).items()} == shapes
    # The wide model with every read of a removed channel zeroed computes exactly what the small one does:
    # the kept channels (residual streams included) were carried over consistently.
    with torch.no_grad():
        modules = dict(big.named_modules())
        for name, (_, kept_in) in prune.STRUCTURED["resnet18"](big, shapes).items():
            if kept_in is not None:
                removed = torch.ones(modules[name].weight.shape[1], dtype=torch.bool)
                removed[kept_in] = False
                modules[name].weight[:, removed] = 0
    x = torch.randn(4, 3, 8, 8)
    big.eval(), small.eval()
    torch.testing.assert_close(small(x), big(x), rtol=1e-4, atol=1e-4)
    small.train()  # and it trains: forward and backward through every residual sum
    loss = torch.nn.functional.cross_entropy(small(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in small.parameters())


def test_structured_mlp_keeps_the_units_with_the_largest_l1_norms():
    cfg = schema.ModelConfig(name="mlp", hidden_layers=2)
    spec = InputSpec(channels=1, image_size=2, num_classes=2)
    big = build_model(cfg, 4, spec)
    with torch.no_grad():
        big.layers[0].weight.copy_(torch.tensor([[1.0] * 4, [0.1] * 4, [-2.0] * 4, [0.0] * 4]))
    small = prune.structured(big, build_model(cfg, 2, spec), "mlp", budget.weight_shapes(cfg, 2, spec))
    index = prune.STRUCTURED["mlp"](big, budget.weight_shapes(cfg, 2, spec))
    kept, second = index["layers.0"][0], index["layers.1"][0]
    assert kept.tolist() == [0, 2] and index["layers.1"][1] is kept and index["layers.2"] == (None, second)
    torch.testing.assert_close(small.layers[0].bias, big.layers[0].bias[[0, 2]])
    torch.testing.assert_close(small.layers[1].weight, big.layers[1].weight[second][:, kept])
    torch.testing.assert_close(small.layers[2].weight, big.layers[2].weight[:, second])


def test_bad_pruning_options_are_user_errors(tmp_path):
    for override, words in (("method.prune=random", "method.prune must be one of"),
                            ("method.scope=stage", "method.scope must be one of"),
                            ("method.rewind_epoch=9", "method.rewind_epoch must be"),
                            ("method.finetune_epochs=0", "method.finetune_epochs must be")):
        res = widen("train", *DIGITS, "--method", "pruned", "--width", 32, "--base-width", 16, "--out", tmp_path,
                    override)
        assert res.exit_code == 2 and words in res.output, res.output
    res = widen("train", *DIGITS, "--method", "pruned", "method.prune=structured", "method.scope=global",
                "--width", 32, "--base-width", 16, "--out", tmp_path)
    assert res.exit_code == 2 and "scope global is for magnitude" in res.output


def test_other_methods_keep_their_folder_names():
    _, dense = compose.load(["dataset=digits", "model=mlp", "width=16"])
    _, pruned = compose.load(["dataset=digits", "model=mlp", "method=pruned", "width=16"])
    assert "prune" not in identity_of(dense)["method"] and identity_of(pruned)["method"]["prune"] == "magnitude"
    assert run_name(parent_run(pruned)) == run_name(dense)


# ---------------------------------------------------------------- trained members

VARIANTS = [("structured", "layer"), ("magnitude", "layer"), ("magnitude", "global"), ("magnitude-rewind", "layer")]


@pytest.mark.parametrize("variant,scope", VARIANTS)
def test_every_pruned_member_keeps_the_budget_after_fine_tuning(tmp_path, variant, scope):
    res = widen("sweep-width", *DIGITS, "--method", "pruned", "--base-width", 16, "--widths", "16,32", "--out",
                tmp_path, "--name", "s", f"method.prune={variant}", f"method.scope={scope}")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE)
    assert table.method.tolist() == ["dense", "dense", "pruned"]  # the parents first
    row = table[table.method == "pruned"].iloc[0]
    parent = table[(table.method == "dense") & (table.width == 32)].iloc[0]
    finetune = 2 if variant == "magnitude-rewind" else 1  # a quarter of 2 epochs, rounded up
    assert (row.variant, row.parent_run, row.epochs, row.total_epochs) == (variant, parent.run, finetune, 2 + finetune)
    assert parent.total_epochs == 2 and pd.isna(parent.variant)
    _, run = compose.load(["dataset=digits", "model=mlp", "method=pruned", "width=32", "base_width=16",
                          "optim.epochs=2", f"method.prune={variant}", f"method.scope={scope}"])
    member = make_job(run).member
    budget_ = member.budget
    assert budget_ == row.n_weights == count_weights(build_model(run.model, 16, _spec(run)))  # the base's count
    state = torch.load(tmp_path / "s" / row.run / results.MODEL_FILE, weights_only=True)
    if variant == "structured":  # a real width-16 model with the kept units
        model = build_model(run.model, 16, _spec(run))
        model.load_state_dict(state)
        assert count_weights(model) == budget_
        assert not (tmp_path / "s" / row.run / results.MASKS_FILE).exists()
    else:  # the wide model, exactly the budget's weights non-zero, where its mask says
        model = build_model(run.model, 32, _spec(run))
        model.load_state_dict(state)
        masks = torch.load(tmp_path / "s" / row.run / results.MASKS_FILE, weights_only=True)
        assert sum(int(m.sum()) for m in masks.values()) == budget_
        for name, layer in weight_layers(model).items():
            assert not layer.weight[~masks[name]].any()
            if scope == "layer":
                assert int(masks[name].sum()) == member.kept[name]
        assert sum(int((layer.weight != 0).sum()) for layer in weight_layers(model).values()) == budget_
    plan = pd.read_parquet(tmp_path / "s" / results.PLAN_FILE)
    assert plan[plan.method == "pruned"].deviation.tolist() == [0]


def _spec(run):
    from widen_cli.datasets import spec_from_config

    return spec_from_config(run.dataset)


def test_rewind_restores_the_parent_initial_weights_exactly(tmp_path):
    args = [*DIGITS, "--method", "pruned", "--width", 32, "--base-width", 16, "--out", tmp_path,
            "method.prune=magnitude-rewind", "method.finetune_epochs=1"]
    res = widen("train", *args)
    assert res.exit_code == 0, res.output
    given = {"dataset": "digits", "model": "mlp", "optim.epochs": 2, "method": "pruned", "width": 32,
             "base_width": 16, "out": str(tmp_path)}
    _, run = compose.load(compose.overrides_from_options(None, given, ["method.prune=magnitude-rewind",
                                                                       "method.finetune_epochs=1"]))
    parent_dir = run_dir(parent_run(run))
    init = torch.load(results.weights_at_epoch(parent_dir, 0), weights_only=True)
    torch.manual_seed(run.seed)  # what the parent's training built before its first step
    assert all(torch.equal(init[k], v) for k, v in build_model(run.model, 32, _spec(run)).state_dict().items())
    trained = torch.load(parent_dir / results.MODEL_FILE, weights_only=True)
    model, masks = prune.pruned_model(run, make_job(run).member, _spec(run), parent_dir, "finished")
    saved = torch.load(run_dir(run) / results.MASKS_FILE, weights_only=True)
    for name, layer in weight_layers(model).items():
        assert torch.equal(masks[name], saved[name])  # the mask the run trained with
        kept = masks[name]
        assert torch.equal(layer.weight[kept], init[f"{name}.weight"][kept])  # rewound, bit for bit
        assert not torch.equal(trained[f"{name}.weight"][kept], init[f"{name}.weight"][kept])  # not trained ones


def test_two_pruned_members_sharing_a_parent_train_it_once(tmp_path):
    common = ["train", *DIGITS, "--method", "pruned", "--width", 32, "--base-width", 16, "--out", tmp_path]
    procs = [start(*common, "method.prune=magnitude", "method.scope=layer"),
             start(*common, "method.prune=magnitude-rewind", "method.scope=global")]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    parents = [d for d in tmp_path.iterdir() if "-dense-" in d.name]
    assert len(parents) == 1  # one dense parent folder for both
    started = sum(err.count(f"training {parents[0]} (") for _, err in outputs)
    assert started == 1, outputs  # trained by one process; the other waited for it or read it back
    assert len(pd.read_parquet(parents[0] / results.METRICS_FILE)) == 2
    summaries = [pd.read_parquet(d / results.SUMMARY_FILE).iloc[0] for d in tmp_path.iterdir() if "-pruned-" in d.name]
    assert sorted(s.variant for s in summaries) == ["magnitude", "magnitude-rewind"]
    assert {s.parent_run for s in summaries} == {parents[0].name}


def test_a_sweep_of_sparse_and_three_pruned_variants_trains_each_dense_parent_once(tmp_path):
    """--methods sparse,pruned,pruned-structured,pruned-rewind: one plan, the dense members shared by every
    variant (they are the sparse family's dense-wide members too), each trained once, before its children."""
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", 2,
                "--methods", "sparse,pruned,pruned-structured,pruned-rewind", "--out", tmp_path, "--name", "m")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "m" / results.RESULTS_FILE)
    dense = table[table.method == "dense"]
    assert sorted(dense.width) == [16]  # one run per width, not one per method; at the base width, that run
    assert sorted(table[table.width == 8].method) == ["sparse"]  # is the sparse member (it keeps every weight)
    for parent in dense.itertuples():
        assert res.output.count(f"training {tmp_path / 'm' / parent.run} (") == 1
        assert len(pd.read_parquet(tmp_path / "m" / parent.run / results.METRICS_FILE)) == 2
    pruned = table[table.method == "pruned"]
    assert sorted(pruned.variant) == ["magnitude", "magnitude-rewind", "structured"]
    assert set(pruned.parent_run) == set(dense[dense.width == 16].run)
    assert (pruned.n_weights == 8 * (64 + 10)).all() and set(table[table.method == "sparse"].width) == {8, 16}
    again = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", 2,
                  "--methods", "sparse,pruned,pruned-structured,pruned-rewind", "--out", tmp_path, "--name", "m")
    assert again.exit_code == 0 and "running 0" in again.output


SLOW = ["train", "--dataset", "synthetic", "--model", "mlp", "--method", "pruned", "--width", 512, "--base-width",
        128, "--epochs", 3, "dataset.train_size=4096", "dataset.test_size=256", "dataset.image_size=16",
        "optim.batch_size=64", "optim.lr=0.02", "method.finetune_epochs=12"]


def test_killing_a_pruned_member_during_fine_tuning_resumes(tmp_path):
    proc = start(*SLOW, "--out", tmp_path, "--name", "cut")
    ckpt = tmp_path / "cut" / checkpoint.FILENAME
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / results.SUMMARY_FILE).exists()
    saved = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= saved < 12
    again = subprocess.run([WIDEN, *map(str, SLOW), "--out", tmp_path, "--name", "cut"], env=ENV,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"resuming {tmp_path / 'cut'} after epoch" in again.stderr and "-dense-" not in again.stderr
    whole = subprocess.run([WIDEN, *map(str, SLOW), "--out", tmp_path, "--name", "whole"], env=ENV,
                           capture_output=True, text=True)  # the same parent, read back
    assert whole.returncode == 0, whole.stderr

    def metrics(name):
        return pd.read_parquet(tmp_path / name / results.METRICS_FILE).drop(columns=["seconds", "run"])

    pd.testing.assert_frame_equal(metrics("cut"), metrics("whole"))
    assert len(metrics("cut")) == 12
    assert pd.read_parquet(tmp_path / "cut" / results.SUMMARY_FILE).total_epochs.iloc[0] == 3 + 12


def test_report_draws_pruned_members_beside_sparse_ones(tmp_path):
    from widen_cli.report.figures import figures
    from widen_cli.report.load import load

    for method, extra in (("sparse", []), ("pruned", ["method.prune=magnitude"])):
        res = widen("sweep-width", *DIGITS, "--method", method, "--base-width", 16, "--widths", "16,32", "--out",
                    tmp_path, "--name", method, *extra)
        assert res.exit_code == 0, res.output
    res = widen("report", tmp_path / "sparse", tmp_path / "pruned", "--out", tmp_path / "report")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "budget_methods.png").exists()
    plots = {p.name: p for p in figures(load([tmp_path / "sparse", tmp_path / "pruned"], lambda _: None))}
    drawn = plots["budget_methods"].data
    assert set(drawn.line) == {"sparse b=16", "pruned magnitude b=16", "dense b=16"}
    pruned = pd.read_parquet(tmp_path / "pruned" / results.RESULTS_FILE).query("method == 'pruned'").iloc[0]
    point = drawn[(drawn.line == "pruned magnitude b=16")].iloc[0]
    assert (point.width, point.test_mean) == (32, 100 * pruned.best_test_acc)  # at its parent's width
    assert "pruned magnitude b=16" in set(plots["test_acc_vs_width"].data.line)


def test_a_structured_resnet_member_trains_end_to_end(tmp_path):
    res = widen("train", "--dataset", "synthetic", "--model", "resnet18", "--method", "pruned", "--width", 4,
                "--base-width", 2, "--epochs", 1, "dataset.image_size=8", "dataset.train_size=32",
                "dataset.test_size=16", "optim.batch_size=16", "method.prune=structured", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    member = next(d for d in tmp_path.iterdir() if "-pruned-" in d.name)
    _, run = compose.load(["dataset=synthetic", "model=resnet18", "width=2", "dataset.image_size=8"])
    model = build_model(run.model, 2, _spec(run))
    model.load_state_dict(torch.load(member / results.MODEL_FILE, weights_only=True))  # the base model's shapes
    assert count_weights(model) == pd.read_parquet(member / results.SUMMARY_FILE).n_weights.iloc[0]
