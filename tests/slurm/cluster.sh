#!/usr/bin/env bash
# tests/slurm/cluster.sh -- a real single-node SLURM cluster on this machine, so
# that the Snakemake SLURM executor (profiles/slurm) is tested against a real
# scheduler (tests/test_slurm.py). Daemons are started by hand: CI containers and
# VMs often have no systemd (PID 1 is something else).
#
#   tests/slurm/cluster.sh up       install missing Debian packages, write the
#                                   configs, start the daemons, wait for an idle node
#   tests/slurm/cluster.sh down     stop ONLY the daemons this script started, by
#                                   the PIDs it recorded (checked against
#                                   /proc/<pid>/comm first), newest first
#   tests/slurm/cluster.sh status   recorded daemons, sinfo, squeue; exit 0 only
#                                   when every recorded daemon is alive and the
#                                   controller answers
#
# Environment:
#   SPURIOUS_SLURM_ACCOUNTING=1  (default) also run MariaDB + slurmdbd, because the
#                                executor plugin polls job states with `sacct`. With
#                                0, `sacct` fails and the profile MUST set
#                                `slurm-status-command: squeue` (else the plugin
#                                polls forever without a word).
#   SPURIOUS_SLURM_STATE=/var/tmp/spurious-slurm   PIDs, logs, apt output
#   SPURIOUS_SLURM_PARTITION=debug                 the one (default) partition
#   SPURIOUS_SLURM_CLUSTER=ci                      ClusterName and account
#   SPURIOUS_SLURM_USERS="alice bob"               extra users given an association
#
# Idempotent: `up` again leaves running daemons alone (about 1 s). Daemons that run
# but were not started by this script (e.g. a munged from systemd) are reused and
# never stopped by `down`.
#
# Tested on Debian 12 (Slurm 22.05.8, MUNGE 0.5.15, MariaDB 10.11) as root.
set -euo pipefail

ACCOUNTING=${SPURIOUS_SLURM_ACCOUNTING:-1}
STATE=${SPURIOUS_SLURM_STATE:-/var/tmp/spurious-slurm}
PARTITION=${SPURIOUS_SLURM_PARTITION:-debug}
CLUSTER=${SPURIOUS_SLURM_CLUSTER:-ci}
PIDS=$STATE/pids                    # one line per daemon we started: "<name> <pid> <comm>"
HOST=$(hostname -s)
SLURM_ETC=/etc/slurm
# MariaDB runs with --skip-networking (unix socket only), so this password never
# leaves the machine; it only has to match between slurmdbd.conf and the grant.
DB_PASS=spurious-ci-local

log() { printf '[cluster.sh %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for <seconds> <what> <command...>: poll every 0.2 s until the command succeeds.
wait_for() {
  local t=$1 what=$2 n
  shift 2
  n=$((t * 5))
  while ((n-- > 0)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "timed out after ${t}s waiting for: $what"
}

# pid_alive <pid> <comm>: the PID exists AND is still the program we started, so a
# PID reused by another process after a crash is never signalled.
pid_alive() {
  [[ -n ${1:-} && -r /proc/$1/comm ]] && [[ $(<"/proc/$1/comm") == "$2" ]]
}
pidfile_alive() { # pidfile_alive <pidfile> <comm>
  [[ -s $1 ]] && pid_alive "$(<"$1")" "$2"
}
record() { # record <name> <pid> <comm>
  echo "$1 $2 $3" >>"$PIDS"
  log "started $1 (pid $2)"
}

# --------------------------------------------------------------------- install --
packages() {
  local p=(munge slurmctld slurmd slurm-client)
  ((ACCOUNTING)) && p+=(slurmdbd mariadb-server)
  echo "${p[@]}"
}

install_packages() {
  local p missing=()
  for p in $(packages); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
  # A fresh image has no package lists; an old list may point at deleted versions.
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -qq
  # Keep maintainer scripts from starting services (systemd hosts, images without
  # a policy-rc.d): this script starts and stops every daemon itself.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  log "apt-get install ${missing[*]}"
  # --no-install-recommends: the slurm-wlm metapackage pulls ~40 plugin packages
  # (hdf5, rrd, influx, ipmi) a one-node test cluster never loads.
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$STATE/apt.log" 2>&1 || rc=$?
  if ((rc)) && grep -q '404' "$STATE/apt.log"; then
    # stale package lists (a security update replaced a version): refresh once
    apt-get update -qq
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >"$STATE/apt.log" 2>&1 || rc=$?
  fi
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || { cat "$STATE/apt.log" >&2; die "apt-get install failed"; }
}

# ---------------------------------------------------------------------- config --
# write_if_changed <file> <mode> <owner:group> < content; returns 0 when it wrote.
write_if_changed() {
  local f=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $f ]] && cmp -s "$tmp" "$f"; then
    rm -f "$tmp"
    return 1
  fi
  install -D -m "$2" -o "${3%:*}" -g "${3#*:}" "$tmp" "$f"
  rm -f "$tmp"
  log "wrote $f"
}

