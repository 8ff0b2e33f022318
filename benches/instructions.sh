#!/usr/bin/env bash
# Instructions per call of codec paths and their baselines, counted by callgrind (exact and
# independent of machine load, unlike wall time). Builds the `ops` example first.
#
#   benches/instructions.sh [OP_DEVICE ...]     (default: every op on rtc, i8254, hpet, serial, big4k,
#                                                 then walk_q35 and walk_bios: whole streams)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n "${NO_BUILD:-}" ]] || cargo build --release -q -p vmstate-benches --example ops
bin=target/release/examples/ops
n1=200 n2=2200
ops=("$@")
if [[ ${#ops[@]} -eq 0 ]]; then
    for d in rtc i8254 hpet serial big4k; do
        for o in memcpy encode postcard_encode bincode_encode decode load postcard_decode; do
            ops+=("${o}_$d")
        done
    done
    ops+=(walk_q35 walk_bios)
fi
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| path | instructions per call |"
echo "|---|---:|"
for op in "${ops[@]}"; do
    a=$(count "$op" $n1)
    b=$(count "$op" $n2)
    echo "| $op | $(((b - a) / (n2 - n1))) |"
done
