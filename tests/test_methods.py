"""The method registry (widen_cli/methods/): every conf/method/*.yaml names a registered method, and a
method added from outside (a subclass, a YAML file, one registry entry) plans and trains a digits run
with no edit elsewhere, its training hook called at every step."""
from __future__ import annotations

import pandas as pd
import torch
from rich.console import Console

from widen_cli import compose, plan, results
from widen_cli.identity import run_name
from widen_cli.datasets import spec_from_config
from widen_cli.jobs import make_job
from widen_cli.methods import REGISTRY, method_of
from widen_cli.methods.sparse import Sparse
from widen_cli.models import weight_layers
from widen_cli.train import run_training

QUIET = Console(quiet=True)


def test_every_method_config_names_a_registered_method_and_back():
    names = compose.choices("method")
    composed = {compose.compose_config([f"method={n}"]).method.name for n in names}
    assert composed == set(REGISTRY)


class StepLog:
    """A MaskUpdater that records the steps it saw, each after the gradients exist."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.steps = model, []

    def after_backward(self, step: int) -> None:
        assert all(p.grad is not None for p in self.model.parameters()), "called before loss.backward()"
        self.steps.append(step)

    def state_dict(self) -> dict:
        return {"steps": list(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = list(state["steps"])

    def log(self) -> dict:
        return {}


class Logged(Sparse):
    """The sparse method under a name of its own, with a training hook."""

    name = "logged"
    batched = False  # stacked training calls no updater

    def __init__(self):
        super().__init__()
        self.made: list[StepLog] = []

    def updater(self, run, model, masks, optimizer, steps_per_epoch):
        self.made.append(StepLog(model))
        return self.made[-1]


def test_a_method_registered_from_outside_plans_and_trains(tmp_path, monkeypatch):
    logged = Logged()
    monkeypatch.setitem(REGISTRY, logged.name, logged)
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "logged.yaml").write_text("name: logged\ndistribution: null\n")
    _, run = compose.load(["dataset=digits", "model=mlp", "method=logged", "width=48", "base_width=32",
                          "optim.epochs=2", f"out={tmp_path / 'runs'}"], [conf])
    assert method_of(run) is logged and "-logged-w48-s0-" in run_name(run)

    spec = spec_from_config(run.dataset)
    members = [m for m, _ in plan.plan_family(run, spec, [32, 48], dense_wide=True)]
    assert [(m.method, m.width) for m in members] == [("logged", 32), ("logged", 48), ("dense", 48)]
    assert plan.is_dense_baseline(members[0]) and members[1].n_weights == members[1].budget == members[0].n_weights

    job = make_job(run)
    result = run_training(job, QUIET)
    summary = pd.read_parquet(job.run_dir / results.SUMMARY_FILE).iloc[0]
    assert summary.method == "logged" and summary.status == "finished" and summary.epochs == 2
    kept = sum(int((layer.weight != 0).sum()) for layer in weight_layers(result.model).values())
    assert kept == job.member.budget  # its masks (the sparse family's) held through training
    steps = len(logged.made[0].steps) // 2
    assert steps > 1 and logged.made[0].steps == list(range(2 * steps))
