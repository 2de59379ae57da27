#!/usr/bin/env bash
# run.sh: installs what is missing, builds, and runs the daemon on its defaults (database
# portrelay.db in the directory you run it from, API on http://127.0.0.1:7410/). Extra arguments
# go to portrelay.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/scripts/deps.sh"
install_missing "${BUILD_PACKAGES[@]}"
cmake -S "$repo" -B "$repo/build/release" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
cmake --build "$repo/build/release" -j"$(nproc)"
exec "$repo/build/release/portrelay" "$@"
