#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while: fuzz/run.sh TARGET SECONDS
# Installs the nightly toolchain and cargo-fuzz if missing. New inputs go to a scratch corpus
# (fuzz/corpus-new/TARGET, not committed) seeded from the committed one; crashes land in
# fuzz/artifacts/TARGET/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")"

target=${1:?usage: fuzz/run.sh TARGET SECONDS}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS}

if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi

mkdir -p "corpus-new/${target}"
# -max_len: whole streams in the seed corpus are up to ~400 KiB; mutations stay smaller.
cargo +nightly fuzz run "${target}" "corpus-new/${target}" "corpus/${target}" -- \
  -max_total_time="${seconds}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1
