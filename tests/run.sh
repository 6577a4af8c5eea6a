#!/usr/bin/env bash
# Every test, twice: a normal build and an ASan/UBSan build.
# Installs what it needs, then prints "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/deps.sh
tide_ensure_deps || { echo "cannot install the build dependencies" >&2; exit 1; }

run_suite() {	# build dir, extra meson options...
	local dir=$1; shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
	else
		meson setup "$dir" "$@" >/dev/null || return 1
	fi
	ninja -C "$dir" >/dev/null || { ninja -C "$dir" | tail -30; return 1; }
	meson test -C "$dir" --print-errorlogs ${TIDE_TEST_ARGS:-}
}

status=0
run_suite build-test || status=1
# LeakSanitizer stays on; ASan needs the library unresolved symbols allowed.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false || status=1

python3 - build-test build-asan <<'PY'
import json, sys, os
passed = failed = skipped = 0
for d in sys.argv[1:]:
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    for line in open(log):
        r = json.loads(line)["result"]
        if r == "OK": passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(0 if passed and not failed else 1)
PY
[ $? -eq 0 ] || status=1
exit $status
