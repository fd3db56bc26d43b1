"""Trackers (--track / tracking=[...]): what each one logged, read back with its own library's reader from
the files it wrote offline; a tracker whose package is missing is one line naming the extra."""
import importlib.util
import json
import struct

import pandas as pd
import pytest

from helpers import widen
from widen_cli.compose import load
from widen_cli.identity import identity_of, run_name

TRAIN = ["train", "--dataset", "digits", "--width", "8", "--epochs", "3"]
METRICS = ["train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"]


def only_run(out):
    runs = [p for p in out.iterdir() if (p / "summary.parquet").exists()]
    assert len(runs) == 1, runs
    return runs[0]


def refused(res, needle, out):
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert needle in lines[0], res.output
    assert not out.exists() or not any(out.iterdir())


def test_tracking_is_no_part_of_the_identity():
    _, plain = load(["width=8"])
    _, tracked = load(["width=8", "tracking=[tensorboard]"])
    assert tracked.tracking == ("tensorboard",)
    assert run_name(tracked) == run_name(plain) and identity_of(tracked) == identity_of(plain)


def test_tensorboard_holds_each_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = widen(*TRAIN, "--track", "tensorboard", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    run = only_run(tmp_path)
    metrics = pd.read_parquet(run / "metrics.parquet")
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    for tag in METRICS:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3], tag
        assert [e.value for e in logged] == pytest.approx(metrics[tag].tolist(), rel=1e-6), tag
    assert "val_acc" not in events.Tags()["scalars"]  # not held out: not logged
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["width"].number_value == 8 and hparams["dataset.name"].string_value == "digits"
    assert hparams["n_weights"].number_value == 64 * 8 + 8 * 10


def test_sweep_members_each_get_their_own_tensorboard_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", 2,
                "--track", "tensorboard", "--out", tmp_path, "--name", "sw")
    assert res.exit_code == 0, res.output
    rows = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert len(rows) == 3  # dense 8, sparse 16, dense 16: trained batched in one process
    for run in rows.run:
        events = EventAccumulator(str(tmp_path / "sw" / run / "tb"))
        events.Reload()
        test_acc = pd.read_parquet(tmp_path / "sw" / run / "metrics.parquet").test_acc.tolist()
        assert [e.value for e in events.Scalars("test_acc")] == pytest.approx(test_acc, rel=1e-6), run


def test_unknown_tracker_is_refused(tmp_path):
    res = widen(*TRAIN, "--track", "tensorbord", "--out", tmp_path / "out")
    refused(res, "unknown tracker 'tensorbord' in tracking (--track); valid: tensorboard, mlflow, wandb",
            tmp_path / "out")


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_package_names_its_extra(tmp_path, monkeypatch, name):
    monkeypatch.setitem(__import__("sys").modules, name, None)  # as if it were not installed
    res = widen(*TRAIN, "--track", f"tensorboard,{name}", "--out", tmp_path / "out")
    refused(res, f"tracking {name} needs the {name} package: pip install 'widen_cli[{name}]'", tmp_path / "out")


