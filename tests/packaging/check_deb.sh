#!/usr/bin/env bash
# check_deb.sh BUILD_DIR: builds the .deb with `cpack -G DEB`, runs lintian on it (any error fails),
# checks its contents with `dpkg-deb --contents` (binary, unit, manual page, bash completion, README.md,
# the Debian documents; nothing world-writable), unpacks it and checks the packaged binary and the documents, and
# runs its postinst/postrm against a scratch root (DPKG_ROOT).
set -euo pipefail
build=$1
source=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cpack -G DEB -B "$work/out" --config "$build/CPackConfig.cmake" >/dev/null
deb=$(ls "$work"/out/portrelay_*.deb)
echo "--- lintian $(basename "$deb")"
# --fail-on error: the status is 2 for an E: tag, 1 if lintian itself failed. It refuses root
# without --allow-root.
status=0
report=$(lintian --allow-root --fail-on error "$deb" 2>&1) || status=$?
echo "${report:-(no tags)}"
if [ "$status" -ne 0 ] || echo "$report" | grep -q '^E: '; then
  echo "FAIL: lintian reports errors (status $status)"; exit 1
fi

echo "--- $(basename "$deb")"
contents=$(dpkg-deb --contents "$deb")
echo "$contents"
doc=./usr/share/doc/portrelay
for path in ./usr/bin/portrelay ./usr/lib/systemd/system/portrelay.service ./usr/share/man/man1/portrelay.1.gz \
  ./usr/share/bash-completion/completions/portrelay $doc/README.md $doc/README.Debian $doc/copyright $doc/changelog.gz; do
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
for lib in libsqlite3-0 libsystemd0 libcpp-httplib libyaml-cpp; do
  echo "$depends" | grep -q "$lib" || { echo "FAIL: Depends lacks $lib"; exit 1; }
done

dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/portrelay" --version | grep -qx "portrelay $(dpkg-deb --field "$deb" Version)" ||
  { echo "FAIL: the packaged binary does not report the package version"; exit 1; }
grep -q '^ExecStart=/usr/bin/portrelay ' "$work/root/usr/lib/systemd/system/portrelay.service" ||
  { echo "FAIL: the packaged unit does not start /usr/bin/portrelay"; exit 1; }
# The packaged completion offers ctl's subcommands, run against the packaged binary.
completion="$work/root/usr/share/bash-completion/completions/portrelay"
offered=$(bash -c 'root=$1; portrelay() { "$root/usr/bin/portrelay" "$@"; }; source "$2"; COMP_WORDS=(portrelay ctl "")
  COMP_CWORD=2; _portrelay; echo "${COMPREPLY[*]}"' - "$work/root" "$completion")
for sub in list get add set rm enable disable conns kill export apply; do
  echo " $offered " | grep -q " $sub " || { echo "FAIL: the bash completion does not offer ctl $sub ($offered)"; exit 1; }
done
# The manual page names every flag that --help prints.
gzip -dc "$work/root/usr/share/man/man1/portrelay.1.gz" | sed 's/\\-/-/g' > "$work/portrelay.1"
for flag in $("$work/root/usr/bin/portrelay" --help | grep -oE -- '--[a-z-]+' | sort -u); do
  grep -qF -- "$flag" "$work/portrelay.1" || { echo "FAIL: the manual page does not mention $flag"; exit 1; }
done

doc="$work/root/usr/share/doc/portrelay"
# The copyright file is DEP-5, and its Expat text is LICENSE's permission text, line for line.
head -n1 "$doc/copyright" | grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' ||
  { echo "FAIL: the copyright file is not DEP-5"; exit 1; }
grep -qx 'License: Expat' "$doc/copyright" || { echo "FAIL: the copyright file names no Expat license"; exit 1; }
grep -qx 'Copyright (c) 2026 the portrelay authors' "$source/LICENSE" || { echo "FAIL: LICENSE lacks its copyright line"; exit 1; }
sed -n '/^License: Expat$/,/^[^ ]/{/^ /p}' "$doc/copyright" | sed 's/^ //; s/^\.$//' > "$work/expat"
sed -n '/^Permission is hereby granted/,$p' "$source/LICENSE" | diff -u - "$work/expat" ||
  { echo "FAIL: the copyright file's license text is not LICENSE's"; exit 1; }
# changelog.gz: compressed without name or timestamp (gzip -n), its latest entry is this version.
gzip -t "$doc/changelog.gz" || { echo "FAIL: changelog.gz is not gzip"; exit 1; }
[ "$(od -An -j4 -N4 -tu4 "$doc/changelog.gz" | tr -d ' ')" = 0 ] || { echo "FAIL: changelog.gz has a timestamp"; exit 1; }
gzip -dc "$doc/changelog.gz" > "$work/changelog"
changelog_version=$(dpkg-parsechangelog -l "$work/changelog" -S Version)
[ "$changelog_version" = "$(dpkg-deb --field "$deb" Version)" ] ||
  { echo "FAIL: the changelog's latest entry is $changelog_version, not the package version"; exit 1; }
# README.Debian tells how to run the installed service; README.md's ./scripts/ are not in the package.
for text in /etc/portrelay/token 'systemctl enable --now portrelay' 'Authorization: Bearer' ./scripts/; do
  grep -qF -- "$text" "$doc/README.Debian" || { echo "FAIL: README.Debian does not mention $text"; exit 1; }
done

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
echo "PASS: lintian, contents, permissions, dependencies, binary, manual page, copyright, changelog, README.Debian, postinst token and purge"
