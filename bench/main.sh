#!/usr/bin/env bash
# The main job: install what is missing, build tide optimised, and run the
# umapsort-style benchmark on generated data: 1 GiB of random 64-bit keys
# sorted in place through a 256 MiB tide pool, verified. Extra arguments go
# to `tide sort` (for example: --size 4G --pool 512M --json).
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
tide_ensure_deps
if [ -f build-release/build.ninja ]; then
	meson setup --reconfigure build-release --buildtype=release >/dev/null
else
	meson setup build-release --buildtype=release >/dev/null
fi
ninja -C build-release >/dev/null
dir=${TIDE_SORT_DIR:-/var/tmp}
exec build-release/apps/tide sort --file "$dir/tide-sort-$$.dat" "$@"
