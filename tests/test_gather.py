"""results.parquet's rows and the members' own summary rows come from one producer (summary.py): a
gathered row is what its run wrote, and a failed member's row says what its run will say once trained."""
import pandas as pd
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


def same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) if pd.isna(a) or pd.isna(b) else a == b


def test_gathered_rows_are_the_runs_summary_rows_for_a_fixed_last_layer_and_a_failed_member(tmp_path):
    args = ["sweep-width", "--dataset", "digits", "--model", "mlp", "--base-width", 8, "--widths", "16,24",
            "--epochs", 1, "--last-layer-connectivity", 0.5, "--out", tmp_path, "--name", "s"]
    assert widen(*args).exit_code == 0
    table = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run")
    sparse = table[table.method == "sparse"]
    assert len(sparse) == 2 and (sparse.last_layer_connectivity == 0.5).all()
    for run, row in table.iterrows():
        summary = pd.read_parquet(tmp_path / "s" / run / results.SUMMARY_FILE).iloc[0]
        diff = [c for c in results.SUMMARY_COLUMNS if c != "run" and not same(row[c], summary[c])]
        assert not diff, (run, [(c, row[c], summary[c]) for c in diff])

    failing = tmp_path / "s" / sparse.index[0]  # a damaged checkpoint where its summary was: it fails
    (failing / results.SUMMARY_FILE).unlink()
    (failing / checkpoint.FILENAME).write_bytes(b"PK\x03\x04 not a whole zip archive")
    assert widen(*args).exit_code == 1
    failed = pd.read_parquet(tmp_path / "s" / results.RESULTS_FILE).set_index("run").loc[failing.name]
    assert failed.status == "failed" and str(failing / checkpoint.FILENAME) in failed.error
    assert widen(*args, "--restart").exit_code == 0  # trained again: its own summary row now
    summary = pd.read_parquet(failing / results.SUMMARY_FILE).iloc[0]
    diff = [c for c in PLANNED if c != "run" and not same(failed[c], summary[c])]
    assert not diff, [(c, failed[c], summary[c]) for c in diff]
    assert summary.run == failing.name
