#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable
# toolchain (sanitizer-coverage passes are stable codegen options; no nightly, no
# cargo-fuzz) and runs each for SECONDS (default 10) from its seeds and corpus.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_parse admin_decode journal_replay routing_pick http1_heads)
host=$(rustc -vV | sed -n 's/^host: //p')
# A target directory of its own, whatever CARGO_TARGET_DIR says: the instrumented
# RUSTFLAGS would otherwise thrash a shared cache against the normal builds, and the
# targets are run from where this script knows they are.
export CARGO_TARGET_DIR="$PWD/target"
# An explicit --target keeps the flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cargo build --release --target "$host" --bins
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== $target: ${seconds}s"
  "$CARGO_TARGET_DIR/$host/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" "corpus/$target" "seeds/$target"
done
