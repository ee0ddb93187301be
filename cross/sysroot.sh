#!/usr/bin/env bash
# Builds an arm64 sysroot from Debian 11 (bullseye) packages, without Docker, root or
# multiarch: a private apt state downloads the .debs and dpkg-deb extracts them into DIR.
#
#   cross/sysroot.sh DIR
#
# Why bullseye: its glibc is 2.31 and its GStreamer 1.18, the oldest pair near JetPack 5
# (glibc 2.31, GStreamer 1.16) that a Debian mirror still serves for arm64. Linking against
# these libraries means a GStreamer symbol newer than 1.18 fails the link, and running the
# binary under qemu with DIR as its root runs it on a real glibc 2.31.
#
# DIR gets the runtime closure of glibc, libstdc++ (ONNX Runtime's library needs it for
# `detect` under qemu), GStreamer core/base and the base plugins (for qemu: the demo
# camera's videotestsrc ! videoconvert ! appsink), plus the -dev
# packages of GStreamer and GLib without their dependencies: only their pkg-config files
# and .so links are needed, nothing is compiled against the headers. Idempotent: a stamp
# lists what DIR holds; a second run with the same list does nothing.
set -euo pipefail

dir=${1:?usage: cross/sysroot.sh DIR}
suite=${SYSROOT_SUITE:-bullseye}
mirror=${SYSROOT_MIRROR:-http://deb.debian.org/debian}
# Security updates are optional: the sysroot links and smoke-tests the binary, it never
# ships. (The registry proxy here does not serve bullseye-security's pool.)
security=${SYSROOT_SECURITY_MIRROR:-}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# With dependencies: what the binary loads at run time, and the plugins a demo camera uses.
runtime=(libc6 libgcc-s1 libstdc++6 libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-base)
# Without dependencies: pkg-config files and the unversioned .so links the linker wants.
devel=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libglib2.0-dev
  libpcre3-dev libffi-dev libunwind-dev libdw-dev libelf-dev zlib1g-dev liblzma-dev liborc-0.4-dev
  libmount-dev libblkid-dev libselinux1-dev libpcre2-dev libsepol1-dev)

say() { printf 'sysroot: %s\n' "$*"; }
want="$suite${security:+ +security} ${runtime[*]} | ${devel[*]}"
if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$want" ]; then
  say "$dir already holds $suite arm64: ${runtime[*]} ${devel[*]}"
  exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { say "$tool is needed (a Debian or Ubuntu host)" >&2; exit 1; }
done
[ -f "$keyring" ] || { say "$keyring is missing: apt-get install debian-archive-keyring" >&2; exit 1; }

rm -rf "$dir"
apt_dir="$dir.apt"
rm -rf "$apt_dir"
mkdir -p "$dir" "$apt_dir"/{etc/sources.list.d,etc/preferences.d,lists/partial,archives/partial,debs}
touch "$apt_dir/status"
cat >"$apt_dir/etc/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: $keyring
EOF
if [ -n "$security" ]; then
  printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
    "$security" "$suite" "$keyring" >>"$apt_dir/etc/sources.list.d/debian.sources"
fi
# Everything apt keeps lives under $apt_dir; the host's apt.conf.d (proxies) still applies.
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
  -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::Preferences=$apt_dir/etc/preferences"
  -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
  -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives"
  -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
  -o "APT::Install-Recommends=false" -o "Debug::NoLocking=1"
)
# Running as a user apt's sandbox user cannot write to: download as ourselves.
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o "APT::Sandbox::User=root")

say "fetching $suite arm64 package lists"
apt-get "${apt_opts[@]}" -qq update
say "downloading ${runtime[*]} and their dependencies"
apt-get "${apt_opts[@]}" -qq -y --download-only install "${runtime[@]}" >/dev/null
say "downloading ${devel[*]}"
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "${devel[@]}")
n=0
for deb in "$apt_dir"/archives/*.deb "$apt_dir"/debs/*.deb; do
  dpkg-deb -x "$deb" "$dir"
  n=$((n + 1))
done
# Debian 11 is not usr-merged: the loader is /lib/ld-linux-aarch64.so.1 as on the box.
[ -e "$dir/lib/ld-linux-aarch64.so.1" ] || { say "no loader in $dir after extracting" >&2; exit 1; }
# Nothing links statically or reads documentation here.
rm -rf "$apt_dir" "$dir"/usr/share/{doc,man,info,locale,gtk-doc,bash-completion,lintian,iso-codes,xml}
rm -f "$dir"/usr/lib/aarch64-linux-gnu/*.a
echo "$want" >"$dir/.stamp"
say "extracted $n packages into $dir ($(du -sh "$dir" | cut -f1))"
