"""results.py: every table is written with exactly its kind's columns and says what it is."""
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from widen_cli import results


def a_value(field, i: int):
    """A value of the field's declared type, different in each column."""
    t = field.type
    if pa.types.is_list(t):
        return [a_value(t.value_field, i)]
    if pa.types.is_timestamp(t):
        return pd.Timestamp(2026, 1, 1, i % 24, tz="UTC")
    return {pa.string(): str(i), pa.int64(): i, pa.float64(): i + 0.5, pa.bool_(): i % 2 == 0}[t]


@pytest.mark.parametrize("kind", sorted(results.TABLES))
def test_a_table_records_its_kind_and_schema_version(tmp_path, kind):
    schema = results.TABLES[kind].arrow()
    columns = results.TABLES[kind].columns
    row = {f.name: a_value(f, i) for i, f in enumerate(schema)}
    df = pd.DataFrame([row]).assign(extra="left out")[["extra", *reversed(columns)]]
    path = tmp_path / f"{kind}.parquet"
    results.write_table(df, path, kind)
    assert results.table_kind(path) == (kind, results.TABLES[kind].version)
    assert pq.read_schema(path).remove_metadata().equals(schema)
    back = results.read_table(path)
    assert list(back.columns) == columns
    assert pa.Table.from_pandas(back, preserve_index=False).to_pylist() == \
        pa.Table.from_pylist([row], schema=schema).to_pylist()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("kind", sorted(results.TABLES))
def test_a_column_without_values_keeps_its_type(tmp_path, kind):
    """All-null columns (no validation split, no pruning, Gaussian inputs) are stored as their type, not
    as untyped nulls: files of one kind then read together."""
    schema = results.TABLES[kind].arrow()
    row = {f.name: a_value(f, i) if not f.nullable else None for i, f in enumerate(schema)}
    path = tmp_path / f"{kind}.parquet"
    results.write_table(pd.DataFrame([row]), path, kind)
    assert pq.read_schema(path).remove_metadata().equals(schema)


def test_a_value_of_the_wrong_type_is_refused(tmp_path):
    df = pd.DataFrame([{c: 0.5 for c in results.METRICS_COLUMNS}])  # run: a number
    with pytest.raises((pa.ArrowException, ValueError)):
        results.write_table(df, tmp_path / "metrics.parquet", "metrics")
    df = pd.DataFrame([{**{c: 0.5 for c in results.METRICS_COLUMNS}, "run": "r", "epoch": None}])
    with pytest.raises(ValueError, match="epoch must not be null"):
        results.write_table(df, tmp_path / "metrics.parquet", "metrics")
    assert not list(tmp_path.iterdir())


def test_a_missing_column_is_refused_and_nothing_is_written(tmp_path):
    df = pd.DataFrame([{c: 0 for c in results.METRICS_COLUMNS if c != "seconds"}])
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
