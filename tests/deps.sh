#!/usr/bin/env bash
# Installs the Debian packages tide needs to build, test and benchmark,
# only those missing. Sourced by tests/run.sh and bench/main.sh.
tide_deps=(liburing-dev libuv1-dev libcriterion-dev meson ninja-build pkg-config gcc g++ gnuplot-nox)

tide_ensure_deps() {
	local missing=() p
	for p in "${tide_deps[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "installing: ${missing[*]}" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
