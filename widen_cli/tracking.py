"""Experiment trackers a run logs to as it trains: `tracking=[tensorboard,mlflow,wandb]` (`--track`).

One tracker run per widen run, made in the process that trains it (pool and submitit members too), by
rank 0 only; each epoch's metrics row is logged with its epoch as the step, and the run's settings (plus
its member's weight count and connectivity) as parameters. Members of a sweep are grouped by the sweep's
folder name. Everything works offline and lands beside the run:

    tensorboard  <run>/tb/ event files (`tensorboard --logdir <sweep or out>` shows them side by side)
    mlflow       an MLflow file store <sweep or out>/mlruns/, experiment = the sweep's name (else "widen");
                 $MLFLOW_TRACKING_URI, when set, is used instead
    wandb        W&B offline runs in <run>/wandb/ (`wandb sync` uploads them), group = the sweep's name;
                 $WANDB_MODE and $WANDB_PROJECT apply (default offline, project widen)

A resumed run goes on with its tracker runs (their ids are kept in <run>/tracking.json). Trackers are
not part of a run's identity: switching one on never renames or retrains a run.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

from widen_cli import results
from widen_cli.errors import UserError

IDS_FILE = "tracking.json"  # the tracker run ids of a run folder, so that a resumed run continues them
TB_DIR = "tb"  # TensorBoard's event files, under the run folder
MLFLOW_DIR = "mlruns"  # the MLflow file store, beside the run folders of a sweep (or out)
DEFAULT_GROUP = "widen"  # the MLflow experiment of runs outside a sweep


def settings(run) -> dict:
    """The run's settings, flat (`optim.lr`), plus what its member is: a tracker's parameters."""
    out = {}

    def flat(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v

    flat(dataclasses.asdict(run.job.run))
    member = run.job.member
    out.update(n_weights=member.n_weights, n_weights_dense=member.n_weights_dense, connectivity=member.connectivity)
    return out


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run folder belongs to (None for a run of its own)."""
    return run_dir.parent.name if (run_dir.parent / results.SWEEP_FILE).exists() else None


def _ids(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _keep_id(run_dir: Path, name: str, value: str) -> None:
    results.write_text(json.dumps({**_ids(run_dir), name: value}), run_dir / IDS_FILE)


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items() if k != "epoch" and v is not None}


class TensorBoard:
    module = "tensorboard"

    def __init__(self, run):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run tells TensorBoard to drop what an earlier session logged past its checkpoint.
        self.writer = SummaryWriter(str(run.dir / TB_DIR), purge_step=run.first if run.state is not None else None)
        if run.first == 1:
            from torch.utils.tensorboard.summary import hparams

            values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings(run).items()}
            for summary in hparams(values, {"test_acc": 0.0, "train_acc": 0.0, "test_loss": 0.0, "train_loss": 0.0}):
                self.writer.file_writer.add_summary(summary)

    def log(self, epoch: int, row: dict) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()  # whoever follows the run sees each epoch as it ends

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow:
    module = "mlflow"

    def __init__(self, run):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        store = None if uri else run.dir.parent / MLFLOW_DIR
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
            uri = store.resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database otherwise
        self.client = MlflowClient(tracking_uri=uri)
        sweep = sweep_of(run.dir)
        self.run_id = _ids(run.dir).get("mlflow") if run.state is not None else None
        if self.run_id is None:
            experiment = self._experiment(sweep or DEFAULT_GROUP, store)
            tags = {"widen.run_dir": str(run.dir), **({"widen.sweep": sweep} if sweep else {})}
            self.run_id = self.client.create_run(experiment, run_name=run.dir.name, tags=tags).info.run_id
            params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in settings(run).items()]
            self.client.log_batch(self.run_id, params=params)
            _keep_id(run.dir, "mlflow", self.run_id)

    def _experiment(self, name: str, store: Path | None) -> str:
        """The experiment's id, created once even when several members start at the same moment (a file
        store would otherwise get one experiment of that name per member)."""
        lock = None
        if store is not None:
            import fcntl

            lock = open(store / ".widen.lock", "w")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            found = self.client.get_experiment_by_name(name)
            return found.experiment_id if found is not None else self.client.create_experiment(name)
        finally:
            if lock is not None:
                lock.close()

    def log(self, epoch: int, row: dict) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in _scalars(row).items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "diverged": "FAILED"}.get(status, "KILLED"))