SLURM_CONF_CHANGED=0
write_configs() {
  # slurmd looks itself up by name; some containers lack the entry.
  getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
  local cpus mem acct
  cpus=$(nproc)
  # slurmd drains a node whose RealMemory exceeds what it detects: offer 80 %.
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm /run/slurm
  install -d -o root -g root /var/spool/slurmd
  if ((ACCOUNTING)); then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
  else
    acct="AccountingStorageType=accounting_storage/none"
  fi
  if write_if_changed "$SLURM_ETC/slurm.conf" 644 root:root <<EOF; then SLURM_CONF_CHANGED=1; fi
# Written by tests/slurm/cluster.sh: a one-node test cluster. Do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MpiDefault=none
# no cgroups: works in containers and VMs without a delegated cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobacct_gather feeds sacct (and --slurm-efficiency-report)
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
$acct
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for MinJobAge s; the plugin's squeue mode
# needs >= 3 x slurm-init-seconds-before-status-checks
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  if ((ACCOUNTING)); then
    # slurmdbd refuses a config readable by others (it holds the DB password)
    write_if_changed "$SLURM_ETC/slurmdbd.conf" 600 slurm:slurm <<EOF || true
# Written by tests/slurm/cluster.sh. Do not edit by hand.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  fi
}

# --------------------------------------------------------------------- daemons --
start_munge() {
  if pidfile_alive /run/munge/munged.pid munged; then
    log "munged already running (pid $(</run/munge/munged.pid))"
    return
  fi
  if [[ ! -s /etc/munge/munge.key ]]; then # the package's postinst normally makes it
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  # without systemd-tmpfiles nobody creates the runtime directories
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 "munged pid file" pidfile_alive /run/munge/munged.pid munged
  record munged "$(</run/munge/munged.pid)" munged
  wait_for 10 "a munge round trip" bash -c 'munge -n | unmunge'
}

