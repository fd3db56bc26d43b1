"""One plan per command: the config is composed once, every member is derived from it, folder names
stay those of earlier versions, and every preset plans without data."""
import os
from pathlib import Path

import hydra
import pandas as pd
import pytest

from helpers import widen
from widen_cli import plan
from widen_cli.compose import CONF_DIR, compose_config, load
from widen_cli.identity import run_name


def test_run_folder_names_are_those_of_earlier_versions():
    """Folder names recorded from the version before plans were passed down: finished runs are found."""
    for overrides, name in [
        ([], "digits-mlp-dense-w32-s0-45e3b8ce"),
        (["width=8"], "digits-mlp-dense-w8-s0-6ce1e185"),
        (["precision=bf16", "width=8"], "digits-mlp-dense-w8-s0-41b557c9"),
        # ResNets: the initialisation and ImageNet augmentation every run had before model.init and the
        # published (flip-free) ImageNet recipe became the defaults.
        (["dataset=cifar100", "model=resnet18", "method=sparse", "width=36", "base_width=18", "seed=2",
          "model.init=torchvision"],
         "cifar100-resnet18-sparse-w36-s2-017e4606"),
        (["dataset=mnist", "method=sparse", "width=10", "base_width=5", "method.last_layer_connectivity=0.5",
          "model.activation=linear"], "mnist-mlp-sparse-w10-s0-dbbccbc9"),
        (["dataset=imagenet", "model=resnet18", "dataset.root=/x", "width=64", "model.init=torchvision",
          "dataset.augment=[resized_crop,flip]"],
         "imagenet-resnet18-dense-w64-s0-463d41e3"),
    ]:
        assert run_name(load(overrides)[1]) == name


def sweep_jobs(overrides, base_width, **settings):
    cfg = compose_config(overrides)
    family = plan.plan_sweep(plan.family_run(cfg, base_width), plan.settings(cfg, **settings))
    return family, [job.run_dir.name for job in family.jobs()]


@pytest.mark.parametrize("overrides,base,settings,sweep,members", [
    (["+experiment=smoke_sweep", "method.distribution=erk", "optim.epochs=2"], 8, dict(widths=[8, 16], seeds=[0, 1]),
     "digits-mlp-sparse-b8-", ["digits-mlp-sparse-w8-s0-91e8ee41", "digits-mlp-sparse-w8-s1-e1a61311",
                               "digits-mlp-sparse-w16-s0-2cb6cbff", "digits-mlp-sparse-w16-s1-1d5e3902",
                               "digits-mlp-dense-w16-s0-8aaebc78", "digits-mlp-dense-w16-s1-5ed22250"]),
    (["+experiment=fig4_relu"], 5, dict(widths=[5, 10], last_layer_connectivity=[1.0, 0.5], dense_wide=True, seeds=[0]),
     "mnist-mlp-sparse-b5-", ["mnist-mlp-sparse-w5-s0-2823a252", "mnist-mlp-sparse-w10-s0-bcd02e40",
                              "mnist-mlp-sparse-w10-s0-96134bdd", "mnist-mlp-dense-w10-s0-7cc61b69"]),
    (["dataset=cifar10", "model=resnet18", "method=linear-bottleneck", "model.init=torchvision"], 12,
     dict(widths=[12, 24]),
     "cifar10-resnet18-linear-bottleneck-b12-",
     ["cifar10-resnet18-linear-bottleneck-w12-s0-1202071e", "cifar10-resnet18-linear-bottleneck-w24-s0-8ae7a792",
      "cifar10-resnet18-dense-w12-s0-ca004e8a", "cifar10-resnet18-dense-w24-s0-7048103a"]),
])
def test_sweep_member_folders_are_those_of_earlier_versions(overrides, base, settings, sweep, members):
    # Recorded from the version that composed every member from override strings.
    family, names = sweep_jobs(overrides, base, **settings)
    assert names == members
    assert family.sweep_dir.name.startswith(sweep)
    # (recorded when staggered was the MLP's default; the default is now dense-last, a different family)
    assert sweep_jobs(["+experiment=smoke_sweep", "method.distribution=staggered"], 8)[0].sweep_dir.name == \
        "digits-mlp-sparse-b8-66406b24"


def test_dense_members_of_a_sparse_family_are_plain_dense_runs():
    family, _ = sweep_jobs(["+experiment=smoke_sweep", "method.distribution=erk"], 8, widths=[8, 16])
    dense = [job for job in family.jobs() if job.member.method == "dense"]
    assert [job.run for job in dense] == [load(["+experiment=smoke_sweep", "method=dense", "width=16", "base_width=8",
                                                f"out={family.sweep_dir}"])[1]]


def test_family_run_leaves_the_composed_config_as_it_is():
    from omegaconf import OmegaConf

    cfg = compose_config(["+experiment=smoke_sweep", "width=32"])
    before = OmegaConf.to_container(cfg)
    assert plan.family_run(cfg, 8).width == 8
    assert OmegaConf.to_container(cfg) == before


def test_pruned_jobs_hold_the_sweeps_dense_parent_job():
    from widen_cli.jobs import make_job

    family, _ = sweep_jobs(["dataset=digits", "method=pruned", "method.prune=magnitude-rewind", "method.rewind_epoch=1"],
                           8, widths=[8, 16, 32], seeds=[0, 1], dense_wide=False)
    jobs = family.jobs()
    pruned = [j for j in jobs if j.parent is not None]
    assert len(pruned) == 4 and all(any(j.parent is d for d in jobs) for j in pruned)  # planned once, not again
    assert all(j.parent.run.width == j.run.width and j.parent.run.seed == j.run.seed and
               j.parent.keep_weights == (1,) for j in pruned)
    assert make_job(pruned[0].run).parent == pruned[0].parent  # `widen train` plans it the same way


