"""The whole-process benchmark: `widen sweep-width` on the Figure 7 MLP family against a plain PyTorch
loop (bench/plain_loop.py) that trains the same models one at a time in one process; both are timed as
subprocesses from start to exit, imports and data reading included. Also the latency of `widen --help`
and of a bad option. MNIST-sized data (784-d inputs, 10 classes) is written in MNIST's real IDX format.
Run by bench/bench.py (`--only process`)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIG7_WIDTHS = (8, 32, 128, 216, 328, 512, 635)
TARGET = 3.0  # widen sweep-width at least 3x faster than the plain loop
LATENCY_TARGET = 0.5  # seconds


def write_mnist(root: Path, n_train: int = 5_000, n_test: int = 10_000, seed: int = 0) -> None:
    """Random digits-sized images in MNIST's IDX files: <root>/MNIST/raw/{train,t10k}-{images,labels}-idx*-ubyte."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + y.tobytes())


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 2):  # 2: the bad option, on purpose
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def widen_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "widen_cli", *args]


def sweep_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["sweep-width", "--dataset", "mnist", "--data-root", str(data), "--model", "mlp", "--method", "sparse",
            "--base-width", "8", "--widths", ",".join(map(str, FIG7_WIDTHS)), "--no-dense-wide", "--seeds", "0",
            "--epochs", str(epochs), "--batch-size", "100", "--device", "cpu", "--out", str(out), "--name", "fig7"]


def reference_spec(epochs: int, threads: int) -> dict:
    """The same members for the plain loop: widths and each layer's kept weights, from widen's plan."""
    from widen_cli import plan
    from widen_cli.compose import compose_config

    cfg = compose_config(["dataset=mnist", "model=mlp", "method=sparse", "dataset.root=unused"])
    family = plan.plan_sweep(plan.family_run(cfg, 8), plan.settings(cfg, widths=list(FIG7_WIDTHS), dense_wide=False))
    members = [m for m, _ in family.members]
    return dict(widths=[m.width for m in members], kept=[list(m.kept.values()) for m in members], epochs=epochs,
                batch_size=100, lr=family.run.optim.lr, threads=threads)


def run(tmp: Path, epochs: int = 30, rounds: int = 1) -> list[tuple]:
    """Rows (name, times, result, target, met) for bench.py's table."""
    from widen_cli import hardware

    data = tmp / "mnist"
    write_mnist(data)
    threads = hardware.cpu_threads()
    spec = json.dumps(reference_spec(epochs, threads))
    ours, plain = [], []
    for r in range(rounds):  # taking turns; each side's fastest round counts
        ours.append(_timed(widen_cmd(*sweep_args(data, tmp / f"runs{r}", epochs)), tmp))
        plain.append(_timed([sys.executable, str(ROOT / "bench" / "plain_loop.py"), str(data), spec], tmp))
        print(f"  round {r + 1}: widen sweep-width {ours[-1]:.1f} s, plain loop {plain[-1]:.1f} s", flush=True)
    ratio = min(plain) / min(ours)
    rows = [(f"5. whole process: widen sweep-width, Figure 7 MLP family ({len(FIG7_WIDTHS)} sparse widths, "
             f"{epochs} epochs, batch 100, 5,000 MNIST-format images) vs a plain PyTorch loop, seconds",
             f"{min(ours):.1f} vs {min(plain):.1f}", f"{ratio:.2f}x faster", f">= {TARGET:g}x", ratio >= TARGET)]
    for name, args in (("widen --help", ["--help"]), ("widen train --width abc (bad option)",
                                                     ["train", "--width", "abc"])):
        best = min(_timed(widen_cmd(*args), tmp) for _ in range(5))
        rows.append((f"6. latency: {name}, seconds (best of 5)", f"{best:.2f}", f"{best:.2f} s",
                     f"< {LATENCY_TARGET:g} s", best < LATENCY_TARGET))
    return rows
