#!/usr/bin/env bash
# check_unit.sh BUILD_DIR: installs the build into a scratch root (prefix /usr, as the .deb does) next
# to the system's own units, then checks the installed unit with `systemd-analyze verify` (which also
# checks that ExecStart names an executable) and rates it with `systemd-analyze security --offline=yes`:
# the exposure must be 2.0 or lower.
set -euo pipefail
build=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

DESTDIR="$root" cmake --install "$build" --prefix /usr >/dev/null
unit="$root/usr/lib/systemd/system/portrelay.service"
[ -f "$unit" ] || { echo "FAIL: cmake --install did not install $unit"; exit 1; }
[ -x "$root/usr/bin/portrelay" ] || { echo "FAIL: cmake --install did not install /usr/bin/portrelay"; exit 1; }
grep -q '^ExecStart=/usr/bin/portrelay ' "$unit" || { echo "FAIL: ExecStart does not name /usr/bin/portrelay"; exit 1; }
# The targets the unit refers to (network-online.target, multi-user.target) come from the system.
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"

echo "--- systemd-analyze verify"
out=$(systemd-analyze verify --root="$root" portrelay.service 2>&1) || { echo "$out"; echo "FAIL: verify"; exit 1; }
[ -z "$out" ] || { echo "$out"; echo "FAIL: verify printed warnings"; exit 1; }
echo "clean"

echo "--- systemd-analyze security --offline=yes"
report=$(systemd-analyze security --offline=yes --root="$root" --no-pager portrelay.service 2>&1) || true
echo "$report" | grep -E '^(✗|→)' || true
level=$(echo "$report" | sed -n 's/.*Overall exposure level for portrelay.service: \([0-9.]*\).*/\1/p')
[ -n "$level" ] || { echo "$report"; echo "FAIL: no exposure level in the report"; exit 1; }
awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || { echo "FAIL: exposure $level is above 2.0"; exit 1; }
echo "PASS: exposure $level (at most 2.0)"

# The settings the issue names must be there, not only a good score.
for setting in Type=notify WatchdogSec= DynamicUser=yes StateDirectory=portrelay 'LoadCredential=token:' \
  CapabilityBoundingSet=CAP_NET_BIND_SERVICE AmbientCapabilities=CAP_NET_BIND_SERVICE ProtectSystem=strict \
  ProtectHome=yes PrivateTmp=yes PrivateDevices=yes NoNewPrivileges=yes RestrictAddressFamilies= \
  SystemCallFilter=@system-service MemoryDenyWriteExecute=yes LimitNOFILE= Restart=on-failure TimeoutStopSec=; do
  grep -q "^$setting" "$unit" || { echo "FAIL: the unit lacks $setting"; exit 1; }
done
# TimeoutStopSec must leave room for the drain.
drain=$(sed -n 's/^ExecStart=.*--drain-timeout \([0-9]*\).*/\1/p' "$unit")
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
[ -n "$drain" ] && [ -n "$stop" ] && [ "$stop" -gt "$drain" ] || { echo "FAIL: TimeoutStopSec ($stop) is not above the drain timeout ($drain)"; exit 1; }
echo "PASS: TimeoutStopSec=${stop}s is above --drain-timeout $drain"
