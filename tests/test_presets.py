"""The figure presets in conf/experiment/: each composes to the paper's set-up, and every budget of a
multi-budget preset plans (no data read). `test_plan.py` dry-runs every preset through the CLI."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from widen_cli import compose, plan, validation

PRESETS = sorted(p.stem for p in (compose.CONF_DIR / "experiment").glob("*.yaml"))
FIGURES = [p for p in PRESETS if not p.startswith(("smoke", "fig7"))]  # fig7_*: Figure 7's own (lr-tuned) presets
PLAN_ONLY = ("fig10_cifar100",)  # drawn from the plan: --dry-run, no training, so no seeds needed
CIFAR100_WEIGHTS = {8: 180_952, 12: 402_180, 18: 897_462, 40: 4_391_480, 64: 11_210_432}  # Appendix A


def composed(preset: str):
    cfg = compose.compose_config([f"+experiment={preset}"])
    return cfg, validation.sweep_config(cfg)


def budgets(preset: str) -> list[int]:
    cfg, s = composed(preset)
    return list(s.base_widths or [cfg.base_width])


@pytest.mark.parametrize("preset", FIGURES)
def test_figure_presets_default_to_several_seeds(preset):
    """Seeds default to what the figure needs: one seed only for smoke presets (and plan-only figures)."""
    _, s = composed(preset)
    assert len(s.seeds) >= (1 if preset in PLAN_ONLY else 3) and len(set(s.seeds)) == len(s.seeds)


@pytest.mark.parametrize("preset", [p for p in PRESETS if OmegaConf.select(composed(p)[0], "sweep.base_widths")])
def test_every_budget_of_a_multi_budget_preset_plans(preset):
    """One plan holds every budget, each its own family with its own widths and an exact weight count."""
    cfg, s = composed(preset)
    assert cfg.base_width == s.base_widths[0]  # a plain `widen train --experiment` gets the first of them
    family = plan.plan_sweep(plan.family_run(cfg, None), s)
    table = family.table()
    assert sorted(table.base_width.unique()) == sorted(s.base_widths)
    for b, members in table.groupby("base_width"):
        assert len(members) >= 3 and members.width.min() == b
        kept = members[members.method != "dense"]
        assert (kept.budget == kept.budget.iloc[0]).all()
        if family.run.dataset.name == "cifar100" and family.run.method.name == "sparse":
            assert (kept.n_weights == CIFAR100_WEIGHTS[b]).all()


def test_figure_5_on_every_dataset_the_paper_shows():
    for dataset in ("cifar10", "cifar100", "svhn"):
        cfg, s = composed(f"fig5_{dataset}")
        assert (cfg.dataset.name, cfg.model.name, cfg.method.name) == (dataset, "resnet18", "sparse")
        assert list(s.base_widths) == [8, 12, 18, 40, 64] and s.dense_wide  # Figure 6 needs the dense members


def test_figure_3_on_cifar10_and_cifar100():
    for dataset in ("cifar10", "cifar100"):
        for method in ("linear", "nonlinear"):
            cfg, s = composed(f"fig3_{method}_{dataset}")
            assert (cfg.dataset.name, cfg.method.name) == (dataset, f"{method}-bottleneck")
            assert list(s.base_widths) == [8, 12, 18]


def test_figure_9_compares_within_all_and_io_on_the_same_families():
    (a, sa), (b, sb) = composed("fig9_within_all"), composed("fig9_within_io")
    assert (a.method.within, b.method.within) == ("all", "io")
    assert a.dataset.name == b.dataset.name == "cifar100"
    assert list(sa.base_widths) == list(sb.base_widths) == [8, 12, 18]
    assert list(sa.seeds) == list(sb.seeds) == list(range(10))
    a.method.within = "io"
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)  # nothing else differs


def test_table_1_is_the_published_imagenet_recipe():
    cfg, s = composed("table1_imagenet")
    run = plan.family_run(cfg, None)
    assert list(s.widths) == [64, 90, 128, 181, 256] and s.dense_wide
    assert run.dataset.augment == ("resized_crop",) and run.model.init == "lecun"
    assert (run.optim.schedule, run.optim.epochs, run.optim.weight_decay) == ("cosine", 150, 1e-4)


def test_presets_name_their_command():
    """Each figure preset's header shows the one command that runs it."""
    for preset in FIGURES:
        text = (Path(compose.CONF_DIR) / "experiment" / f"{preset}.yaml").read_text()
        assert f"--experiment {preset}" in text, preset
