#!/usr/bin/env bash
# Configure and build understudy into build/ (binaries in build/bin, the
# preload library in build/lib), warnings as errors (UNDERSTUDY_WERROR: a
# developer build; a plain `cmake -S . -B b` does not set it).  Extra arguments
# go to cmake's configure (-DUNDERSTUDY_WERROR=OFF overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${UNDERSTUDY_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUNDERSTUDY_WERROR=ON "$@" >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
echo "understudy: built $BUILD/bin/understudy and $BUILD/lib/libunderstudy_preload.so"
