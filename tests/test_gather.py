"""results.parquet's rows and the members' own summary rows come from one producer (summary.py): a
gathered row is what its run wrote, and a failed member's row says what its run will say once trained."""
import pandas as pd
import pytest
from typer.testing import CliRunner

from widen_cli import checkpoint, results
from widen_cli.cli import app

runner = CliRunner()

# What the plan decides about a member: known before it trains, the same whether it finished or failed.
PLANNED = ["dataset", "model", "method", "width", "base_width", "n_weights", "n_weights_dense", "connectivity",
           "seed", "activation", "distribution", "within", "last_layer_connectivity", "identity", "budget",
           "variant", "parent_run", "run"]


def widen(*args):
    return runner.invoke(app, [str(a) for a in args])


def sweep(out, method: str, widths: str) -> list:
    """A digits sweep of `method` with the last layer fixed at connectivity 0.5."""
    return ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 8, "--widths", widths,
            "--methods", method, "--epochs", 1, "--last-layer-connectivity", 0.5, "--out", out, "--name", "s"]


def differing(row: pd.Series, summary: pd.Series, columns) -> list:
    def same(a, b) -> bool:
        return (pd.isna(a) and pd.isna(b)) if pd.isna(a) or pd.isna(b) else a == b

    return [(c, row[c], summary[c]) for c in columns if not same(row[c], summary[c])]


@pytest.mark.parametrize("method", ["sparse", "pruned"])
def test_a_gathered_row_is_its_runs_summary_row(tmp_path, method):
    assert widen(*sweep(tmp_path, method, "16")).exit_code == 0
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run")
    if method == "sparse":
        assert (table[table.method == method].last_layer_connectivity == 0.5).all()
    for run, row in table.iterrows():
        summary = pd.read_parquet(tmp_path / "s" / run / results.SUMMARY_FILE).iloc[0]
        assert not differing(row, summary, [c for c in results.SUMMARY_COLUMNS if c != "run"]), run
        assert summary.run == run


def test_a_failed_members_row_is_what_its_run_says_once_trained(tmp_path):
    args = sweep(tmp_path, "sparse", "16,24")
    assert widen(*args).exit_code == 0
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE)
    failing = tmp_path / "s" / table[table.method == "sparse"].run.iloc[0]  # a damaged checkpoint: it fails
    (failing / results.SUMMARY_FILE).unlink()
    (failing / checkpoint.FILENAME).write_bytes(b"PK\x03\x04 not a whole zip archive")
    assert widen(*args).exit_code == 1
    failed = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run").loc[failing.name]
    assert failed.status == "failed" and str(failing / checkpoint.FILENAME) in failed.error
    assert widen(*args, "--restart").exit_code == 0  # trained again: its own summary row now
    summary = pd.read_parquet(failing / results.SUMMARY_FILE).iloc[0]
    assert not differing(failed, summary, [c for c in PLANNED if c != "run"])
    assert summary.run == failing.name
