#!/usr/bin/env bash
# Removal at the engine's speed (issue 11, parts 2 and 4): `imagegc once`
# removing N dangling images against the engine's own
# `POST /images/prune?filters={"dangling":["true"]}` on an identical set, on a
# private dockerd (benches/plan_vs_list_engine.py; prune is engine-wide, so
# never on the host's engine). Per round, in this one process tree: load the
# set, time one side, load the same set again, time the other; the order
# alternates between rounds. `imagegc once` is timed whole (connect, list,
# inspect, plan, remove, state); its policy removes dangling images with
# [safety] max_parallel_removals = PARALLEL. Prints each round, then the
# median ratio imagegc / prune. Goal: <= 1.0x.
#
#   benches/removal.sh [images] [rounds]      (default 200 3)
#
# env: PARALLEL (4), PER_BASE (1: no layer shared; 50: fifty images share a
# base layer, which imagegc removes one after another so that each shared
# layer goes with the same removal as one at a time), BENCH_STORAGE_DRIVER
# (vfs), IMAGEGC=path (another build). Needs root and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200}"
rounds="${2:-3}"
bin=${IMAGEGC:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=$PWD/target/release/imagegc
fi
exec python3 - "$bin" "$n" "$rounds" "${PARALLEL:-4}" "${PER_BASE:-1}" <<'PY'
import json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.parse
sys.path.insert(0, "benches")
from plan_vs_list_engine import Engine, request

bin, n, rounds, parallel, per_base = sys.argv[1], *map(int, sys.argv[2:6])
base = tempfile.mkdtemp(prefix="igc-rm-", dir="/tmp")
engine = Engine.start(os.path.join(base, "e"))
try:
    policy = os.path.join(base, "policy.toml")
    with open(policy, "w") as f:
        f.write(f"""[state]
path = "{base}/state.json"
[safety]
min_age = "0s"
max_removals_per_run = 100000
max_parallel_removals = {parallel}
[[policy]]
name = "dangling"
dangling = true
older_than = "1s"
""")
    env = dict(os.environ, DOCKER_HOST=engine.host, IMAGEGC_LOG="warn")

    def load():
        engine.load(n, prefix="rm", dangling=True, per_base=per_base)
        got = engine.count()
        if got != n:
            raise RuntimeError(f"loaded {got} images, wanted {n}")

    def prune():
        filters = urllib.parse.quote(json.dumps({"dangling": ["true"]}))
        t0 = time.monotonic()
        status, data = request(engine.sock, "POST", f"/images/prune?filters={filters}")
        took = time.monotonic() - t0
        if status != 200:
            raise RuntimeError(f"prune: {status} {data[:300]!r}")
        return took

    def once():
        try:
            os.remove(os.path.join(base, "state.json"))
        except FileNotFoundError:
            pass
        t0 = time.monotonic()
        subprocess.run([bin, "--config", policy, "once"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return time.monotonic() - t0

    print(f"removal of {n} dangling images (a base layer shared by {per_base}), "
          f"max_parallel_removals {parallel}, {rounds} rounds", flush=True)
    ratios = []
    for r in range(rounds):
        sides = [("prune", prune), ("imagegc", once)]
        if r % 2:
            sides.reverse()
        took = {}
        for name, run in sides:
            load()
            took[name] = run()
            left = engine.count()
            if left != 0:
                raise RuntimeError(f"{name} left {left} images")
        ratios.append(took["imagegc"] / took["prune"])
        print(f"round {r + 1} ({sides[0][0]} first): prune {took['prune'] * 1000:.0f} ms, "
              f"imagegc once {took['imagegc'] * 1000:.0f} ms = {ratios[-1]:.2f}x", flush=True)
    print(f"{n} images, median of {rounds}: imagegc once / prune = "
          f"{statistics.median(ratios):.2f}x (goal <= 1.0x)")
finally:
    engine.stop()
    shutil.rmtree(base, ignore_errors=True)
PY
