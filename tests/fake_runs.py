"""Result tables as sweep-width leaves them, with made-up accuracies, for the report's tests: a sweep
folder's results.parquet, plan.parquet and member folders, and one summary row per member run."""
import functools
import json
from dataclasses import replace

import pandas as pd
import yaml

from widen_cli import compose, results
from widen_cli.budget import default_distribution, fix_last_layer
from widen_cli.identity import identity_of
from widen_cli.schema import MethodConfig


def mlp_weights(width, inputs=64, classes=10):
    return width * (inputs + classes)


def write_sweep(folder, rows, dataset="digits", method="sparse", base_width=8, members=True):
    """A sweep folder as sweep-width leaves it: results.parquet, plan.parquet and one folder per member."""
    folder.mkdir(parents=True)
    df = pd.DataFrame(rows)
    df["run"] = [f"{dataset}-mlp-{r.method}-w{r.width}-s{r.seed}-{i:08x}" for i, r in enumerate(df.itertuples())]
    results.write_table(df, folder / "results.parquet", "results")
    if members:
        for r in df.to_dict("records"):
            run_dir = folder / r["run"]
            run_dir.mkdir()
            results.write_table(pd.DataFrame([r]), run_dir / "summary.parquet", "summary")
            (run_dir / "config.yaml").write_text(yaml.safe_dump(
                {"model": {"name": "mlp", "activation": "relu"},
                 "method": {"name": r["method"], "within": "all", "distribution": r["distribution"]}}))
    plan = df.drop_duplicates(["method", "width", "last_layer_connectivity"])
    sizes = [[64 * w, 10 * w] for w in plan.width]
    kept = [[round(min(1.0, c * 0.9) * a), round(min(1.0, c * 1.8) * b)] for c, (a, b) in zip(plan.connectivity, sizes)]
    results.write_table(pd.DataFrame(dict(
        width=plan.width, widening_factor=plan.widening_factor, method=plan.method, distribution=plan.distribution,
        within=plan.within, last_layer_connectivity=plan.last_layer_connectivity, connectivity=plan.connectivity,
        n_weights=plan.n_weights, n_weights_dense=plan.n_weights_dense, budget=mlp_weights(base_width), deviation=0,
        bottleneck_ratio=None, layers=[["layers.0", "layers.1"]] * len(plan), layer_sizes=sizes, layer_kept=kept,
        layer_kept_fraction=[[min(1.0, c * 0.9), min(1.0, c * 1.8)] for c in plan.connectivity], variant=None)),
        folder / "plan.parquet", "plan")
    return df


@functools.cache
def default_run(dataset):
    return compose.load([f"dataset={dataset}", "model=mlp"])[1]


def member_run(dataset, method, width, base_width, seed, llc=None, epochs=3, out="runs"):
    """The validated config of a run of this member with these settings."""
    run = default_run(dataset)
    method = MethodConfig(name=method) if method != "sparse" else \
        fix_last_layer(MethodConfig(name=method, distribution=default_distribution("mlp")), llc)  # as validate
    return replace(run, method=method, width=width,
                   base_width=base_width, seed=seed, optim=replace(run.optim, epochs=epochs), out=str(out))


def identity(*member, **settings):
    """The summary's identity column, as such a run records it."""
    return json.dumps(identity_of(member_run(*member, **settings)), sort_keys=True)


def row(method, width, base_width, seed, acc, dataset="digits", llc=None, n_weights=None, epochs=3):
    dense = mlp_weights(width)
    n = n_weights or (dense if method == "dense" else mlp_weights(base_width))
    return dict(dataset=dataset, model="mlp", method=method, width=width, base_width=base_width, n_weights=n,
                n_weights_dense=dense, connectivity=n / dense, seed=seed, epochs=epochs, status="finished",
                best_test_acc=acc, final_test_acc=acc - 0.01, best_train_acc=acc + 0.02, final_train_acc=acc + 0.01,
                wall_seconds=1.0, activation="relu",
                distribution=None if method == "dense" else member_run(dataset, method, width, base_width, seed,
                                                                       llc=llc).method.distribution,
                within=None if method == "dense" else "all", last_layer_connectivity=llc,
                identity=identity(dataset, method, width, base_width, seed, llc=llc, epochs=epochs),
                widening_factor=width / base_width, run="", error=None, budget=n, variant=None, parent_run=None,
                total_epochs=epochs)