class Compositions:
    """The log that tests/compose_spy/sitecustomize.py and this process's spy append to: one line per
    Hydra composition (`compose PID`), and one per process that started with the spy (`spy PID`)."""

    def __init__(self, log: Path):
        self.log = log

    def lines(self) -> list[tuple[str, int]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [(what, int(pid)) for what, pid in (line.split() for line in text.splitlines())]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def __len__(self) -> int:
        return sum(what == "compose" for what, _ in self.lines())

    def workers(self) -> set[int]:
        """The other processes that counted (pool workers): the spy reached them."""
        return {pid for what, pid in self.lines() if what == "spy" and pid != os.getpid()}


@pytest.fixture
def compositions(monkeypatch, tmp_path):
    """Counts real Hydra compositions (the real compose runs), in this process and in every Python process
    it starts (the pool's spawned workers), through one log file."""
    log = Compositions(tmp_path / "compositions.log")
    monkeypatch.setenv("WIDEN_TEST_COMPOSE_LOG", str(log.log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent / "compose_spy"),
                                                      os.environ.get("PYTHONPATH", "")]))
    real = hydra.compose

    def counting(*args, **kwargs):
        with open(log.log, "a") as f:
            f.write(f"compose {os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(hydra, "compose", counting)
    return log


@pytest.mark.parametrize("launcher", ["local", "pool"])
def test_compositions_do_not_grow_with_the_family(tmp_path, compositions, launcher):
    counts = {}
    # 1 run and 3 (sparse 8 and 16, dense 16): a composition per member would count 1 and 3 (pool workers start
    # per sweep, not per member, so more members would only add training time)
    for widths, seeds in (("8", "0"), ("8,16", "0")):
        compositions.clear()
        res = widen("sweep-width", "--experiment", "smoke_sweep", "--widths", widths, "--seeds", seeds, "--epochs", 1,
                    "--launcher", launcher, "--jobs", 2, "--out", tmp_path, "--name", f"{launcher}-{widths}")
        assert res.exit_code == 0, res.output
        counts[widths] = len(compositions)
        assert launcher == "local" or compositions.workers()  # the pool's workers counted theirs too
        assert len(pd.read_parquet(tmp_path / f"{launcher}-{widths}" / "results.parquet")) == \
            (1 if widths == "8" else 3)
    assert counts["8"] == counts["8,16"] == 1


def test_several_methods_compose_once(tmp_path, compositions):
    # One composition for the sweep and every method in it, options and all (was one per method, two
    # for a method that takes a method option).
    res = widen("sweep-width", "--dataset", "digits", "--methods", "sparse,pruned,pruned-rewind,linear-bottleneck",
                "--widths", "32,64", "--dry-run", "--out", tmp_path, "method.distribution=erk")
    assert res.exit_code == 0, res.output
    assert len(compositions) == 1
    plan_table = pd.read_parquet(next(tmp_path.glob("*/plan.parquet")))
    assert set(plan_table.distribution.dropna()) == {"erk"}  # the option reached sparse and pruned


PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_plans_without_data(tmp_path, preset):
    res = widen("sweep-width", "--experiment", preset, "--dry-run", "--data-root", tmp_path / "no-data",
                "--out", tmp_path, "--name", "p")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "p" / "plan.parquet")
    assert len(table) >= 1 and (table.n_weights > 0).all()
    assert not any(p.is_dir() for p in (tmp_path / "p").iterdir())  # nothing ran


def test_presets_are_found_on_disk():
    assert {"smoke", "smoke_sweep", "fig1_cifar100", "table1_imagenet"} <= set(PRESETS)


def test_negative_seed_refused_in_dry_run(tmp_path):
    res = widen("sweep-width", "--experiment", "smoke_sweep", "--seeds", "0,-1", "--dry-run", "--out", tmp_path)
    assert res.exit_code == 2 and "sweep.seeds must be a list of (an integer >= 0), got [0, -1]" in res.output
    assert not any(Path(tmp_path).iterdir())


def test_members_one_by_one_equal_batched(tmp_path):
    args = ["sweep-width", "--experiment", "smoke_sweep", "--widths", "8,16", "--seeds", "0,1", "--epochs", 2,
            "--out", tmp_path]
    batched = widen(*args, "--name", "batched")
    alone = widen(*args, "--name", "alone", "sweep.batch_members=false")
    assert batched.exit_code == 0 and alone.exit_code == 0, batched.output + alone.output
    a, b = (pd.read_parquet(tmp_path / n / "results.parquet").sort_values("run").reset_index(drop=True)
            for n in ("alone", "batched"))
    assert a.run.tolist() == b.run.tolist() and len(a) == 6
    metrics = ["best_test_acc", "final_test_acc", "best_train_acc", "final_train_acc"]
    pd.testing.assert_frame_equal(a[metrics], b[metrics], atol=1e-5, rtol=0)
    # Batched members share their batch's per-epoch time; one by one, each run has its own.
    seconds = [tuple(pd.read_parquet(tmp_path / "alone" / r / "metrics.parquet").seconds) for r in a.run]
    assert len(set(seconds)) == len(seconds)
