#!/usr/bin/env bash
# `imagegc plan` against the engine's own list calls (issue 11, part 4), on a
# private dockerd holding N small images (benches/plan_vs_list_engine.py):
# per round, side by side in this one process tree, the engine's
# `GET /images/json?all=1` + `GET /containers/json?all=1` (one connection,
# timed in Python), `imagegc plan` with no state file (cold), one
# `imagegc once` (a policy that removes nothing: it writes the state file),
# and `imagegc plan` after it. Prints each round, then medians and ratios.
# Goals: cold <= 5x the list calls, after a once <= 3x.
#
#   benches/plan_vs_list.sh [images] [rounds]     (default 1000 3)
#
# Needs root, dockerd (storage driver BENCH_STORAGE_DRIVER, default vfs:
# no mount per layer). IMAGEGC=path times another build. BENCH_ENGINE_DIR=dir keeps
# and reuses the engine (and its images) between benches.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
rounds="${2:-3}"
bin=${IMAGEGC:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=$PWD/target/release/imagegc
fi
exec python3 - "$bin" "$n" "$rounds" <<'PY'
import os, statistics, subprocess, sys, tempfile, time
sys.path.insert(0, "benches")
from plan_vs_list_engine import Engine, bench_dir

bin, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base, keep = bench_dir("igc-pvl-")
engine = Engine.start(os.path.join(base, "e"))
try:
    print(f"loading {n} images ...", flush=True)
    took = engine.load_up_to(n)
    if took is None:
        print(f"reused {engine.count()} images in {base}", flush=True)
    else:
        print(f"loaded {engine.count()} images in {took:.0f} s", flush=True)
    state = os.path.join(base, "state.json")
    policy = os.path.join(base, "policy.toml")
    with open(policy, "w") as f:
        f.write(f"""[state]
path = "{state}"
[[policy]]
name = "nothing"
labels = ["imagegc.bench=none-{os.getpid()}"]
dangling = true
older_than = "1h"
""")
    env = dict(os.environ, DOCKER_HOST=engine.host)

    def imagegc(*args):
        t0 = time.monotonic()
        subprocess.run([bin, "--config", policy, "-q", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return time.monotonic() - t0

    rows = []
    for r in range(rounds):
        # Alternate which side goes first, so a warming cache favours neither.
        if os.path.exists(state):
            os.remove(state)
        if r % 2 == 0:
            lst = engine.list_seconds()
            cold = imagegc("plan")
        else:
            cold = imagegc("plan")
            lst = engine.list_seconds()
        once = imagegc("once")
        if r % 2 == 0:
            warm = imagegc("plan")
            lst2 = engine.list_seconds()
        else:
            lst2 = engine.list_seconds()
            warm = imagegc("plan")
        size = os.path.getsize(state)
        rows.append((lst, lst2, cold, once, warm))
        print(f"round {r + 1}: list {lst * 1000:.0f} / {lst2 * 1000:.0f} ms, "
              f"plan cold {cold * 1000:.0f} ms, once {once * 1000:.0f} ms, "
              f"plan after once {warm * 1000:.0f} ms (state file {size // 1024} KiB)",
              flush=True)
    med = lambda xs: statistics.median(xs)
    lst = med([x for r in rows for x in r[:2]])
    cold, once, warm = (med([r[i] for r in rows]) for i in (2, 3, 4))
    print(f"{n} images, median of {rounds}: list calls {lst * 1000:.0f} ms; "
          f"plan cold {cold * 1000:.0f} ms = {cold / lst:.1f}x (goal <= 5x); "
          f"once {once * 1000:.0f} ms; "
          f"plan after a once {warm * 1000:.0f} ms = {warm / lst:.1f}x (goal <= 3x)")
finally:
    engine.stop(remove=not keep)
    if not keep:
        subprocess.run(["rm", "-rf", base], check=False)
PY