class WandB:
    module = "wandb"

    def __init__(self, run):
        import wandb

        ids = _ids(run.dir)
        resume = run.state is not None and "wandb" in ids
        self.run = wandb.init(
            mode=os.environ.get("WANDB_MODE", "offline"), dir=str(run.dir),
            project=os.environ.get("WANDB_PROJECT", "widen"), group=sweep_of(run.dir), name=run.dir.name,
            config=dataclasses.asdict(run.job.run) | {k: v for k, v in settings(run).items() if "." not in k},
            id=ids["wandb"] if resume else None, resume="allow" if resume else None,
            reinit="create_new",  # a batched family trains several runs in this process at once
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, disable_git=True))
        if not resume:
            _keep_id(run.dir, "wandb", self.run.id)

    def log(self, epoch: int, row: dict) -> None:
        self.run.log({**_scalars(row), "epoch": epoch}, step=epoch)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}
EXTRAS = {"tensorboard": None, "mlflow": "mlflow", "wandb": "wandb"}  # None: a dependency of widen_cli itself


def check(names) -> None:
    """Refuse unknown trackers, and those whose package is not installed (naming the extra to install)."""
    for i, name in enumerate(names):
        if name not in TRACKERS:
            raise UserError(f"unknown tracker {name!r} in tracking (--track); valid: {', '.join(TRACKERS)}")
        if name in names[:i]:
            raise UserError(f"tracking (--track) lists {name} twice")
        if importlib.util.find_spec(TRACKERS[name].module) is None:
            extra = EXTRAS[name]
            how = f"pip install 'widen_cli[{extra}]'" if extra else "reinstall widen_cli"
            raise UserError(f"tracking {name} needs the {TRACKERS[name].module} package: {how}")


class Trackers:
    """The trackers of the runs one epoch loop trains together (epochs.Epochs); a context manager that closes them.
    A tracker that fails while logging is dropped with a warning: training goes on."""

    def __init__(self, runs: list):
        self.open: dict[int, list] = {}  # id(run) -> [(name, tracker)]
        self.runs = [r for r in runs if r.main and r.job.run.tracking]
        try:
            for run in self.runs:
                self.open[id(run)] = []
                for name in run.job.run.tracking:
                    try:
                        self.open[id(run)].append((name, TRACKERS[name](run)))
                    except Exception as e:  # noqa: BLE001 - a tracker's own error (server, settings)
                        why = (str(e).strip() or type(e).__name__).splitlines()[0]
                        raise UserError(f"tracking {name} could not start for {run.dir}: {why}") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __enter__(self) -> Trackers:
        return self

    def log(self, run) -> None:
        """Run `run`'s last recorded epoch (lifecycle.Run.rows[-1])."""
        row = run.rows[-1]
        for name, tracker in list(self.open.get(id(run), ())):
            try:
                tracker.log(row["epoch"], row)
            except Exception as e:  # noqa: BLE001 - a tracker must not stop training
                run.console.print(f"[yellow]warning:[/yellow] tracking {name} stopped for {run.dir.name}: {e}",
                                  highlight=False, soft_wrap=True)
                self.open[id(run)].remove((name, tracker))

    def __exit__(self, kind, error, tb) -> None:
        for run in self.runs:
            status = run.status if kind is None else "interrupted"
            if kind is None and run.saved < run.job.epochs and run.status == "finished":
                status = "interrupted"  # stopped early (`until`): it goes on later
            for name, tracker in self.open.pop(id(run), ()):
                try:
                    tracker.close(status)
                except Exception:  # noqa: BLE001 - closing must not hide what ended the loop
                    pass
