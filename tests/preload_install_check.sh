#!/bin/sh
# preload install check: an installed `tide run` finds the installed
# libtide-preload.so (bindir -> libdir), not the build tree's, and pages an
# unmodified program's mapping through it.
#
#   tests/preload_install_check.sh BUILD_DIR HELPER
#
# Installs BUILD_DIR into a scratch --destdir and runs HELPER (tests/
# preload_helper.c) under the installed tide. Exit 0 pass, 1 fail, 77 skip
# (tide cannot run here: no userfaultfd).
set -eu

build=${1:?usage: $0 BUILD_DIR HELPER}
helper=${2:?usage: $0 BUILD_DIR HELPER}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

meson install -C "$build" --destdir "$scratch/root" >"$scratch/install.log" 2>&1 ||
	{ cat "$scratch/install.log"; exit 1; }
tide=$(find "$scratch/root" -path '*/bin/tide' -type f | head -n 1)
lib=$(find "$scratch/root" -name libtide-preload.so | head -n 1)
[ -x "$tide" ] || { echo "tide was not installed"; exit 1; }
[ -f "$lib" ] || { echo "libtide-preload.so was not installed"; exit 1; }

data=$(mktemp /var/tmp/tide-preload-install-XXXXXX)
trap 'rm -rf "$scratch" "$data"' EXIT
head -c $((8 << 20)) /dev/urandom >"$data"

# TIDE_VERBOSE names the library that served the mapping (it is in LD_PRELOAD).
out=$(env -u LD_PRELOAD "$tide" run --json --pool 4M --min 1M -- \
	sh -c 'echo "LD_PRELOAD=$LD_PRELOAD" >&2; exec "$0" ro "$1"' "$helper" "$data" \
	2>"$scratch/err") || { cat "$scratch/err"; echo "tide run failed"; exit 1; }
case $out in
*'"processes_unavailable":1'*) echo "skip: tide cannot run here"; cat "$scratch/err"; exit 77 ;;
esac
real_lib=$(readlink -f "$lib")
grep -q "LD_PRELOAD=$real_lib" "$scratch/err" ||
	{ echo "tide run did not preload the installed $real_lib:"; cat "$scratch/err"; exit 1; }
case $out in
*'"mappings_taken":1'*) ;;
*) echo "the installed library did not page the mapping: $out"; cat "$scratch/err"; exit 1 ;;
esac
echo "ok: $tide preloads $real_lib"
