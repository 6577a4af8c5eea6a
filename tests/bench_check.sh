#!/bin/sh
# The benchmark's plumbing: bench/run.sh --quick, one repetition, measuring
# BUILD_DIR, with its file and report in a scratch directory. No speed is
# asserted (the machine is shared and noisy). What is: the run finishes,
# every raw line is JSON with a rate above zero or a skip with its reason,
# and every figure and limit the report compares was measured, unless the
# run skipped it and said why.
#
#   tests/bench_check.sh SOURCE_DIR BUILD_DIR
#
# Exit 0 pass, 1 fail, 77 skip (no userfaultfd).
set -eu

src=${1:?usage: $0 SOURCE_DIR BUILD_DIR}
build=${2:?usage: $0 SOURCE_DIR BUILD_DIR}
# In the build directory, not /tmp: the disk figures need O_DIRECT, which
# a tmpfs /tmp refuses.
scratch=$(mktemp -d "$build/bench-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if ! sh "$src/bench/run.sh" --quick --reps 1 --build "$build" --dir "$scratch" \
	--results "$scratch" >"$scratch/out" 2>&1; then
	cat "$scratch/out"
	grep -q "userfaultfd: " "$scratch/out" && exit 77
	exit 1
fi
python3 - "$src/bench/run.sh" "$scratch" <<'PY'
import glob, json, re, sys

script, scratch = sys.argv[1], sys.argv[2]
jsonl = glob.glob(scratch + "/*-fault.jsonl")
md = glob.glob(scratch + "/*-fault.md")
if len(jsonl) != 1 or len(md) != 1:
    sys.exit(f"expected one report, found {jsonl} {md}")
rates = ("per_s", "mbps", "faults_per_s", "pages_per_s", "fill_mbps", "wb_mbps")
measured, skipped, bad = set(), [], []
for n, line in enumerate(open(jsonl[0]), 1):
    try:
        r = json.loads(line)
    except ValueError as e:
        sys.exit(f"line {n} is not JSON ({e}): {line.strip()}")
    if "skip" in r:
        if not r["skip"]:
            bad.append(f"{r['name']}: skipped without a reason")
        skipped.append(r["name"])
        continue
    if not any(r.get(k, 0) > 0 for k in rates):
        bad.append(f"{r['name']}: no rate above zero: {line.strip()}")
    measured.add(r["name"])

# The pairs the report compares, as run.sh lists them.
pairs = re.findall(r'row\("[^"]*", "([^"]+)", "[^"]+", "([^"]+)"', open(script).read())
if len(pairs) < 20:
    sys.exit(f"found only {len(pairs)} rows in {script}")
def accounted(name):
    return name in measured or any(name.startswith(s) or s.startswith(name) for s in skipped)
missing = sorted({n for p in pairs for n in p if not accounted(n)})
bad += [f"{n}: compared in the report, never measured nor skipped" for n in missing]
text = open(md[0]).read()
if "| figure | tide | limit | ratio |" not in text:
    bad.append("the report has no table of ratios")
for b in bad:
    print(b)
print(f"{len(measured)} figures measured, {len(skipped)} skipped, {len(pairs)} rows checked")
sys.exit(1 if bad else 0)
PY
