#!/usr/bin/env bash
# Runs every libFuzzer target of BUILD_DIR for SECONDS each (the journal
# segment parser, journal repair, the stream codec, the feed transcoder).
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]   (default: all of them)
# BUILD_DIR must be configured with CC=clang CXX=clang++ -DUNDERSTUDY_FUZZ=ON.
# Corpora persist in BUILD_DIR/fuzz-corpus/<target>; crashes are written to
# BUILD_DIR/fuzz-artifacts/ and make this script exit 1, naming the
# reproducer command.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
# Every target of tests/fuzz/CMakeLists.txt: one that was not built is an
# error, not a silent skip.
names=(journal_segment_fuzz journal_repair_fuzz journal_stream_fuzz batch_transcode_fuzz)
if [[ $# -gt 0 ]]; then
  names=("$@")
fi
targets=()
for name in "${names[@]}"; do
  if [[ ! -x "$build/bin/$name" ]]; then
    echo "$0: $build/bin/$name is missing; configure with" \
         "CC=clang CXX=clang++ cmake -DUNDERSTUDY_FUZZ=ON and build ${names[*]}" >&2
    exit 2
  fi
  targets+=("$build/bin/$name")
done

status=0
mkdir -p "$build/fuzz-artifacts"
# Scratch journals of the segment and repair targets go here and are removed
# at the end: a tmpfs when there is one (the repair target writes, repairs and
# fsyncs a journal per input, twice as fast there), else under BUILD_DIR.
if [[ -d /dev/shm && -w /dev/shm ]]; then
  scratch=$(mktemp -d /dev/shm/understudy-fuzz-XXXXXX)
else
  scratch="$build/fuzz-tmp"
  mkdir -p "$scratch"
fi
export TMPDIR="$scratch"
trap 'rm -rf "$scratch"' EXIT
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
