# Everything runs inside .venv, which `make setup` creates from a bare python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-gpu test-slurm bench clean

$(BIN)/widen: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/widen

setup: $(BIN)/widen

# A real training run on scikit-learn's built-in digits data, on CPU, in seconds.
demo: setup
	$(BIN)/widen train --dataset digits --model mlp --width 32 --epochs 5

test: setup
	$(BIN)/python -m pytest

# The CUDA paths (tests marked gpu; they skip without CUDA): a few minutes on one GPU.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu

# --launcher submitit against a real single-node SLURM that scripts/test-slurm.sh starts (as root, with
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server installed) and stops again: about 10 minutes.
test-slurm: setup
	bash scripts/test-slurm.sh $(BIN)/python

# Speed benchmarks (not tests): our path against plain loops, as ratios; a few minutes on CPU.
# BENCH_ARGS="--device cuda" on a GPU machine.
bench: setup
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
	find runs -mindepth 1 -maxdepth 1 ! -name .gitignore -exec rm -rf {} +  # runs/ itself is tracked
