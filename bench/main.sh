#!/usr/bin/env bash
# The main job: install what is missing, build tide optimised, and run the
# umapsort-style benchmark on generated data: 1 GiB of random 64-bit keys
# sorted in place through a 256 MiB tide pool with 2 MiB pages (the sort's
# best page size, see bench/results/sort.md), verified. Extra arguments go
# to `tide sort` and win (for example: --size 4G --pool 512M --json).
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
exec build-release/apps/tide sort --page-size 2M --file "$dir/tide-sort-$$.dat" "$@"
