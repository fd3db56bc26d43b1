"""results.py: every table is written with exactly its kind's columns and says what it is."""
import pandas as pd
import pytest

from widen_cli import results


@pytest.mark.parametrize("kind", sorted(results.TABLES))
def test_a_table_records_its_kind_and_schema_version(tmp_path, kind):
    columns = results.TABLES[kind].columns
    df = pd.DataFrame([{c: i for i, c in enumerate(columns)}]).assign(extra="left out")[["extra", *reversed(columns)]]
    path = tmp_path / f"{kind}.parquet"
    results.write_table(df, path, kind)
    assert results.table_kind(path) == (kind, results.TABLES[kind].version)
    back = results.read_table(path)
    assert list(back.columns) == columns and back.iloc[0].tolist() == list(range(len(columns)))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_missing_column_is_refused_and_nothing_is_written(tmp_path):
    df = pd.DataFrame([{c: 0 for c in results.METRICS_COLUMNS[:-1]}])
    with pytest.raises(KeyError, match="seconds"):
        results.write_table(df, tmp_path / "metrics.parquet", "metrics")
    assert not list(tmp_path.iterdir())


def test_a_table_without_metadata_has_no_kind(tmp_path):
    pd.DataFrame({c: [0] for c in results.METRICS_COLUMNS}).to_parquet(tmp_path / "old.parquet")
    assert results.table_kind(tmp_path / "old.parquet") is None


def test_summary_ends_with_what_the_report_needs():
    # (these five ended the summary until `budget` was appended after them: their places stay)
    assert results.SUMMARY_COLUMNS[16:21] == ["activation", "distribution", "within", "last_layer_connectivity",
                                              "identity"]
    assert results.RESULTS_COLUMNS[:len(results.SUMMARY_COLUMNS)] == results.SUMMARY_COLUMNS
