# Everything runs inside .venv, which `make setup` creates from a bare python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo docs test test-fast test-gpu test-lowest test-slurm bench clean

$(BIN)/widen: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools
	$(BIN)/pip install -q -e '.[dev,mlflow,wandb]'  # the trackers' extras: their tests read back real files
	touch $(BIN)/widen

setup: $(BIN)/widen

# A real training run on scikit-learn's built-in digits data, on CPU, in seconds.
demo: setup
	$(BIN)/widen train --dataset digits --model mlp --width 32 --epochs 5

# docs/reference/ from the code (--help, the config dataclasses, the table schemas); tests/test_docs.py
# fails when it is stale.
docs: setup
	$(BIN)/python scripts/gen-reference.py

# The whole suite (all but the slurm tier) on two pytest-xdist workers: most tests are single-threaded
# processes, so two workers use both cores of a small machine. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The unit layer, for the inner loop: all but the tests marked slow (training, subprocesses, big plans; listed
# by name in tests/conftest.py), gpu or slurm. Under 2 minutes on 2 cores; `make test` runs everything.
test-fast: setup
	$(BIN)/python -m pytest -m 'not slow and not slurm and not gpu'

# The CUDA paths (tests marked gpu; they skip without CUDA): a few minutes on one GPU.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu

# Every dependency at the lowest version pyproject.toml allows (.ci/floors.py pins each floor; what they
# in turn need comes at its newest), in its own .venv-lowest, and the tests that touch each of them: train,
# help, Hydra configs, one sweep composing several methods (Hydra package overrides), a local sweep (nested
# progress displays), the submitit launcher, a killed run resumed from its checkpoint, kernel-distance, the
# report, Parquet tables (read with DuckDB and polars), the sparse ops, TensorBoard's event files. uv installs
# (pip's backtracking is far slower); the floors' PyTorch is a CUDA build of a few GB from PyPI.
LOWEST := .venv-lowest
LOWEST_TESTS := tests/test_cli.py::test_train_digits_end_to_end tests/test_cli.py::test_help \
	tests/test_config.py::test_config_dir_adds_presets_and_datasets \
	tests/test_config.py::test_wrong_type_names_the_expected_type tests/test_plan.py::test_several_methods_compose_once \
	tests/test_sweep.py::test_sweep_runs_every_member_and_seed \
	tests/test_sweep.py::test_local_launcher_trains_mlp_families_batched tests/test_sweep.py::test_rerun_trains_nothing \
	'tests/test_sweep.py::test_launchers_give_the_same_rows[submitit-seeds1]' \
	tests/test_reliability.py::test_sigkill_then_resume_equals_an_uninterrupted_run \
	tests/test_kernels.py::test_command_writes_the_table tests/test_kernels.py::test_command_on_mnist_files \
	tests/test_report.py::test_real_sweep_report tests/test_report.py::test_every_figure_is_drawn_and_linked \
	tests/test_results.py tests/test_tables.py tests/test_sparse_ops.py tests/test_data.py::test_digits \
	tests/test_data.py::test_reads_each_format tests/test_tracking.py::test_tensorboard_holds_each_epoch

$(LOWEST)/floors.txt: pyproject.toml .ci/floors.py
	rm -rf $(LOWEST)
	$(PY) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q uv
	$(PY) .ci/floors.py > $(LOWEST)/floors.new
	$(LOWEST)/bin/uv pip install -q --no-cache --python $(LOWEST)/bin/python -c $(LOWEST)/floors.new -e '.[dev]'
	mv $(LOWEST)/floors.new $@

test-lowest: $(LOWEST)/floors.txt
	$(LOWEST)/bin/python -m pytest --disable-warnings $(LOWEST_TESTS)  # warnings: old floors beside new deps

# --launcher submitit against a real single-node SLURM that scripts/test-slurm.sh starts (as root, with
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server installed) and stops again: about 10 minutes.
test-slurm: setup
	bash scripts/test-slurm.sh $(BIN)/python

# Speed benchmarks (not tests): our path against plain loops, as ratios; a few minutes on CPU.
# BENCH_ARGS="--device cuda" on a GPU machine.
bench: setup
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache build dist
	find runs -mindepth 1 -maxdepth 1 ! -name .gitignore -exec rm -rf {} +  # runs/ itself is tracked