def test_mlflow_file_store(tmp_path, monkeypatch):
    """A sweep's members, trained by pool processes at once, are one MLflow experiment named after the
    sweep: read back with MLflow's client on the file store, where mlflow is installed; else the one line."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", 2,
                "--track", "mlflow", "--launcher", "pool", "--jobs", 2, "--out", tmp_path, "--name", "sw")
    if importlib.util.find_spec("mlflow") is None:
        refused(res, "pip install 'widen_cli[mlflow]'", tmp_path)
        return
    assert res.exit_code == 0, res.output
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "sw" / "mlruns").as_uri())
    [experiment] = client.search_experiments()
    assert experiment.name == "sw"
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    rows = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert sorted(logged) == sorted(rows.run)
    for name, row in rows.set_index("run").iterrows():
        run, got = tmp_path / "sw" / name, logged[name]
        assert got.info.status == "FINISHED" and got.data.tags["widen.sweep"] == "sw"
        assert json.loads((run / "tracking.json").read_text())["mlflow"] == got.info.run_id
        assert got.data.params["width"] == str(row.width) and got.data.params["optim.epochs"] == "2"
        assert float(got.data.params["connectivity"]) == pytest.approx(row.connectivity)
        metrics = pd.read_parquet(run / "metrics.parquet")
        for tag in METRICS:
            history = client.get_metric_history(got.info.run_id, tag)
            assert [m.step for m in history] == [1, 2], tag
            assert [m.value for m in history] == pytest.approx(metrics[tag].tolist()), tag


def wandb_records(path):
    """The records of a W&B offline run file (its LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, part = path.read_bytes(), 7, b""  # 7: the file header, ":W&B" + magic + version
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768  # records do not cross a 32 KiB block's padding
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or a record's last piece
            yield wandb_internal_pb2.Record.FromString(part)
            part = b""


def test_wandb_offline_run(tmp_path, monkeypatch):
    """Read back from the offline run file, where wandb is installed; else the one line."""
    for var in ("WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    res = widen("sweep-width", "--dataset", "digits", "--base-width", 8, "--widths", "8,16", "--epochs", 2,
                "--track", "wandb", "--out", tmp_path, "--name", "sw")
    if importlib.util.find_spec("wandb") is None:
        refused(res, "pip install 'widen_cli[wandb]'", tmp_path)
        return
    assert res.exit_code == 0, res.output
    rows = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert len(rows) == 3
    for name in rows.run:
        run = tmp_path / "sw" / name
        [path] = (run / "wandb").glob("offline-run-*/run-*.wandb")
        records = list(wandb_records(path))
        [started] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert (started.display_name, started.run_group, started.project) == (name, "sw", "widen")
        assert started.run_id == json.loads((run / "tracking.json").read_text())["wandb"]
        config = {u.key: json.loads(u.value_json) for u in started.config.update}
        assert config["optim"]["epochs"] == 2 and config["width"] == int(name.split("-w")[1].split("-")[0])
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        test_acc = pd.read_parquet(run / "metrics.parquet").test_acc.tolist()
        assert [h["epoch"] for h in history] == [1, 2]
        assert [h["test_acc"] for h in history] == pytest.approx(test_acc)


def test_a_killed_run_resumes_its_tracker_runs(tmp_path, monkeypatch):
    """SIGKILL mid-run, then the same command: TensorBoard holds each epoch once (what the killed session
    logged past its checkpoint is purged), and MLflow, where installed, goes on in the same run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from widen_cli import checkpoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow = importlib.util.find_spec("mlflow") is not None
    args = ["train", "--dataset", "synthetic", "--width", 256, "--epochs", 12, "dataset.train_size=4096",
            "dataset.image_size=16", "optim.batch_size=64", "--track", "tensorboard" + (",mlflow" if mlflow else ""),
            "--out", tmp_path, "--name", "cut"]
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "WIDEN_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "widen_cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "cut"
    while not (run / checkpoint.FILENAME).exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.parquet").exists()  # killed mid-run
    res = widen(*args)
    assert res.exit_code == 0 and "resuming" in res.output, res.output
    metrics = pd.read_parquet(run / "metrics.parquet").set_index("epoch")
    assert metrics.index.tolist() == list(range(1, 13))
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("test_acc")}
    steps = [e.step for e in events.Scalars("test_acc")]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps
    assert [logged[s] for s in steps] == pytest.approx(metrics.test_acc[steps].tolist(), rel=1e-6)
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2  # one file per session
    if mlflow:
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        [one] = client.search_runs([client.get_experiment_by_name("widen").experiment_id])
        assert one.info.status == "FINISHED"
        history = client.get_metric_history(one.info.run_id, "test_acc")
        assert [m.step for m in history][-3:] == [10, 11, 12]
        assert {m.step: m.value for m in history}[12] == pytest.approx(metrics.test_acc[12])
