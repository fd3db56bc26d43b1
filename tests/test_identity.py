"""Golden run folder names: the hash of a run's identity names its folder, so a finished run is found
again only if the identity is byte-for-byte what it was. These names were computed before identity moved
into its own module; any change to which fields identify a run, or how, shows up here."""
from dataclasses import replace

import pytest

from widen_cli import compose, identity
from widen_cli.identity import family_identity, identity_of, run_name
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
    return compose.load(list(overrides))[1]


@pytest.mark.parametrize("overrides", list(GOLDEN), ids=lambda o: "-".join(o[2:]))
def test_run_folder_names_are_unchanged(overrides):
    assert run_name(run_of(overrides)) == GOLDEN[overrides]


def test_data_fingerprint_names_the_folder_except_for_generated_data():
    cifar = run_of(["dataset=cifar10", "model=resnet18", "method=sparse", "width=32", "base_width=16"])
    assert run_name(replace(cifar, data_fingerprint="sha256:0123abcd")) == "cifar10-resnet18-sparse-w32-s0-609579fc"
    digits = run_of(SPARSE_DIGITS)
    assert run_name(replace(digits, data_fingerprint="sha256:0123abcd")) == run_name(digits) \
        == "digits-mlp-sparse-w32-s0-a5456bb6"


def test_pruned_parent_family_and_untuned_identities_are_unchanged():
    pruned = run_of(["dataset=digits", "model=mlp", "method=pruned-structured", "width=32", "base_width=8"])
    assert run_name(parent_run(pruned)) == "digits-mlp-dense-w32-s0-dc87ce23"
    run = run_of(SPARSE_DIGITS)
    assert identity.folder_name("x", family_identity(run)) == "x-b2d05c2d"
    assert identity.folder_name("x", identity.without_lr(identity_of(run))) == "x-ea221727"


def test_the_declared_fields_are_those_an_identity_can_hold():
    """identity.FIELDS documents the identity JSON: every key a run's identity can have, and no other."""
    full = replace(run_of(["dataset=cifar10", "model=resnet18", "method=pruned", "width=32", "base_width=16",
                           "precision=bf16"]), data_fingerprint="sha256:0123abcd")
    assert set(identity_of(full)) == set(identity.FIELDS)
    assert set(identity_of(run_of(SPARSE_DIGITS))) < set(identity.FIELDS)


def test_a_stored_identity_reads_back_equal_and_differences_name_the_keys(tmp_path):
    run = run_of(SPARSE_DIGITS)
    stored = identity.loads(identity.dumps(identity_of(run)))
    assert identity.differences(identity_of(run), stored, tmp_path) == []
    other = identity_of(run_of([*SPARSE_DIGITS, "optim.epochs=3"]))
    assert identity.differences(other, stored, tmp_path) == [f"optim.epochs: 3 here, {run.optim.epochs} in {tmp_path}"]
    assert identity.loads(None) is None  # a summary without one (pandas gives NaN or None)
