#!/usr/bin/env bash
# Whole-process comparison: `vmstate inspect --json FIXTURE` against QEMU's
# `python3 analyze-migration.py -f FIXTURE -d state` on the same fixture (issue 8, target ≥ 100x).
#
#   benches/compare-analyze.sh PATH/TO/analyze-migration.py [FIXTURE] [VMSTATE_BINARY]
#
# QEMU's script is not part of this repository (GPL; never commit it): pass a local copy.
# FIXTURE defaults to host-tests/fixtures/pc-7.2-bios.vmstate; VMSTATE_BINARY to
# target/release/vmstate, built with `cargo build --release -p vmstate-cli` when missing.
# Uses hyperfine when installed, otherwise a timed loop (RUNS, default 20) with `date +%s%N`.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
script="${1:?usage: $0 PATH/TO/analyze-migration.py [FIXTURE] [VMSTATE_BINARY]}"
fixture="${2:-$here/host-tests/fixtures/pc-7.2-bios.vmstate}"
vmstate="${3:-$here/target/release/vmstate}"
runs="${RUNS:-20}"

[[ -f "$script" ]] || { echo "no analyze-migration.py at $script" >&2; exit 2; }
[[ -f "$fixture" ]] || { echo "no fixture at $fixture" >&2; exit 2; }
if [[ ! -x "$vmstate" ]]; then
    (cd "$here" && cargo build --release -q -p vmstate-cli)
    vmstate="$here/target/release/vmstate"
fi
if ! "$vmstate" inspect --json "$fixture" >/dev/null 2>&1; then
    echo "$vmstate has no working 'inspect --json' yet; nothing to compare" >&2
    exit 3
fi
python3 "$script" -f "$fixture" -d state >/dev/null

ours=("$vmstate" inspect --json "$fixture")
qemu=(python3 "$script" -f "$fixture" -d state)

if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 3 --runs "$runs" --export-markdown /dev/stdout \
        "${ours[*]}" "${qemu[*]}"
    exit 0
fi

# Mean wall time of $runs runs of a command, in nanoseconds (after one warm-up run).
mean_ns() {
    "$@" >/dev/null
    local start end
    start=$(date +%s%N)
    for ((i = 0; i < runs; i++)); do "$@" >/dev/null; done
    end=$(date +%s%N)
    echo $(((end - start) / runs))
}

a=$(mean_ns "${ours[@]}")
b=$(mean_ns "${qemu[@]}")
echo "| command | mean | ratio |"
echo "|---|---:|---:|"
printf '| `vmstate inspect --json` | %d.%03d ms | 1 |\n' $((a / 1000000)) $((a / 1000 % 1000))
printf '| `analyze-migration.py -d state` | %d.%03d ms | %s |\n' $((b / 1000000)) $((b / 1000 % 1000)) \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1fx slower", b / a }')"
