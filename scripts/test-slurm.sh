#!/usr/bin/env bash
# `make test-slurm`: start a single-node SLURM (scripts/slurm-up.sh), run the tests marked slurm against
# it, and stop every daemon it started (scripts/slurm-down.sh), also when a step fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
trap 'bash scripts/slurm-down.sh' EXIT
eval "$(bash scripts/slurm-up.sh | tail -n 1)"  # export SLURM_CONF=...
# Its own temporary folder: pytest run elsewhere on the machine prunes the shared one while jobs use it.
"$PYTHON" -m pytest -m slurm tests/test_slurm.py --basetemp="${WIDEN_SLURM_DIR:-/var/tmp/widen-slurm}/pytest"
