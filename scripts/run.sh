#!/usr/bin/env bash
# run.sh: installs what is missing, builds, and runs the daemon on its defaults
# (database ./portrelay.db, API on http://127.0.0.1:7410/). Extra arguments go to portrelay.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_missing "${BUILD_PACKAGES[@]}"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
cmake --build build/release -j"$(nproc)"
exec build/release/portrelay "$@"
