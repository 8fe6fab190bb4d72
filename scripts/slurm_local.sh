#!/usr/bin/env bash
# A real SLURM (munge + slurmctld + slurmd) on one machine, for tests and demos: one node on
# loopback, or (--nodes N) N nodes, each slurmd in its own network namespace with its own address.
#
#   scripts/slurm_local.sh install   apt-get the Debian packages (munge, slurmctld, slurmd,
#                                    slurm-client, slurm-wlm-torque for PBS-style qsub/qdel;
#                                    iproute2 and util-linux (nsenter) for --nodes)
#   scripts/slurm_local.sh up        generate slurm.conf, start the daemons, wait for the node(s);
#                                    prints `export SLURM_CONF=...` on stdout (eval it)
#   scripts/slurm_local.sh check     sinfo, srun hostname, an sbatch job and a qsub job
#   scripts/slurm_local.sh status    daemons, sinfo, squeue
#   scripts/slurm_local.sh down      cancel jobs, stop the daemons this script started (by PID)
#   scripts/slurm_local.sh env       print the export line again
#
# Multi-node: every command above takes --nodes N (N >= 3 for the multi-node tests). A bridge
# `motex0` holds $SUBNET.1/24, the controller's (and the Dask scheduler's) address; node K is the
# network namespace motex-nodeK, whose end of a veth pair on the bridge is also named `motex0` (so
# one Dask `interface: motex0` fits the scheduler and every worker) with address $SUBNET.(10+K);
# its slurmd runs there as NodeName=nodeK. The namespace motex-outside ($SUBNET.200) runs no
# slurmd: a host on the same network that is not part of any campaign (the tests' intruder).
# Traffic stays on the bridge; the filesystem is shared, as on a cluster. The multi-node SLURM has
# its own state (MOTEX_SLURM_MULTI_DIR, default /tmp/motex-slurm-multi) and ports (6827/6828), so it
# runs beside the single-host one; `down --nodes N` removes its daemons, namespaces and links.
#   scripts/slurm_local.sh kill-node K --nodes N    kill every process in node K's namespace (its
#                                                   slurmd and its jobs' processes): a node lost
#   scripts/slurm_local.sh revive-node K --nodes N  start node K's slurmd again
#
# No systemd: daemons run in the foreground under setsid with stdin/stdout detached (otherwise the
# calling shell waits on them), and are stopped through the PIDs recorded at start.
# Must run as root (slurmd launches jobs as the submitting user, here root).
# Environment: MOTEX_SLURM_DIR (single host: state, logs, slurm.conf; --nodes: MOTEX_SLURM_MULTI_DIR),
# MOTEX_SLURM_CPUS (CPUs to advertise per node; default the real count, 2 per node with --nodes), MOTEX_SLURMCTLD_PORT / MOTEX_SLURMD_PORT,
# MOTEX_SLURM_SUBNET (multi-node: the bridge's /24, default 10.213.0).
set -euo pipefail

CMD=${1:-}
shift || true
NODES=0
KNODE=""
while (($#)); do
    case $1 in
        --nodes) NODES=${2:-}; shift 2 || shift ;;
        --nodes=*) NODES=${1#--nodes=}; shift ;;
        *) KNODE=$1; shift ;;
    esac
done
[[ $NODES =~ ^[0-9]+$ ]] || { echo "slurm_local: error: --nodes must be a whole number (got '$NODES')" >&2; exit 2; }

if ((NODES > 0)); then
    DIR=${MOTEX_SLURM_MULTI_DIR:-/tmp/motex-slurm-multi}
    CTLD_PORT=${MOTEX_SLURMCTLD_PORT:-6827}
    SLURMD_PORT=${MOTEX_SLURMD_PORT:-6828}
else
    DIR=${MOTEX_SLURM_DIR:-/tmp/motex-slurm}
    CTLD_PORT=${MOTEX_SLURMCTLD_PORT:-6817}
    SLURMD_PORT=${MOTEX_SLURMD_PORT:-6818}
