#!/usr/bin/env bash
# bench/run.sh: installs the peers and load tools from Debian, builds portrelay (Release), and runs
# bench/bench.py: portrelay side by side with HAProxy, nginx stream, rinetd and socat on loopback,
# medians of 3, one markdown table with ratios, saved in bench/results/. About 12 minutes on 2 cores.
# Extra arguments go to bench.py (e.g. --reps 1 --only direct,portrelay,haproxy).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/run.sh needs root (sysctls, raised descriptor limits)"; exit 1; }

# Installing haproxy or nginx must not start their system services (and take port 80).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
install_missing "${BUILD_PACKAGES[@]}" python3 haproxy nginx libnginx-mod-stream socat rinetd iperf3 wrk sockperf
rm -f /usr/sbin/policy-rc.d
trap - EXIT

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build/release -j"$(nproc)" >/dev/null

# Tens of thousands of short connections per run: TIME_WAIT sockets may be reused by new outgoing
# connections (for every relay alike). Restored afterwards.
old_reuse=$(sysctl -n net.ipv4.tcp_tw_reuse)
restore() { sysctl -qw net.ipv4.tcp_tw_reuse="$old_reuse"; }
trap restore EXIT
sysctl -qw net.ipv4.tcp_tw_reuse=1
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # a container may cap it lower

# The floor relay (bench/floor_relay.c): the least a readiness relay can do, for --floor.
cc -O2 -pthread -o build/release/floor_relay bench/floor_relay.c

python3 bench/bench.py --binary build/release/portrelay --floor build/release/floor_relay "$@"
