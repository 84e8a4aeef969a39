#!/usr/bin/env bash
# Disk-pressure reaction (issue 11, part 4): how long after a disk crosses a
# policy's disk_high does `imagegc run` remove the first image, and does
# what it frees reach disk_low? Goal: <= interval + 1 s, and disk_low reached.
#
# Creates a small ext4 filesystem (loop-mounted image), starts a private
# dockerd whose data root is on it, loads IMAGES images of LAYER_MIB each
# (tagged bench/pressure:N), starts the daemon with a @yearly schedule and
# [pressure] interval = INTERVAL, then fills the filesystem past disk_high
# with one file and times, from the end of that write, the first removal the
# engine shows. Prints the daemon's own imagegc_pressure_reaction_seconds
# too. Root only (mount). Everything it made is removed on exit.
#
#   benches/pressure_reaction.sh [runs]        (default 3)
#   env: INTERVAL (1s), FS_MIB (768), IMAGES (8), LAYER_MIB (40),
#        HIGH (80), LOW (60)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
interval="${INTERVAL:-1s}"
fs_mib="${FS_MIB:-768}"
images="${IMAGES:-8}"
layer_mib="${LAYER_MIB:-40}"
high="${HIGH:-80}"
low="${LOW:-60}"
[ "$(id -u)" = 0 ] || { echo "needs root (loop mount, dockerd)" >&2; exit 2; }
cargo build --bin imagegc --quiet
bin=$PWD/target/debug/imagegc

dir=$(mktemp -d /tmp/imagegc-pressure-bench.XXXXXX)
mnt=$dir/mnt
sock=$dir/docker.sock
dockerd_pid=
daemon_pid=
stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=
    fi
}
cleanup() {
    stop_daemon
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if mountpoint -q "$mnt"; then
        # fuse-overlayfs mounts of the private engine sit below the mount.
        grep " $mnt/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
        umount "$mnt" || umount -l "$mnt" || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

api() { curl -sf --max-time 30 --unix-socket "$sock" "$@"; }
used_pct() { df --output=pcent "$mnt" | tail -1 | tr -dc 0-9; }
image_count() { api "http://d/images/json" | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin) if any(t.startswith("bench/") for t in i.get("RepoTags") or [])))'; }

truncate -s "${fs_mib}M" "$dir/fs.img"
mkfs.ext4 -q -F "$dir/fs.img"
mkdir -p "$mnt"
mount -o loop "$dir/fs.img" "$mnt"
echo '{}' >"$dir/daemon.json"
start_dockerd() {
    dockerd --config-file "$dir/daemon.json" --data-root "$mnt/docker" --exec-root "$dir/exec" \
        --host "unix://$sock" --pidfile "$dir/docker.pid" --bridge=none --iptables=false \
        --ip-masq=false --storage-driver="$1" >"$dir/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 150); do
        api http://d/_ping >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
start_dockerd overlay2 || { dockerd_pid=; start_dockerd fuse-overlayfs; }
driver=$(api http://d/info | python3 -c 'import json,sys; print(json.load(sys.stdin)["Driver"])')

# One load tarball per image: one layer of random bytes, created in 2020.
make_tarball() {
    python3 - "$1" "$2" "$3" <<'PY'
import hashlib, io, json, os, sys, tarfile
tag, mib, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def add(tar, name, data):
    info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as layer:
    add(layer, "data-" + tag.replace("/", "_").replace(":", "_"), os.urandom(mib << 20))
layer_bytes = buf.getvalue()
diff = hashlib.sha256(layer_bytes).hexdigest()
created = "2020-01-01T00:00:00Z"
config = json.dumps({"architecture": "amd64", "os": "linux", "created": created, "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]},
    "history": [{"created": created, "created_by": "bench layer"}]}).encode()
cid = hashlib.sha256(config).hexdigest()
with tarfile.open(out, mode="w") as t:
    add(t, diff + "/layer.tar", layer_bytes)
    add(t, cid + ".json", config)
    add(t, "manifest.json", json.dumps([{"Config": cid + ".json", "RepoTags": [tag],
        "Layers": [diff + "/layer.tar"]}]).encode())
PY
}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/policy.toml" <<TOML
schedule = "@yearly"
run_on_start = false
engine = "unix://$sock"
[metrics]
listen = "127.0.0.1:$port"
[state]
path = "$dir/state.json"
[pressure]
interval = "$interval"
cooldown = "1m"
[safety]
min_age = "0s"
[[policy]]
name = "bench-pressure"
repositories = ["bench/*"]
disk_high = "$high%"
disk_low = "$low%"
TOML

echo "pressure reaction: ${fs_mib} MiB ext4, dockerd storage driver $driver, $images images of ${layer_mib} MiB, interval $interval, disk_high $high%, disk_low $low%"
for run in $(seq "$runs"); do
    rm -f "$mnt/fill" "$dir/state.json"
    for i in $(seq "$images"); do
        make_tarball "bench/pressure:$run-$i" "$layer_mib" "$dir/img.tar"
        api -X POST -H 'Content-Type: application/x-tar' --data-binary "@$dir/img.tar" \
            "http://d/images/load?quiet=1" >/dev/null
    done
    rm -f "$dir/img.tar"
    sync
    before=$(image_count)
    base=$(used_pct)
    "$bin" --config "$dir/policy.toml" --log-format json run >"$dir/imagegc.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 2   # connected, the sampler running
    # Fill to 3 points above disk_high (df's Use% counts used / (used + avail)).
    read -r size used avail < <(df -B1 --output=size,used,avail "$mnt" | tail -1)
    target=$(( (used + avail) * (high + 3) / 100 ))
    fill=$(( target - used ))
    fallocate -l "$fill" "$mnt/fill"
    t0=$(date +%s.%N)
    crossed=$(used_pct)
    first=
    for _ in $(seq 600); do
        if [ "$(image_count)" -lt "$before" ]; then first=$(date +%s.%N); break; fi
        sleep 0.02
    done
    # The pass ends with a "pass finished" line; wait for it (bounded).
    for _ in $(seq 300); do grep -q '"pass finished"\|pass finished' "$dir/imagegc.log" && break; sleep 0.1; done
    after=$(used_pct)
    removed=$(( before - $(image_count) ))
    reaction=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^imagegc_pressure_reaction_seconds_sum/ {print $2}')
    if [ -n "$first" ]; then
        external=$(python3 -c "print(f'{$first - $t0:.2f}')")
    else
        external="none within 12 s"
    fi
    reached=$([ "$after" -le "$low" ] && echo yes || echo no)
    echo "run $run: base ${base}% -> filled ${crossed}%; first removal ${external} s after the fill (daemon's own sample->removal ${reaction:-?} s); removed $removed images; usage after the pass ${after}% (disk_low ${low}% reached: $reached)"
    stop_daemon
    # Next run: the remaining lab images go, the fill file too.
    rm -f "$mnt/fill"
    for id in $(api "http://d/images/json" | python3 -c 'import json,sys; [print(i["Id"]) for i in json.load(sys.stdin)]'); do
        api -X DELETE "http://d/images/$id?force=1" >/dev/null || true
    done
done
