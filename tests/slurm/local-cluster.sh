#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the integration tests.
#   local-cluster.sh start   install slurm-wlm + munge if missing, configure, start daemons
#   local-cluster.sh stop    stop the daemons started here and remove the config written
#                            here (with it left behind, every SLURM client command on this
#                            machine, and so every Snakemake start, which loads the SLURM
#                            executor plugin, waits about 9 s for a controller that is gone)
#   local-cluster.sh status  sinfo
# Partitions: `cpu` (default) and `gpu`, both on this node (no GPUs: the test profile
# keeps the partition routing and leaves out the GPU gres). No accounting database:
# status comes from squeue, so finished jobs must stay visible (large MinJobAge).
set -euo pipefail

STATE=${SAM4EM_SLURM_STATE:-/tmp/sam4em-slurm}
CONF_DIR=/etc/slurm
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

install_packages() {
    local missing=()
    for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

write_config() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc, which counts OMP_NUM_THREADS
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    $SUDO mkdir -p "$CONF_DIR" "$STATE"/{ctld,d,log}
    $SUDO tee "$CONF_DIR/slurm.conf" >/dev/null <<CONF
ClusterName=sam4em-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start_munge() {
    $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    $SUDO chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    $SUDO chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        $SUDO chown munge:munge /etc/munge/munge.key
        $SUDO chmod 0400 /etc/munge/munge.key
    fi
    if ! pgrep -x munged >/dev/null; then
        if [ -z "$SUDO" ]; then runuser -u munge -- /usr/sbin/munged; else sudo -u munge /usr/sbin/munged; fi
    fi
}

start() {
    install_packages
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || $SUDO slurmctld
    pgrep -x slurmd >/dev/null || $SUDO slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "slurm did not come up; logs in $STATE/log" >&2
    $SUDO scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    sinfo
    return 1
}

stop() {
    for d in slurmd slurmctld; do $SUDO pkill -x "$d" 2>/dev/null || true; done
    for _ in $(seq 1 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
    if grep -qx "ClusterName=sam4em-test" "$CONF_DIR/slurm.conf" 2>/dev/null; then
        $SUDO rm -f "$CONF_DIR/slurm.conf"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
