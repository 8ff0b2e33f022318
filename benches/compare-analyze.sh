#!/usr/bin/env bash
# Whole-process comparison: `vmstate inspect --json FIXTURE` against QEMU's
# `python3 analyze-migration.py -f FIXTURE -d state` on the same fixture (issue 8, target ≥ 100x).
#
#   benches/compare-analyze.sh PATH/TO/analyze-migration.py [FIXTURE] [VMSTATE_BINARY]
#
# QEMU's script is not part of this repository (GPL; never commit it): pass a local copy.
# FIXTURE defaults to host-tests/fixtures/pc-7.2-bios.vmstate; VMSTATE_BINARY to
# target/release/vmstate, built with `cargo build --release -p vmstate-cli` when missing.
# STATIC=1 measures a statically linked binary instead (target/static/release/vmstate, built
# with `cargo rustc ... -- -C target-feature=+crt-static`: the flag reaches only the final
# link of the `vmstate` binary, no global flags change): no dynamic loader, no libgcc_s.
# With `perf` (perf stat; the software task-clock event works in VMs too): ROUNDS rounds
# (default 5), each `perf stat -r RUNS` (default 20) of ours then `perf stat -r PY_RUNS`
# (default 3) of the script, interleaved so both see the same load; prints the median over
# rounds of the mean wall time and of the mean CPU time (task-clock), and both ratios.
# Without perf: hyperfine when installed, otherwise a timed loop (RUNS) with `date +%s%N`.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
script="${1:?usage: $0 PATH/TO/analyze-migration.py [FIXTURE] [VMSTATE_BINARY]}"
fixture="${2:-$here/host-tests/fixtures/pc-7.2-bios.vmstate}"
vmstate="${3:-$here/target/release/vmstate}"
runs="${RUNS:-20}"
if [[ -z "${3:-}" && "${STATIC:-0}" == 1 ]]; then
    vmstate="$here/target/static/release/vmstate"
    [[ -x "$vmstate" ]] || (cd "$here" && cargo rustc --release -q -p vmstate-cli --bin vmstate \
        --target-dir "$here/target/static" -- -C target-feature=+crt-static)
fi

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

# "CPU_MS WALL_MS" of `perf stat -r $1` over the rest of the arguments (means).
perf_ms() {
    local n="$1"
    shift
    perf stat -r "$n" -e task-clock -- "$@" 2>&1 >/dev/null |
        awk '/task-clock/ { cpu = $1 } /seconds time elapsed/ { wall = $1 * 1000 }
             END { printf "%.3f %.3f\n", cpu, wall }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
    rounds="${ROUNDS:-5}"
    py_runs="${PY_RUNS:-3}"
    a_cpu=() a_wall=() b_cpu=() b_wall=()
    for ((r = 0; r < rounds; r++)); do
        read -r c w < <(perf_ms "$runs" "${ours[@]}")
        a_cpu+=("$c") a_wall+=("$w")
        read -r c w < <(perf_ms "$py_runs" "${qemu[@]}")
        b_cpu+=("$c") b_wall+=("$w")
    done
    ac=$(printf '%s\n' "${a_cpu[@]}" | median)
    aw=$(printf '%s\n' "${a_wall[@]}" | median)
    bc=$(printf '%s\n' "${b_cpu[@]}" | median)
    bw=$(printf '%s\n' "${b_wall[@]}" | median)
    echo "$(basename "$fixture"): median of $rounds rounds of perf stat -r $runs (ours) / -r $py_runs (script)"
    echo "| command | wall | CPU (task-clock) | ratio wall / CPU |"
    echo "|---|---:|---:|---:|"
    printf '| `vmstate inspect --json` | %.2f ms | %.2f ms | 1 |\n' "$aw" "$ac"
    awk -v aw="$aw" -v ac="$ac" -v bw="$bw" -v bc="$bc" 'BEGIN {
        printf "| `analyze-migration.py -d state` | %.1f ms | %.1f ms | %.0fx / %.0fx |\n",
            bw, bc, bw / aw, bc / ac }'
    exit 0
fi

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
