#!/usr/bin/env bash
# Resident memory of the daemon (`imagegc run`) tracking N images against
# idle with none (issue 11, part 4), on a private dockerd
# (benches/plan_vs_list_engine.py). For each case the daemon starts with
# `run_on_start`, its first pass writes the state file, and VmRSS is read
# from /proc/<pid>/status a second later. Cases: an empty engine; N images
# with no state file (every image inspected); N images again, restarted
# from that state file (facts from the file, no inspect). Goal: <= 10 MiB
# more than idle with none.
#
#   benches/memory.sh [images]     (default 1000)
#
# BENCH_ENGINE_DIR=dir (must not hold an engine yet) keeps the loaded engine
# for benches/plan_vs_list.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
bin=${IMAGEGC:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=$PWD/target/release/imagegc
fi
exec python3 - "$bin" "$n" <<'PY'
import os, subprocess, sys, tempfile, time
sys.path.insert(0, "benches")
from plan_vs_list_engine import Engine, bench_dir

bin, n = sys.argv[1], int(sys.argv[2])
base, keep = bench_dir("igc-mem-")
if keep and os.path.exists(os.path.join(base, "e")):
    sys.exit(f"{base}/e exists: the idle case needs an empty engine (BENCH_ENGINE_DIR "
             "is kept after this bench, for benches/plan_vs_list.sh)")
engine = Engine.start(os.path.join(base, "e"))
state = os.path.join(base, "state.json")
policy = os.path.join(base, "policy.toml")
with open(policy, "w") as f:
    f.write(f"""schedule = "0 0 1 1 *"
run_on_start = true
[state]
path = "{state}"
[[policy]]
name = "nothing"
labels = ["imagegc.bench=none-{os.getpid()}"]
dangling = true
older_than = "1h"
""")
env = dict(os.environ, DOCKER_HOST=engine.host)

def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

def daemon_rss(fresh):
    """KiB resident after the daemon's first pass, and its peak."""
    if fresh and os.path.exists(state):
        os.remove(state)
    before = os.stat(state).st_mtime_ns if os.path.exists(state) else None
    d = subprocess.Popen([bin, "--config", policy, "-q", "run"], env=env,
                         stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            if os.path.exists(state) and os.stat(state).st_mtime_ns != before:
                break
            if d.poll() is not None:
                raise RuntimeError(f"imagegc run exited ({d.returncode})")
            time.sleep(0.1)
        else:
            raise RuntimeError("no pass within 600 s")
        time.sleep(1)
        return status(d.pid, "VmRSS"), status(d.pid, "VmHWM")
    finally:
        d.terminate()
        d.wait(30)

try:
    idle, idle_peak = daemon_rss(True)
    print(f"no images: rss {idle} KiB (peak {idle_peak} KiB)", flush=True)
    took = engine.load(n)
    print(f"loaded {engine.count()} images in {took:.0f} s", flush=True)
    cold, cold_peak = daemon_rss(True)
    print(f"{n} images, no state file: rss {cold} KiB (peak {cold_peak} KiB), "
          f"+{(cold - idle) / 1024:.1f} MiB over idle", flush=True)
    warm, warm_peak = daemon_rss(False)
    print(f"{n} images, restarted from the state file "
          f"({os.path.getsize(state) // 1024} KiB): rss {warm} KiB (peak {warm_peak} KiB), "
          f"+{(warm - idle) / 1024:.1f} MiB over idle (goal <= 10 MiB)", flush=True)
finally:
    engine.stop(remove=not keep)
    if not keep:
        subprocess.run(["rm", "-rf", base], check=False)
PY
