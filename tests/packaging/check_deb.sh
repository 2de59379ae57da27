#!/usr/bin/env bash
# check_deb.sh BUILD_DIR: builds the .deb with `cpack -G DEB`, checks its contents with
# `dpkg-deb --contents` (binary, unit, README; nothing world-writable), unpacks it and runs the
# packaged binary, and runs its postinst/postrm against a scratch root (DPKG_ROOT).
set -euo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cpack -G DEB -B "$work/out" --config "$build/CPackConfig.cmake" >/dev/null
deb=$(ls "$work"/out/portrelay_*.deb)
echo "--- $(basename "$deb")"
contents=$(dpkg-deb --contents "$deb")
echo "$contents"
for path in ./usr/bin/portrelay ./usr/lib/systemd/system/portrelay.service ./usr/share/doc/portrelay/README.md; do
  echo "$contents" | awk '{print $6}' | grep -qx "$path" || { echo "FAIL: $path is not in the package"; exit 1; }
done
# Permissions are the first column (drwxr-xr-x); the 9th character is "others may write".
writable=$(echo "$contents" | awk 'substr($1, 1, 1) != "l" && substr($1, 9, 1) == "w"')
[ -z "$writable" ] || { echo "$writable"; echo "FAIL: world-writable entries"; exit 1; }
owners=$(echo "$contents" | awk '$2 != "root/root"')
[ -z "$owners" ] || { echo "$owners"; echo "FAIL: entries not owned by root"; exit 1; }
echo "$contents" | grep -q '^-rwxr-xr-x .* ./usr/bin/portrelay$' || { echo "FAIL: the binary is not 0755"; exit 1; }
depends=$(dpkg-deb --field "$deb" Depends)
echo "Depends: $depends"
for lib in libsqlite3-0 libsystemd0 libcpp-httplib; do
  echo "$depends" | grep -q "$lib" || { echo "FAIL: Depends lacks $lib"; exit 1; }
done

dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/portrelay" --version | grep -qx "portrelay $(dpkg-deb --field "$deb" Version)" ||
  { echo "FAIL: the packaged binary does not report the package version"; exit 1; }
grep -q '^ExecStart=/usr/bin/portrelay ' "$work/root/usr/lib/systemd/system/portrelay.service" ||
  { echo "FAIL: the packaged unit does not start /usr/bin/portrelay"; exit 1; }

dpkg-deb -e "$deb" "$work/control"
DPKG_ROOT="$work/root" sh "$work/control/postinst" configure
token="$work/root/etc/portrelay/token"
[ "$(stat -c %a "$token")" = 600 ] || { echo "FAIL: the token is not 0600"; exit 1; }
grep -qE '^[0-9a-f]{64}$' "$token" || { echo "FAIL: the token is not 64 hex digits"; exit 1; }
before=$(cat "$token")
DPKG_ROOT="$work/root" sh "$work/control/postinst" configure
[ "$(cat "$token")" = "$before" ] || { echo "FAIL: a second configure replaced the token"; exit 1; }
DPKG_ROOT="$work/root" sh "$work/control/postrm" remove
[ -f "$token" ] || { echo "FAIL: remove (not purge) deleted the token"; exit 1; }
DPKG_ROOT="$work/root" sh "$work/control/postrm" purge
[ ! -e "$work/root/etc/portrelay" ] || { echo "FAIL: purge left /etc/portrelay"; exit 1; }
echo "PASS: contents, permissions, dependencies, binary, postinst token and purge"