start_mariadb() {
  if mariadb-admin ping >/dev/null 2>&1; then
    log "MariaDB already running"
  else
    [[ -d /var/lib/mysql/mysql ]] ||
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
        --auth-root-authentication-method=socket >"$STATE/mariadb-install.log" 2>&1
    install -d -o mysql -g root -m 755 /run/mysqld
    # mariadbd does not daemonize: run it in its own session, in the background.
    # --skip-networking: unix socket only, no TCP port to clash with or expose.
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >>"$STATE/mariadb.log" 2>&1 &
    wait_for 60 "MariaDB answering" mariadb-admin ping
    # record the server's PID from its pid file (the same process as $!, but the
    # pid file is what we can re-check later)
    wait_for 10 "mariadbd pid file" pidfile_alive /run/mysqld/mysqld.pid mariadbd
    record mariadbd "$(</run/mysqld/mysqld.pid)" mariadbd
  fi
  # root logs in through unix_socket auth; the slurm DB user is local only
  mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

start_slurmdbd() {
  if pidfile_alive /run/slurm/slurmdbd.pid slurmdbd; then
    log "slurmdbd already running"
  else
    slurmdbd # daemonizes and writes its pid file
    wait_for 10 "slurmdbd pid file" pidfile_alive /run/slurm/slurmdbd.pid slurmdbd
    record slurmdbd "$(</run/slurm/slurmdbd.pid)" slurmdbd
  fi
  # its first start creates the tables (a few seconds)
  wait_for 60 "slurmdbd answering sacctmgr" sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P list account format=account | grep -qx "$CLUSTER" ||
    sacctmgr -i add account "$CLUSTER" Description=ci Organization=ci >/dev/null
  local u
  for u in root ${SUDO_USER:-} ${SPURIOUS_SLURM_USERS:-}; do
    id "$u" >/dev/null 2>&1 || continue
    sacctmgr -n -P list assoc user="$u" account="$CLUSTER" format=user | grep -qx "$u" ||
      sacctmgr -i add user "$u" Account="$CLUSTER" DefaultAccount="$CLUSTER" >/dev/null
  done
}

# stop <name> <pid> <comm>: TERM, 30 s grace, then KILL -- only if still ours.
stop() {
  local n=150
  if ! pid_alive "$2" "$3"; then
    log "$1 (pid $2) already gone"
    return 0
  fi
  kill -TERM "$2"
  while ((n-- > 0)) && pid_alive "$2" "$3"; do sleep 0.2; done
  if pid_alive "$2" "$3"; then
    log "$1 (pid $2) ignored TERM: KILL"
    kill -KILL "$2"
  fi
  log "stopped $1 (pid $2)"
}

# stop_recorded <name>: stop a daemon this script started and forget it;
# returns 1 when there was none.
stop_recorded() {
  local name pid comm found=1
  [[ -s $PIDS ]] || return 1
  while read -r name pid comm; do
    [[ $name == "$1" ]] || continue
    stop "$name" "$pid" "$comm"
    found=0
  done <"$PIDS"
  grep -v "^$1 " "$PIDS" >"$PIDS.tmp" || true
  mv "$PIDS.tmp" "$PIDS"
  return $found
}

start_slurm() {
  if ((SLURM_CONF_CHANGED)) && pidfile_alive /run/slurm/slurmctld.pid slurmctld; then
    # some settings (AccountingStorageType) need a restart, not `scontrol reconfigure`
    if stop_recorded slurmd && stop_recorded slurmctld; then
      log "slurm.conf changed: restarting slurmctld and slurmd"
    else
      log "WARNING: slurm.conf changed, slurmctld is not ours: scontrol reconfigure only"
      scontrol reconfigure || true
    fi
  fi
  if pidfile_alive /run/slurm/slurmctld.pid slurmctld; then
    log "slurmctld already running"
  else
    slurmctld # daemonizes, drops to SlurmUser=slurm
    wait_for 10 "slurmctld pid file" pidfile_alive /run/slurm/slurmctld.pid slurmctld
    record slurmctld "$(</run/slurm/slurmctld.pid)" slurmctld
  fi
  wait_for 30 "slurmctld answering" bash -c 'scontrol ping | grep -q UP'
  if pidfile_alive /run/slurm/slurmd.pid slurmd; then
    log "slurmd already running"
  else
    slurmd # daemonizes, stays root (it launches jobs as their users)
    wait_for 10 "slurmd pid file" pidfile_alive /run/slurm/slurmd.pid slurmd
    record slurmd "$(</run/slurm/slurmd.pid)" slurmd
  fi
  # a node left DOWN/DRAINED by an earlier unclean stop: put it back in service
  case $(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true) in
    down* | drain* | drng* | fail*) scontrol update nodename="$HOST" state=resume || true ;;
  esac
  wait_for 60 "node $HOST idle" bash -c "sinfo -h -N -n '$HOST' -o %t | grep -Eq '^(idle|mix|alloc)'"
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "run as root (installs packages, starts daemons)"
  mkdir -p "$STATE"
  install_packages
  write_configs
  start_munge
  if ((ACCOUNTING)); then
    start_mariadb
    start_slurmdbd
  fi
  start_slurm
  log "ready: $(sinfo -h -o '%P %a %D %t %N' | tr '\n' ' ')"
}

cmd_down() {
  [[ $(id -u) == 0 ]] || die "run as root"
  [[ -s $PIDS ]] || { log "nothing recorded in $PIDS: nothing to stop"; return 0; }
  # cancel our jobs first, so that no slurmstepd outlives slurmd
  if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
    scancel --quiet --user=root 2>/dev/null || true
    if [[ -n ${SUDO_USER:-} ]]; then scancel --quiet --user="$SUDO_USER" 2>/dev/null || true; fi
    sleep 1
  fi
  local name pid comm
  # newest first: slurmd, slurmctld, slurmdbd, mariadbd, munged
  tac "$PIDS" | while read -r name pid comm; do stop "$name" "$pid" "$comm"; done
  rm -f "$PIDS"
}

cmd_status() {
  local name pid comm rc=0
  if [[ -s $PIDS ]]; then
    while read -r name pid comm; do
      if pid_alive "$pid" "$comm"; then echo "$name $pid running"; else
        echo "$name $pid gone"
        rc=3
      fi
    done <"$PIDS"
  else
    echo "no daemons recorded in $PIDS"
    rc=3
  fi
  if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
    sinfo
    squeue
  else
    echo "slurmctld not reachable"
    rc=3
  fi
  return $rc
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  packages) packages ;; # for .ci/setup-system.sh and the tests: what `up` installs
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
