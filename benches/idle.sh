#!/usr/bin/env bash
# Idle cost of `imagegc run`: resident memory and CPU time per minute while
# nothing happens (no pass due, no engine events). Targets: RSS < 20 MiB and
# < 0.1 s CPU per minute. Needs a running Docker Engine; touches no image.
#
#   benches/idle.sh [seconds]      (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cargo build --release --quiet
bin=target/release/imagegc
dir=$(mktemp -d)
pid=
# Stop the daemon and wait for it to exit before removing its directory: on
# SIGTERM it writes its state file there, which would race the removal.
stop() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap stop EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/policy.toml" <<TOML
schedule = "0 0 1 1 *"
run_on_start = true
[metrics]
listen = "127.0.0.1:$port"
[state]
path = "$dir/state.json"
[[policy]]
name = "nothing"
labels = ["imagegc.bench=none-$$"]
dangling = true
older_than = "1h"
TOML
"$bin" --config "$dir/policy.toml" -q run &
pid=$!
sleep 5   # start-up and the run_on_start pass
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(cpu)
sleep "$secs"
c1=$(cpu)
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
cpu_s=$(echo "scale=3; ($c1 - $c0) / $ticks" | bc)
per_min=$(echo "scale=4; $cpu_s * 60 / $secs" | bc)
echo "idle for ${secs}s: cpu ${cpu_s}s (${per_min}s per minute), rss $((rss_kib / 1024)) MiB (${rss_kib} KiB), peak rss ${hwm_kib} KiB, threads ${threads}"
