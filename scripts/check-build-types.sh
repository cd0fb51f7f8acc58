#!/usr/bin/env bash
# Build the default targets in each standard CMake build type (Release,
# Debug, RelWithDebInfo, MinSizeRel) with the Unix Makefiles generator, the
# one a user gets from a plain `cmake -S . -B b`, and warnings as errors:
# optimisation levels change which warnings GCC emits, so a build type nobody
# tried can fail where scripts/build.sh passes.  Sequential, one build dir per
# type under build-types/ (kept, so a second run is incremental).
#
#   bash scripts/check-build-types.sh [TYPE...]     (default: all four)
#   UNDERSTUDY_JOBS=N   parallel jobs per build (default 2)
#   extra configure flags: UNDERSTUDY_CMAKE_ARGS="-DUNDERSTUDY_BPF=OFF"
#
# Not run by CI (four full builds); run it before changing compile flags,
# the toolchain or anything warnings could come from.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${UNDERSTUDY_JOBS:-2}
TYPES=("$@")
[[ ${#TYPES[@]} -gt 0 ]] || TYPES=(Release Debug RelWithDebInfo MinSizeRel)
read -r -a EXTRA <<<"${UNDERSTUDY_CMAKE_ARGS:-}"

failed=()
for type in "${TYPES[@]}"; do
  dir=build-types/$type
  log=build-types/$type.log
  mkdir -p build-types
  echo "== $type ($dir, log $log)"
  t0=$(date +%s)
  if cmake -S . -B "$dir" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE="$type" -DUNDERSTUDY_WERROR=ON \
       "${EXTRA[@]}" >"$log" 2>&1 &&
     cmake --build "$dir" -j "$JOBS" >>"$log" 2>&1; then
    echo "   ok in $(( $(date +%s) - t0 )) s"
  else
    grep -E 'error|Error' "$log" | head -n 20 || true
    echo "   FAILED in $(( $(date +%s) - t0 )) s (full log: $log)"
    failed+=("$type")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "understudy: build types failing: ${failed[*]}"
  exit 1
fi
echo "understudy: build types ${TYPES[*]} all build"
