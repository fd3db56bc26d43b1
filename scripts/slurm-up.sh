#!/usr/bin/env bash
# A single-node SLURM for `make test-slurm`: munge, MariaDB, slurmdbd, slurmctld and slurmd, each started
# by this script with a PID file under $WIDEN_SLURM_DIR (default /var/tmp/widen-slurm), so that
# scripts/slurm-down.sh stops exactly what was started here. Idempotent: a daemon already running from
# an earlier call is kept. Needs root and Debian's packages:
#   apt-get install -y slurm-wlm munge slurmdbd mariadb-server
# Why each piece (Slurm 22.05):
# - accounting through slurmdbd + MariaDB: submitit reads job states with `sacct`, and 22.05 has no
#   file-based accounting that sacct reads (without it a job that dies silently stays UNKNOWN forever);
# - munge on its default socket: slurmctld's connection to slurmdbd ignores any other socket setting;
# - DefMemPerCPU: otherwise one job takes the node's memory and two jobs never run at once.
# Prints `export SLURM_CONF=...` as its last line (the commands find the cluster through it).
set -euo pipefail

DIR=${WIDEN_SLURM_DIR:-/var/tmp/widen-slurm}
HOST=$(hostname -s)
CPUS=$(nproc)
DB_PORT=${WIDEN_SLURM_DB_PORT:-3317}
DBD_PORT=${WIDEN_SLURM_DBD_PORT:-6829}
CTLD_PORT=${WIDEN_SLURM_CTLD_PORT:-6827}
SLURMD_PORT=${WIDEN_SLURM_SLURMD_PORT:-6828}
export SLURM_CONF=$DIR/etc/slurm.conf

for cmd in munged mariadbd mysql_install_db slurmdbd slurmctld slurmd sacctmgr sinfo srun sbatch sacct; do
  command -v "$cmd" >/dev/null || { echo "slurm-up: $cmd not found (apt-get install -y slurm-wlm munge slurmdbd mariadb-server)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm-up: run as root" >&2; exit 1; }

mkdir -p "$DIR"/{etc,log,run,state,spool,mysql}
chmod 755 "$DIR"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$((t * 2))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "slurm-up: $what did not come up; logs in $DIR/log" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  return 1
}

# munge, on its default socket. One started by the system is used as it is (and never stopped here).
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid --log-file=/var/log/munge/munged.log
  wait_for 10 munged test -s /run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/run/munged.pid"  # ours: slurm-down stops it
  wait_for 10 munged munge -n
fi

# MariaDB in its own data folder, on its own port and socket.
if ! alive "$DIR/run/mariadbd.pid"; then
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mysql_install_db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket >"$DIR/log/mysql_install.log" 2>&1
  fi
  mariadbd --user=root --datadir="$DIR/mysql" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --skip-name-resolve >/dev/null 2>&1 &
  wait_for 60 mariadb mariadb --socket="$DIR/run/mysql.sock" -e "select 1"
  mariadb --socket="$DIR/run/mysql.sock" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'widen-slurm';
    GRANT ALL ON widen_slurm_acct.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
fi

cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=widen-slurm
StorageLoc=widen_slurm_acct
EOF
chmod 600 "$DIR/etc/slurmdbd.conf"

# Limits in minutes; the node's memory below the machine's. `short` (1 minute at most) is where a job
# asking for more pends for ever (PartitionTimeLimit), what a test looks for.
cat >"$SLURM_CONF" <<EOF
ClusterName=widen
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=5
InactiveLimit=0
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL MaxTime=1 State=UP
EOF

if ! alive "$DIR/run/slurmdbd.pid"; then
  slurmdbd 2>>"$DIR/log/slurmdbd.log" || true
  wait_for 60 slurmdbd sacctmgr -n list cluster
fi
sacctmgr -i add cluster widen >/dev/null 2>&1 || true
sacctmgr -i add account widen Cluster=widen Description=tests Organization=widen >/dev/null 2>&1 || true
sacctmgr -i add user root Account=widen Cluster=widen >/dev/null 2>&1 || true

if ! alive "$DIR/run/slurmctld.pid"; then
  slurmctld -f "$SLURM_CONF" 2>>"$DIR/log/slurmctld.log"
  wait_for 60 slurmctld scontrol ping
else
  scontrol reconfigure >/dev/null  # already up: read slurm.conf again
fi
if ! alive "$DIR/run/slurmd.pid"; then
  slurmd -f "$SLURM_CONF" 2>>"$DIR/log/slurmd.log"
fi
wait_for 60 "the node" bash -c "sinfo -h -N -o %t | grep -qx idle"
scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
wait_for 60 srun timeout 30 srun -N1 -n1 -t 1 true
echo "export SLURM_CONF=$SLURM_CONF"
