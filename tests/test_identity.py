"""Golden run folder names: the hash of a run's identity names its folder, so a finished run is found
again only if the identity is byte-for-byte what it was. These names were computed before identity moved
into its own module; any change to which fields identify a run, or how, shows up here."""
from dataclasses import replace

import pytest

from widen_cli import config
from widen_cli.jobs import parent_run

GOLDEN = {
    ("dataset=digits", "model=mlp", "method=dense", "width=32", "base_width=32"):
        "digits-mlp-dense-w32-s0-45e3b8ce",
    ("dataset=cifar10", "model=resnet18", "method=sparse", "width=64", "base_width=16", "seed=1"):
        "cifar10-resnet18-sparse-w64-s1-51f20645",
    ("dataset=digits", "model=mlp", "method=pruned-structured", "width=32", "base_width=8"):
        "digits-mlp-pruned-structured-w32-s0-694a80bd",
    ("dataset=cifar10", "model=resnet18", "method=pruned", "width=32", "base_width=16"):
        "cifar10-resnet18-pruned-magnitude-w32-s0-07372bd0",
    ("dataset=digits", "model=mlp", "method=sparse", "width=32", "base_width=8", "precision=bf16"):
        "digits-mlp-sparse-w32-s0-14670df4",
    ("dataset=digits", "model=mlp", "method=dense", "width=16", "base_width=16", "dataset.val_fraction=0.2"):
        "digits-mlp-dense-w16-s0-b6e7e090",
    ("dataset=digits", "model=mlp", "method=linear-bottleneck", "width=32", "base_width=8"):
        "digits-mlp-linear-bottleneck-w32-s0-db841635",
    ("dataset=cifar10", "model=resnet18", "method=dense", "width=16", "base_width=16", "model.init=pytorch"):
        "cifar10-resnet18-dense-w16-s0-abe672af",
    ("dataset=digits", "model=mlp", "method=sparse", "width=32", "base_width=8", "method.last_layer_connectivity=0.5"):
        "digits-mlp-sparse-w32-s0-68a3e76e",
}
SPARSE_DIGITS = ["dataset=digits", "model=mlp", "method=sparse", "width=32", "base_width=8"]


def run_of(overrides):
    return config.load(list(overrides))[1]


@pytest.mark.parametrize("overrides", list(GOLDEN), ids=lambda o: "-".join(o[2:]))
def test_run_folder_names_are_unchanged(overrides):
    assert run_of(overrides).run_name() == GOLDEN[overrides]


def test_data_fingerprint_names_the_folder_except_for_generated_data():
    cifar = run_of(["dataset=cifar10", "model=resnet18", "method=sparse", "width=32", "base_width=16"])
    assert replace(cifar, data_fingerprint="sha256:0123abcd").run_name() == "cifar10-resnet18-sparse-w32-s0-609579fc"
    digits = run_of(SPARSE_DIGITS)
    assert replace(digits, data_fingerprint="sha256:0123abcd").run_name() == digits.run_name() \
        == "digits-mlp-sparse-w32-s0-a5456bb6"


def test_pruned_parent_family_and_untuned_identities_are_unchanged():
    pruned = run_of(["dataset=digits", "model=mlp", "method=pruned-structured", "width=32", "base_width=8"])
    assert parent_run(pruned).run_name() == "digits-mlp-dense-w32-s0-dc87ce23"
    run = run_of(SPARSE_DIGITS)
    assert config.folder_name("x", run.family_identity()) == "x-b2d05c2d"
    assert config.folder_name("x", config.without_lr(run.identity())) == "x-ea221727"
