#!/usr/bin/env bash
# Stop every daemon scripts/slurm-up.sh started, by the PID files it gave them (newest first); jobs
# still queued are cancelled first. Safe to run twice, or when nothing was started.
set -uo pipefail

DIR=${WIDEN_SLURM_DIR:-/var/tmp/widen-slurm}
export SLURM_CONF=$DIR/etc/slurm.conf

if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scancel --user=root >/dev/null 2>&1 || true
fi
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  pidfile=$DIR/run/$name.pid
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
done
exit 0
