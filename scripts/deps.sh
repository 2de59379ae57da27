#!/usr/bin/env bash
# deps.sh: installs, from Debian's packages, whichever of the named packages are missing.
# Sourced by run.sh and test.sh; needs root (or sudo) only when something is missing.
install_missing() {
  local missing=()
  for pkg in "$@"; do
    [ -n "$pkg" ] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

BUILD_PACKAGES=(build-essential cmake pkg-config libasio-dev libcli11-dev libcpp-httplib-dev nlohmann-json3-dev
  libsqlite3-dev libspdlog-dev libsystemd-dev libyaml-cpp-dev)
# python3-prometheus-client: the Prometheus parser the metrics test checks /metrics with; systemd:
# systemd-analyze for the unit test; dpkg-dev: dpkg-shlibdeps for the .deb; lintian checks the .deb;
# haproxy: a real consumer of the PROXY headers portrelay sends (its test runs its own instance);
# etcd-server, etcd-client: the etcd (and etcdctl) that the fleet-mode tests run as their own
# members (tests/etcd_process.hpp); iproute2: `ip` makes the veth pair of the link-local test
# (tests/test_ip_zone.cpp; the fleet tests bring lo up without it); openssl: the CA and certificates
# of the etcd-over-https test, made at test time.
TEST_PACKAGES=(catch2 chromium python3-prometheus-client systemd dpkg-dev lintian haproxy etcd-server etcd-client
  iproute2 openssl)

# playwright-core drives Debian's chromium; it never downloads a browser of its own.
install_browser_test_deps() {
  command -v node >/dev/null || install_missing nodejs npm
  if [ ! -d tests/web/node_modules/playwright-core ]; then
    (cd tests/web && npm ci --no-audit --no-fund)
  fi
}