fi
CONF=$DIR/slurm.conf
SUBNET=${MOTEX_SLURM_SUBNET:-10.213.0}
BRIDGE=motex0
OUTSIDE=motex-outside
PACKAGES=(munge slurmctld slurmd slurm-client slurm-wlm-torque iproute2 util-linux)

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# start NAME LOGFILE CMD...: run CMD detached in its own session; its PID goes to $DIR/NAME.pid
start() {
    local name=$1 logfile=$2
    shift 2
    # cd: a daemon keeps no caller's folder busy (and is not left in one that gets deleted).
    (cd / && exec setsid "$@" </dev/null >"$logfile" 2>&1) &
    echo $! >"$DIR/$name.pid"
}

alive() { [[ -f $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

stop() {
    local name=$1 pid i
    alive "$name" || { rm -f "$DIR/$name.pid"; return 0; }
    pid=$(cat "$DIR/$name.pid")
    kill "$pid"
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$DIR/$name.pid"
    log "stopped $name (pid $pid)"
}

# The multi-node SLURM runs its own munged on its own socket, so that either SLURM can be taken
# down without breaking the other; the single-host one reuses a munged already running.
if ((NODES > 0)); then MUNGE_SOCKET=$DIR/munge/munge.socket; else MUNGE_SOCKET=/run/munge/munge.socket.2; fi
munge_ok() { munge -S "$MUNGE_SOCKET" -n </dev/null 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

# The slurmd daemons: "slurmd" on this host, or slurmd-nodeK in namespace motex-nodeK.
slurmds() {
    if ((NODES > 0)); then
        local k
        for k in $(seq "$NODES"); do echo "slurmd-node$k"; done
    else
        echo slurmd
    fi
}

write_conf() {
    local topology k nodes names ctld_addr what
    # The node's real CPUs, topology and RealMemory, as slurmd itself detects them.
    topology=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
    if [[ -n ${MOTEX_SLURM_CPUS:-} ]] || ((NODES > 0)); then
        topology="CPUs=${MOTEX_SLURM_CPUS:-2} $(grep -o 'RealMemory=[0-9]*' <<<"$topology")"
    fi
    if ((NODES > 0)); then
        nodes=""
        for k in $(seq "$NODES"); do
            nodes+="NodeName=node$k NodeAddr=$SUBNET.$((10 + k)) $topology State=UNKNOWN"$'\n'
        done
        names="node[1-$NODES]" ctld_addr=$SUBNET.1
        what="$NODES nodes in network namespaces on bridge $BRIDGE ($SUBNET.0/24)"
    else
        nodes="NodeName=localhost NodeAddr=127.0.0.1 $topology State=UNKNOWN"
        names=localhost ctld_addr=127.0.0.1
        what='one node (this host, as "localhost" on 127.0.0.1)'
    fi
    cat >"$CONF" <<EOF
# Generated by scripts/slurm_local.sh: $what, one partition.
ClusterName=motex$( ((NODES > 0)) && echo multi || true)
# "localhost" makes slurmctld accept this host as the controller; the address is the one nodes dial.
SlurmctldHost=localhost($ctld_addr)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
# %n: one spool, pid and log file per node (the nodes share this filesystem).
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pidfile
SlurmdPidFile=$DIR/slurmd-%n.pidfile
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# Cores are consumable, memory is not: --mem only has to fit in RealMemory.
SelectTypeParameters=CR_Core
# Trust this file over the hardware probe (lets MOTEX_SLURM_CPUS advertise more CPUs).
SlurmdParameters=config_overrides
ReturnToService=2
# A node that stops answering is DOWN after this long (a lost node), back when its slurmd registers.
SlurmdTimeout=20
# Finished jobs leave squeue quickly; walltime kills follow SIGTERM by SIGKILL after KillWait s.
MinJobAge=10
KillWait=10
InactiveLimit=0
$nodes
# LLN: each job goes to the least loaded node, so N one-core worker jobs spread over N nodes.
PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP LLN=YES
EOF
}

# -- network namespaces (multi-node) ---------------------------------------------------------------

netns_up() {
    local k ns addr
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip addr replace "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for k in $(seq "$NODES") outside; do
        if [[ $k == outside ]]; then ns=$OUTSIDE addr=$SUBNET.200; else ns=motex-node$k addr=$SUBNET.$((10 + k)); fi
        ip netns list | grep -qw "^$ns" || ip netns add "$ns"
        if ! ip -n "$ns" link show "$BRIDGE" >/dev/null 2>&1; then
            ip link add "motexv-$k" type veth peer name "$BRIDGE" netns "$ns"
            ip link set "motexv-$k" master "$BRIDGE" up
        fi
        ip -n "$ns" addr replace "$addr/24" dev "$BRIDGE"
        ip -n "$ns" link set "$BRIDGE" up
        ip -n "$ns" link set lo up
    done
}

netns_down() {
    local k
    for k in $(seq "$NODES") outside; do
        [[ $k == outside ]] && kill_ns "$OUTSIDE" || kill_ns "motex-node$k"
        ip link del "motexv-$k" 2>/dev/null || true
        if [[ $k == outside ]]; then ip netns del "$OUTSIDE" 2>/dev/null || true
        else ip netns del "motex-node$k" 2>/dev/null || true; fi
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

# kill_ns NS: SIGKILL every process in namespace NS (a namespace holds only what this script or
# the jobs it ran started there).
kill_ns() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
}

start_slurmd() {
    local k=$1
    mkdir -p "$DIR/spool/node$k"
    # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup tree slurmd reads.
    start "slurmd-node$k" "$DIR/slurmd-node$k.out" nsenter --net="/run/netns/motex-node$k" slurmd -D -N "node$k" -f "$CONF"
}

# -- commands ---------------------------------------------------------------------------------------

cmd_install() {
    [[ $(id -u) == 0 ]] || die "install needs root"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}"
}

all_alive() {
    local d
    alive slurmctld || return 1
    for d in $(slurmds); do alive "$d" || return 1; done
}

cmd_up() {
    [[ $(id -u) == 0 ]] || die "up needs root (slurmd runs jobs as the submitting user)"
    command -v slurmctld >/dev/null || die "slurmctld not found: run '$0 install' first"
    export SLURM_CONF=$CONF
    if all_alive && sinfo -h >/dev/null 2>&1; then
        log "already up ($DIR)"
        cmd_env
        return
    fi
    cmd_down_quiet
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"

    if munge_ok; then
        log "munged already running: reusing it"
    else
        [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; }
        mkdir -p /run/munge
        chown munge:munge /run/munge "$DIR/munge"
        chmod 0755 /run/munge
        start munged "$DIR/munge/munged.out" setpriv --reuid=munge --regid=munge --clear-groups \
            munged --foreground --log-file="$DIR/munge/munged.log" --socket="$MUNGE_SOCKET" \
            --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed"
        for _ in $(seq 50); do munge_ok && break; sleep 0.2; done
        munge_ok || die "munged did not start; see $DIR/munge/munged.log"
    fi

    ((NODES > 0)) && netns_up
    write_conf
    # -c: start from an empty state (no jobs left over from an earlier run).
    start slurmctld "$DIR/slurmctld.out" slurmctld -D -c -f "$CONF"
    if ((NODES > 0)); then
        # munged's socket is a file: the namespaces share it with this host.
        for k in $(seq "$NODES"); do start_slurmd "$k"; done
    else
        mkdir -p "$DIR/spool/localhost"
        start slurmd "$DIR/slurmd.out" slurmd -D -N localhost -f "$CONF"
    fi
    wait_ready "$(((NODES > 0) ? NODES : 1))"
    log "up: $(sinfo -h -o '%P %D nodes %c CPUs %m MB %T')"
    cmd_env
}

# wait_ready COUNT: until COUNT nodes are idle (or busy).
wait_ready() {
    local ready=0
    for _ in $(seq 120); do
        ready=$(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)' || true)
        ((ready >= $1)) && return 0
        sleep 0.5
    done
    die "$ready of $1 nodes ready; see $DIR/slurmctld.log and $DIR/slurmd-*.log"
}

cmd_env() { echo "export SLURM_CONF=$CONF"; }

cmd_check() {
    export SLURM_CONF=$CONF
    local jid out
    sinfo >&2
    out=$(srun -N1 -n1 -t 1 hostname)
    log "srun hostname: $out"
    jid=$(sbatch --parsable --wait -t 1 -o "$DIR/check-%j.out" --wrap 'echo "job $SLURM_JOB_ID on $(hostname) ($SLURMD_NODENAME)"')
    log "sbatch: $(cat "$DIR/check-$jid.out")"
    if ((NODES > 0)); then
        out=$(srun -N"$NODES" -n"$NODES" -t 1 bash -c 'echo "$SLURMD_NODENAME $(ip -4 -o addr show '"$BRIDGE"' | awk "{print \$4}")"' | sort)
        log "srun on every node: $(tr '\n' ' ' <<<"$out")"
        return
    fi
    printf '#!/bin/bash\n#PBS -N motex-check\n#PBS -l walltime=00:01:00\necho "pbs job $SLURM_JOB_ID"\n' >"$DIR/check-pbs.sh"
    jid=$(cd "$DIR" && qsub check-pbs.sh)
    for _ in $(seq 60); do
        squeue -h -j "$jid" 2>/dev/null | grep -q . || break
        sleep 0.5
    done
    log "qsub: $(cat "$DIR"/check-pbs.sh.o"$jid")"
}

cmd_status() {
    export SLURM_CONF=$CONF
    local name
    for name in munged slurmctld $(slurmds); do
        if alive "$name"; then log "$name running (pid $(cat "$DIR/$name.pid"))"; else log "$name not started here"; fi
    done
    sinfo && squeue
}

cmd_down_quiet() {
    export SLURM_CONF=$CONF
    local d
    if alive slurmctld; then
        # Jobs outlive slurmd (slurmstepd is a separate process): cancel them while slurmd still runs.
        scancel --partition=debug 2>/dev/null || true
        for _ in $(seq 40); do squeue -h 2>/dev/null | grep -q . || break; sleep 0.5; done
    fi
    for d in $(slurmds); do stop "$d"; done
    ((NODES > 0)) && netns_down
    stop slurmctld
    stop munged
}

cmd_down() { cmd_down_quiet; log "down"; }

node_arg() {
    ((NODES > 0)) || die "$CMD needs --nodes N (the multi-node SLURM)"
    [[ $KNODE =~ ^[0-9]+$ ]] && ((KNODE >= 1 && KNODE <= NODES)) || die "$CMD needs a node number from 1 to $NODES (got '$KNODE')"
}

cmd_kill_node() {
    node_arg
    kill_ns "motex-node$KNODE"
    rm -f "$DIR/slurmd-node$KNODE.pid"
    log "node$KNODE lost: every process in motex-node$KNODE killed"
}

cmd_revive_node() {
    node_arg
    export SLURM_CONF=$CONF
    alive "slurmd-node$KNODE" || start_slurmd "$KNODE"
    # A lost node is DOWN (or still answering NOT_RESPONDING); it returns when its slurmd registers.
    for _ in $(seq 120); do
        [[ $(sinfo -h -n "node$KNODE" -o %T 2>/dev/null) =~ ^(idle|mixed|allocated)$ ]] && { log "node$KNODE back"; return; }
        sleep 0.5
    done
    die "node$KNODE did not come back; see $DIR/slurmd-node$KNODE.log"
}

case $CMD in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    check) cmd_check ;;
    env) cmd_env ;;
    kill-node) cmd_kill_node ;;
    revive-node) cmd_revive_node ;;
    *) echo "usage: $0 install|up|down|status|check|env [--nodes N] | kill-node|revive-node K --nodes N" >&2; exit 2 ;;
esac
