#!/usr/bin/env bash
# Builds the edge-agent .deb with plain dpkg-deb, from the same `[package.metadata.deb]`
# table in agent/Cargo.toml that cargo-deb reads (assets, conffiles, maintainer scripts,
# depends), for hosts without cargo-deb.
#
#   scripts/package-deb.sh [--arch amd64|arm64] [--binary PATH] [--out DIR] [--compress xz|gzip|none]
#
# --arch     Debian architecture (default: the host's). The binary defaults to the release
#            build for it: target/release/edge-agent, or for arm64
#            target/aarch64-unknown-linux-gnu/release/edge-agent (cross/build-aarch64.sh).
# --binary   package this binary instead (the tests use the debug build).
# --out      where the .deb goes (default: target/debian). Prints the .deb's path last.
#
# The binary is stripped of debug info (symbols stay for backtraces). `$auto` in depends
# becomes libc6 (>= the highest GLIBC_x.y the binary needs), computed by the same code
# that checks the aarch64 build (cross/build-aarch64.sh --max-glibc).

# The package fields are assigned by an eval of what python3 prints from the manifest.
# shellcheck disable=SC2154
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

arch=$(dpkg --print-architecture)
binary=""
out="${CARGO_TARGET_DIR:-$repo/target}/debian"
compress=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "package-deb: unknown option $1" >&2; exit 2 ;;
  esac
done
say() { printf 'package-deb: %s\n' "$*" >&2; }
die() { printf 'package-deb: FAILED: %s\n' "$*" >&2; exit 1; }

case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu elf='x86-64' ;;
  arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu elf='ARM aarch64' ;;
  *) die "architecture $arch: only amd64 and arm64 are built" ;;
esac
target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "$binary" ]; then
  if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    binary="$target_dir/release/edge-agent"
  else
    binary="$target_dir/$triple/release/edge-agent"
  fi
fi
[ -f "$binary" ] || die "no binary at $binary (build it first, or pass --binary)"
file -b "$binary" | grep -q "$elf" || die "$binary is not an $arch executable: $(file -b "$binary")"
strip_tool=$gnu-strip
command -v "$strip_tool" >/dev/null || die "$strip_tool is missing (apt-get install binutils-$gnu)"

# The package metadata, as shell assignments (python3's tomllib reads the manifests).
eval "$(python3 - "$repo" <<'PY'
import shlex, sys, tomllib
repo = sys.argv[1]
ws = tomllib.load(open(f"{repo}/Cargo.toml", "rb"))
pkg = tomllib.load(open(f"{repo}/agent/Cargo.toml", "rb"))["package"]
deb = pkg["metadata"]["deb"]
def field(v):
    return ws["workspace"]["package"][v] if isinstance(pkg.get(v), dict) else pkg.get(v)
out = {
    "name": deb.get("name", pkg["name"]),
    "version": f'{field("version")}-{deb.get("revision", "1")}',
    "license": field("license") or "",
    "summary": pkg["description"],
    "extended": deb.get("extended-description", ""),
    "maintainer": deb["maintainer"],
    "copyright": deb.get("copyright", ""),
    "section": deb.get("section", "misc"),
    "priority": deb.get("priority", "optional"),
    "depends": deb.get("depends", "$auto"),
    "recommends": deb.get("recommends", ""),
    "scripts": deb.get("maintainer-scripts", ""),
    "conffiles": "\n".join(deb.get("conf-files", [])),
    "assets": "\n".join("\t".join(a if isinstance(a, list) else [a["source"], a["dest"], a["mode"]])
                        for a in deb["assets"]),
}
for k, v in out.items():
    print(f"{k}={shlex.quote(v)}")
PY
)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
mkdir -p "$root/DEBIAN"

# Assets: paths are relative to agent/ as for cargo-deb; target/release/ means the binary.
while IFS=$'\t' read -r src dest mode; do
  case "$dest" in */) dest="$dest$(basename "$src")" ;; esac
  case "$src" in
    target/release/*)
      install -D -m "$mode" "$binary" "$root/$dest"
      "$strip_tool" --strip-debug "$root/$dest"
      ;;
    *)
      [ -f "$repo/agent/$src" ] || die "asset agent/$src is missing"
      install -D -m "$mode" "$repo/agent/$src" "$root/$dest"
      ;;
  esac
done <<<"$assets"
install -D -m 644 /dev/stdin "$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $name
Copyright: $copyright
License: $license
EOF

# Control files.
if [ -n "$scripts" ]; then
  for s in preinst postinst prerm postrm; do
    [ -f "$repo/agent/$scripts/$s" ] && install -m 755 "$repo/agent/$scripts/$s" "$root/DEBIAN/$s"
  done
fi
[ -n "$conffiles" ] && printf '%s\n' "$conffiles" >"$root/DEBIAN/conffiles"
# shellcheck disable=SC2016 # a literal $auto
if [[ "$depends" == *'$auto'* ]]; then
  glibc=$("$repo/cross/build-aarch64.sh" --max-glibc "$binary")
  [ -n "$glibc" ] || die "could not read the GLIBC versions $binary needs"
  depends=${depends//\$auto/libc6 (>= $glibc)}
fi
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
{
  echo "Package: $name"
  echo "Version: $version"
  echo "Architecture: $arch"
  echo "Maintainer: $maintainer"
  echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
  echo "Depends: $depends"
  [ -n "$recommends" ] && echo "Recommends: $recommends"
  echo "Section: $section"
  echo "Priority: $priority"
  echo "Description: $summary"
  # Extended description: lines indented by a space, an empty line written " .".
  printf '%s\n' "$extended" | fold -s -w 78 | sed 's/ *$//; s/^$/./; s/^/ /'
} >"$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
# -Zgzip etc.; --root-owner-group: every file root:root whoever builds.
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1)), Depends: $depends"
echo "$deb"
