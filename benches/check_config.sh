#!/usr/bin/env bash
# Time and peak memory of `imagegc check-config` on pathological policy files:
# many keys plus many syntax errors, many refused keys, many policies with an
# error each, one long line full of errors, and files past the size limit.
# Checking must be linear in the file's size; files over 1 MiB are refused.
#
#   benches/check_config.sh [scale]     (default 1: the field report's sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-1}"
# IMAGEGC=path/to/imagegc times another build (such as one from before a change).
bin=${IMAGEGC:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=$PWD/target/release/imagegc
fi
# Seconds before a run is given up (reported as "timeout").
limit=${LIMIT:-300}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" "$scale" <<'PY'
import sys
d, scale = sys.argv[1], float(sys.argv[2])
n = int(16000 * scale)
def write(name, text):
    with open(f"{d}/{name}", "w") as f:
        f.write(text)
# The field report's case: 16,000 keys, then 16,000 lines that are not TOML (197 KB).
write("keys+syntax.toml", "".join(f"k{i} = 1\n" for i in range(n)) + "=\n" * n)
# The same, 3.25 times larger (639 KB).
m = int(n * 3.25)
write("keys+syntax-x3.toml", "".join(f"k{i} = 1\n" for i in range(m)) + "=\n" * m)
# Just under 1 MiB of `=` lines: the most syntax errors a file may hold.
write("equals-1MiB.toml", "=\n" * (512 * 1024 - 1))
# One line of 1 MiB with an error at every byte.
write("one-line.toml", "a = [" + "," * (1024 * 1024 - 7) + "]\n")
# 16,000 unknown top-level keys (a semantic error each).
write("unknown-keys.toml", "".join(f"junk{i} = 1\n" for i in range(n)))
# 16,000 policies, each with a misspelt key.
write("policies.toml", "".join(f'[[policy]]\nname = "p{i}"\nolder_tan = "1h"\n' for i in range(n)))
# 10 MB of `=` lines: refused by size before it is read.
write("equals-10MB.toml", "=\n" * (5 * 1024 * 1024))
PY
printf '%-22s %9s %8s %10s  %s\n' file size seconds "peak KiB" "last line of output"
for f in "$dir"/*.toml; do
    size=$(stat -c %s "$f")
    # /usr/bin/time appends its line to the command's stderr.
    timeout "$limit" /usr/bin/time -f '%e %M' "$bin" check-config "$f" >/dev/null 2>"$dir/err" || true
    if ! read -r secs kib < <(tail -n 1 "$dir/err" | grep -E '^[0-9.]+ [0-9]+$'); then
        secs="timeout"; kib="-"
    fi
    last=$(grep -v -e '^Command exited' -e '^[0-9.]* [0-9]*$' "$dir/err" | tail -n 1 | cut -c1-60)
    printf '%-22s %9s %8s %10s  %s\n' "$(basename "$f")" "$size" "$secs" "$kib" "$last"
done
