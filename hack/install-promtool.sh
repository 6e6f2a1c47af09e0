#!/usr/bin/env bash
# Installs promtool, which the monitoring tests run, from Debian's prometheus source package (its
# binary package `promtool`): the .deb from a Debian mirror, checked against its SHA-256 and
# unpacked without root or apt. A second run with the binary present returns at once.
set -euo pipefail

VERSION=${VERSION:?}
OUT=${OUT:?}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ -x "$OUT" ] && exit 0

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 sha256=${SHA256_amd64:?} ;;
  aarch64 | arm64) arch=arm64 sha256=${SHA256_arm64:?} ;;
  *) echo "no promtool checksum for $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb="promtool_${VERSION}_${arch}.deb"
curl -fsSL --retry 3 -o "$work/$deb" "$MIRROR/pool/main/p/prometheus/$deb"
echo "$sha256  $work/$deb" | sha256sum --check --quiet -
dpkg-deb --fsys-tarfile "$work/$deb" | tar -x -C "$work" ./usr/bin/promtool
mkdir -p "$(dirname "$OUT")"
# Moved into place last, so that an interrupted run leaves nothing that looks installed.
install -m 0755 "$work/usr/bin/promtool" "$OUT.partial"
mv "$OUT.partial" "$OUT"
# sed, not head: head exits after one line and SIGPIPEs promtool, which pipefail turns into a failure.
"$OUT" --version | sed -n 1p
