#!/usr/bin/env bash
# Runs every libFuzzer target of BUILD_DIR for SECONDS each.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR must be configured with CC=clang CXX=clang++ -DUNDERSTUDY_FUZZ=ON.
# Corpora persist in BUILD_DIR/fuzz-corpus/<target>; crashes are written to
# BUILD_DIR/fuzz-artifacts/ and make this script exit 1, naming the
# reproducer command.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
targets=("$build"/bin/*_fuzz)
if [[ ! -x "${targets[0]}" ]]; then
  echo "$0: no *_fuzz binaries in $build/bin; configure with" \
       "CC=clang CXX=clang++ cmake -DUNDERSTUDY_FUZZ=ON and build them" >&2
  exit 2
fi

status=0
mkdir -p "$build/fuzz-artifacts"
# Scratch journals of the segment target go here and are removed at the end.
export TMPDIR="$build/fuzz-tmp"
mkdir -p "$TMPDIR"
trap 'rm -rf "$build/fuzz-tmp"' EXIT
for t in "${targets[@]}"; do
  name=$(basename "$t")
  corpus="$build/fuzz-corpus/$name"
  mkdir -p "$corpus"
  echo "== $name for ${seconds}s (corpus $corpus)"
  if ! UNDERSTUDY_FUZZ_SEED_DIR="$corpus" "$t" "$corpus" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$name-" 2>"$build/fuzz-artifacts/$name.log"; then
    status=1
    tail -n 40 "$build/fuzz-artifacts/$name.log" >&2
    echo "$name FAILED; reproduce with: $t $build/fuzz-artifacts/$name-<crash file>" >&2
  else
    grep -E 'stat::number_of_executed_units|cov:' "$build/fuzz-artifacts/$name.log" | tail -n 2
  fi
done
exit $status
