#!/usr/bin/env bash
# The engine matrix: private engines beside the host's, each on its own socket and data root,
# for tests/matrix (the scenarios that must hold on every engine a build host runs).
#
#   tests/matrix/engines.sh up      install what is missing, start every engine, write the list
#   tests/matrix/engines.sh down    stop what `up` started, unmount, remove the data roots
#   tests/matrix/engines.sh status  say which engines answer
#   tests/matrix/engines.sh list    print the list file's path (exit 1 when the matrix is not up)
#
# Engines (the recipe is docs/ENGINES.md):
#   d20     the host's Debian 12 dockerd 20.10 (API 1.41), private, fuse-overlayfs
#   d26     Debian 13's dockerd 26.1 (API 1.45) in a trixie chroot, overlay2
#   d26cs   the same dockerd with the containerd image store (containerd-snapshotter)
#   podman  Debian 12's podman 4.3 `system service` (Docker-compatible API 1.41), overlay
#
# `up` is idempotent: a chroot that exists is reused, an engine that answers is left alone. The
# list it writes ($RUN/engines) has one line per engine that answers:
#   name<TAB>socket<TAB>data-root-on-the-host<TAB>store
# Everything lives under $BASE (chroot, data roots) and $RUN (sockets, pid files, logs).
set -euo pipefail

BASE=${IMAGEGC_MATRIX_BASE:-/var/lib/imagegc-matrix}
RUN=${IMAGEGC_MATRIX_RUN:-/run/imagegc-matrix}
CHROOT=$BASE/trixie
MIRROR=${IMAGEGC_MATRIX_MIRROR:-http://deb.debian.org/debian}
# How long an engine may take to answer /_ping after it is started.
START_TIMEOUT=${IMAGEGC_MATRIX_START_TIMEOUT:-90}

log() { printf '[engines] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it starts engines and mounts a chroot)"

apt_install() {
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ping_socket() {
    # A bounded /_ping on a unix socket; curl is in Debian's base system.
    curl -sf --max-time 3 --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1
}

wait_socket() {
    local name=$1 socket=$2 logfile=$3 pidfile=$4
    local i
    for i in $(seq 1 "$START_TIMEOUT"); do
        if ping_socket "$socket"; then
            log "$name answers on $socket (after ${i}s)"
            return 0
        fi
        if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            log "$name exited before it answered; the end of its log ($logfile):"
            tail -n 40 "$logfile" >&2 || true
            return 1
        fi
        sleep 1
    done
    log "$name did not answer within ${START_TIMEOUT}s; the end of its log ($logfile):"
    tail -n 40 "$logfile" >&2 || true
    return 1
}

ensure_host_tools() {
    local missing=()
    command -v curl >/dev/null || missing+=(curl)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v fuse-overlayfs >/dev/null || missing+=(fuse-overlayfs)
    command -v podman >/dev/null || missing+=(podman)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

ensure_chroot() {
    if [ ! -x "$CHROOT/usr/sbin/dockerd" ]; then
        log "creating the trixie chroot with docker.io at $CHROOT (about 2 minutes)"
        rm -rf "$CHROOT.partial"
        mkdir -p "$BASE"
        debootstrap --variant=minbase --include=docker.io,ca-certificates trixie \
            "$CHROOT.partial" "$MIRROR" >"$BASE/debootstrap.log" 2>&1 \
            || { tail -n 30 "$BASE/debootstrap.log" >&2; die "debootstrap failed"; }
        # Only a complete chroot gets the final name, so a broken run is never reused.
        mv "$CHROOT.partial" "$CHROOT"
    fi
    # dockerd needs the chroot's root to be a mount point (else image loads fail with
    # "remount /, flags: 0x84000: invalid argument").
    if ! mountpoint -q "$CHROOT"; then
        mount --bind "$CHROOT" "$CHROOT"
        mount --make-private "$CHROOT"
    fi
    mountpoint -q "$CHROOT/proc" || mount --bind /proc "$CHROOT/proc"
    mountpoint -q "$CHROOT/sys" || { mount --rbind /sys "$CHROOT/sys"; mount --make-rslave "$CHROOT/sys"; }
    mountpoint -q "$CHROOT/dev" || { mount --rbind /dev "$CHROOT/dev"; mount --make-rslave "$CHROOT/dev"; }
    mkdir -p "$CHROOT/tmp/sock" "$CHROOT/etc/docker"
}

# start_d26 NAME CONFIG-JSON: a dockerd 26.1 in the chroot with its own data root, exec root,
# socket and pid file (all named after NAME).
start_d26() {
    local name=$1 config=$2
    local socket=$CHROOT/tmp/sock/$name.sock
    if ping_socket "$socket"; then
        log "$name already answers"
    else
        clear_leftovers "$name" "$CHROOT/run/$name.pid" "$CHROOT/var/lib/$name" "$CHROOT/run/$name"
        rm -f "$socket"
        printf '%s\n' "$config" >"$CHROOT/etc/docker/$name.json"
        log "starting $name"
        chroot "$CHROOT" /bin/sh -c "nohup /usr/sbin/dockerd --config-file /etc/docker/$name.json \
            --data-root /var/lib/$name --exec-root /run/$name \
            --host unix:///tmp/sock/$name.sock --pidfile /run/$name.pid \
            --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
            >/var/log/$name.log 2>&1 </dev/null &"
        wait_socket "$name" "$socket" "$CHROOT/var/log/$name.log" "$CHROOT/run/$name.pid" || return 1
    fi
    local store=overlay2
    case $config in *containerd-snapshotter*) store=containerd ;; esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$socket" "$CHROOT/var/lib/$name" "$store" >>"$RUN/engines.new"
}

start_d20() {
    local dir=$BASE/d20 socket=$RUN/d20.sock
    if ping_socket "$socket"; then
        log "d20 already answers"
    else
        clear_leftovers d20 "$RUN/d20.pid" "$dir" "$RUN/d20"
        rm -f "$socket"
        mkdir -p "$dir" "$RUN/d20"
        echo '{}' >"$dir/daemon.json"
        log "starting d20"
        nohup dockerd --config-file "$dir/daemon.json" --data-root "$dir/root" \
            --exec-root "$RUN/d20/exec" --host "unix://$socket" --pidfile "$RUN/d20.pid" \
            --bridge=none --iptables=false --ip-masq=false --storage-driver=fuse-overlayfs \
            >"$RUN/d20.log" 2>&1 </dev/null &
        wait_socket d20 "$socket" "$RUN/d20.log" "$RUN/d20.pid" || return 1
    fi
    printf '%s\t%s\t%s\t%s\n' d20 "$socket" "$dir/root" fuse-overlayfs >>"$RUN/engines.new"
}

start_podman() {
    local dir=$BASE/podman socket=$RUN/podman.sock
    if ping_socket "$socket"; then
        log "podman already answers"
    else
        clear_leftovers podman "$RUN/podman.pid" "$dir" "$RUN/podman"
        rm -f "$socket"
        mkdir -p "$dir" "$RUN/podman"
        log "starting podman system service"
        nohup podman --root "$dir/root" --runroot "$RUN/podman/run" --storage-driver overlay \
            --cgroup-manager cgroupfs --events-backend file --tmpdir "$RUN/podman/tmp" \
            system service --time=0 "unix://$socket" >"$RUN/podman.log" 2>&1 </dev/null &
        echo $! >"$RUN/podman.pid"
        wait_socket podman "$socket" "$RUN/podman.log" "$RUN/podman.pid" || return 1
    fi
    printf '%s\t%s\t%s\t%s\n' podman "$socket" "$dir/root" overlay >>"$RUN/engines.new"
}

stop_pidfile() {
    local name=$1 pidfile=$2
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

unmount_under() {
    # Deepest first: whatever an engine left mounted under DIR (overlay, shm, netns).
    local dir=$1
    findmnt -rno TARGET | awk -v d="$dir" 'index($0, d) == 1' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}

# clear_leftovers NAME PIDFILE DIR...: what an earlier run left when it was not stopped with
# `down` (a machine reused, a killed test): its process, whatever it left mounted, its
# directories. An engine that does not answer is never reused, so this runs before each start.
clear_leftovers() {
    local name=$1 pidfile=$2 dir
    shift 2
    stop_pidfile "$name" "$pidfile"
    for dir in "$@"; do
        unmount_under "$dir"
        rm -rf "$dir" 2>/dev/null || { sleep 1; unmount_under "$dir"; rm -rf "$dir"; }
    done
}

up() {
    mkdir -p "$RUN"
    ensure_host_tools
    ensure_chroot
    : >"$RUN/engines.new"
    local failed=0
    start_d20 || failed=1
    start_d26 d26 '{}' || failed=1
    start_d26 d26cs '{"features": {"containerd-snapshotter": true}}' || failed=1
    start_podman || failed=1
    mv "$RUN/engines.new" "$RUN/engines"
    [ "$failed" -eq 0 ] || die "not every engine started (the list has those that did)"
    log "the matrix is up: $RUN/engines"
    cat "$RUN/engines" >&2
}

down() {
    stop_pidfile podman "$RUN/podman.pid"
    stop_pidfile d20 "$RUN/d20.pid"
    stop_pidfile d26 "$CHROOT/run/d26.pid"
    stop_pidfile d26cs "$CHROOT/run/d26cs.pid"
    unmount_under "$RUN"
    unmount_under "$BASE/d20"
    unmount_under "$BASE/podman"
    if [ -d "$CHROOT" ]; then
        unmount_under "$CHROOT"
        rm -rf "$CHROOT/var/lib/d26" "$CHROOT/var/lib/d26cs" "$CHROOT/run/d26" "$CHROOT/run/d26cs" \
            "$CHROOT"/tmp/sock/*.sock
    fi
    rm -rf "$BASE/d20" "$BASE/podman" "$RUN"
    log "the matrix is down (the chroot $CHROOT is kept for the next run)"
}

status() {
    # Exit status 0 only when every listed engine answers.
    local name socket down=0
    [ -f "$RUN/engines" ] || { log "the matrix is not up"; return 1; }
    while IFS=$'\t' read -r name socket _; do
        if ping_socket "$socket"; then echo "$name up $socket"; else echo "$name DOWN $socket"; down=1; fi
    done <"$RUN/engines"
    return "$down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    list) [ -f "$RUN/engines" ] && echo "$RUN/engines" ;;
    *) echo "usage: $0 up|down|status|list" >&2; exit 2 ;;
esac
