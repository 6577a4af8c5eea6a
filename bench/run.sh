#!/bin/sh
# One benchmark run: the raw limits (bench_raw), tide (bench_fault) and kernel
# mmap under the same memory budget, in alternating repetitions so that drift
# on this shared 2-vCPU VM hits all of them alike. Prints medians and the
# ratios of tide to its raw limit, and keeps the report in bench/results/.
#
#   bench/run.sh [--quick] [--reps N] [--secs S] [--budget SIZE] [--dir DIR]
#                [--results DIR] [--build DIR]
#
# --quick: about a minute (shorter runs, smaller file). --dir: where the data
# file goes; --results: where the report goes (bench/results/); --build: the
# build to measure (build-bench, a release build made here if missing).
# Any TIDE_* variable in the environment reaches every tide run (e.g.
# TIDE_SPIN_US=50); the ".nopoll" runs turn polling off (TIDE_SPIN_US=0 and
# TIDE_WAKE_POLL_US=0), ".nospin" the service thread's (TIDE_SPIN_US=0),
# ".threads" keep idle vCPUs polling with keeper threads instead of a CPU
# latency request (TIDE_WAKE_QOS=0), and the pinned runs turn wake polling
# off (TIDE_WAKE_POLL_US=0), where it only costs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=$root/build-bench
reps=3 secs=1 budget=128M dir=/var/tmp results=$here/results
while [ $# -gt 0 ]; do
	case $1 in
	--quick) reps=3 secs=0.3 budget=64M; shift ;;
	--reps) reps=$2; shift 2 ;;
	--secs) secs=$2; shift 2 ;;
	--budget) budget=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--results) results=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	*) echo "usage: $0 [--quick] [--reps N] [--secs S] [--budget SIZE] [--dir DIR] [--results DIR] [--build DIR]" >&2
	   exit 2 ;;
	esac
done

if [ ! -d "$build" ]; then
	meson setup "$build" "$root" --buildtype=release >/dev/null
fi
ninja -C "$build" bench/bench_raw bench/bench_fault >/dev/null
# What was built, named now: the tree may change while the run goes on.
built=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?)
if git -C "$root" status --porcelain runtime 2>/dev/null | grep -q .; then
	built="$built + uncommitted runtime changes"
fi

raw=$build/bench/bench_raw
fault=$build/bench/bench_fault
stamp=$(date +%Y-%m-%d-%H%M)
out=$results/$stamp-fault
mkdir -p "$results"
data=$dir/tide-bench-$$.dat
jsonl=$out.jsonl
: >"$jsonl"
# The guest kernel's halt polling (haltpoll cpuidle driver): the .haltpoll
# figures turn it on for their runs, and it is put back however the run ends.
hp_file=/sys/module/haltpoll/parameters/guest_halt_poll_ns
hp_saved=
hp_restore() { if [ -n "$hp_saved" ]; then echo "$hp_saved" >"$hp_file"; hp_saved=; fi; }
trap 'rm -f "$data" "$data.out"; hp_restore' EXIT
trap 'rm -f "$data" "$data.out"; hp_restore; exit 130' INT TERM

# The file is 4x the budget: every pattern has to evict.
bytes=$(echo "$budget" | awk '{ n = $0 + 0; u = substr($0, length($0));
	if (u == "K" || u == "k") n *= 1024; if (u == "M" || u == "m") n *= 1048576;
	if (u == "G" || u == "g") n *= 1073741824; printf "%d", n }')
"$raw" --file "$data" --size $((bytes * 4)) mkfile

tag() { awk -v r="$1" '{ sub(/^\{/, "{\"rep\":" r ","); print }'; }
part_raw() { "$raw" --secs "$secs" --file "$data" --budget "$budget" uffd uffd2 wp wpasync pager copy sigbus share uring | tag "$1" >>"$jsonl"; }
beside() { "$raw" --secs "$secs" --file "$data" --budget "$budget" "$1" | tag "$2" >>"$jsonl"; }
part_mmap() { "$raw" --secs "$secs" --file "$data" --budget "$budget" mmap | tag "$1" >>"$jsonl"; }
# One process per tide figure: a hang or crash costs that figure only.
part_tide() {
	for spec in $("$fault" --list); do
		# The disk's write speed drifts by a third within a run: the
		# eviction figures get the raw write just before and just after,
		# into a new file as they write (uringwf) and into the old one.
		# (Reads are not bracketed: the host caches the file, and a raw
		# read right after another read of it ran up to 60% faster.)
		case $spec in seqwrite:fresh:*) beside uringwf "$1"; beside uringw "$1" ;; esac
		"$fault" --secs "$secs" --file "$data" --budget "$budget" "$spec" >"$data.out" \
			|| echo "{\"name\":\"$spec\",\"skip\":\"bench_fault exited with status $?\"}" >>"$data.out"
		tag "$1" <"$data.out" >>"$jsonl"
		case $spec in seqwrite:fresh:*) beside uringw "$1"; beside uringwf "$1" ;; esac
	done
	# Placement: service thread and app thread pinned to one vCPU (nobody
	# sleeps on the other vCPU, so no wake polling), and the same with
	# faults served on the faulting thread (TIDE_SIGNAL_FAULTS). The raw
	# same-vCPU round trip walking as permread does runs just before,
	# between and just after: on this VM the first run after a quiet
	# spell, or after the disk figures, can be a quarter slower, raw or
	# tide alike.
	beside uffdb "$1"
	TIDE_WAKE_POLL_US=0 TIDE_SERVICE_CPU=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --app-cpu 0 \
		permread:cache:4k permread:mem:4k randread:cache:4k | tag "$1" >>"$jsonl" || true
	beside uffdb "$1"
	TIDE_SIGNAL_FAULTS=1 TIDE_SERVICE_CPU=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" \
		--app-cpu 0 --tag sig permread:cache:4k permread:mem:4k randread:cache:4k | tag "$1" >>"$jsonl" || true
	beside uffdb "$1"
	# Two app threads, pinned one per vCPU, each faulting its own region:
	# one service thread, then one shard per vCPU (TIDE_SERVICE_THREADS).
	TIDE_WAKE_POLL_US=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --app-cpu 0 \
		permread:cache:4k:fixed:2 | tag "$1" >>"$jsonl" || true
	TIDE_WAKE_POLL_US=0 TIDE_SERVICE_THREADS=2 "$fault" --secs "$secs" --file "$data" --budget "$budget" --app-cpu 0 \
		--tag shards permread:cache:4k:fixed:2 | tag "$1" >>"$jsonl" || true
	# One app thread on a pool of two shards: its walk (80% of the budget)
	# fits only if its shard borrows the idle one's budget.
	TIDE_WAKE_POLL_US=0 TIDE_SERVICE_THREADS=2 "$fault" --secs "$secs" --file "$data" --budget "$budget" --app-cpu 0 \
		--tag shards permread:cache:4k | tag "$1" >>"$jsonl" || true
	# Placement by default: no polling at all, the service thread not
	# polling, keeper threads instead of the CPU latency request (the
	# default before 2026-11-23, or where the request cannot be made), and
	# one compute-bound thread beside the app, with each.
	TIDE_WAKE_POLL_US=0 TIDE_SPIN_US=0 "$fault" --secs "$secs" --file "$data" \
		--budget "$budget" --tag nopoll permread:cache:4k randread:cache:4k \
		randread:cache:4k:fixed:2 | tag "$1" >>"$jsonl" || true
	TIDE_SPIN_US=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --tag nospin \
		permread:cache:4k randread:cache:4k randread:cache:4k:fixed:2 randread:disk:4k \
		| tag "$1" >>"$jsonl" || true
	"$fault" --secs "$secs" --file "$data" --budget "$budget" --busy 1 \
		permread:cache:4k | tag "$1" >>"$jsonl" || true
	TIDE_SPIN_US=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --busy 1 --tag nospin \
		permread:cache:4k | tag "$1" >>"$jsonl" || true
	TIDE_WAKE_QOS=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --tag threads \
		permread:cache:4k randread:cache:4k randread:cache:4k:fixed:2 randread:disk:4k \
		randread:disk:4k:fixed:8 | tag "$1" >>"$jsonl" || true
	TIDE_WAKE_QOS=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --busy 1 --tag threads \
		permread:cache:4k | tag "$1" >>"$jsonl" || true
	# Faults served on the faulting thread (TIDE_SIGNAL_FAULTS): the same
	# figures at default placement, with shards, and from disk (pinned:
	# above).
	TIDE_SIGNAL_FAULTS=1 "$fault" --secs "$secs" --file "$data" --budget "$budget" --tag sig \
		permread:cache:4k randread:cache:4k randread:cache:4k:fixed:2 seqread:disk:64k \
		randread:disk:4k:fixed:8 | tag "$1" >>"$jsonl" || true
	TIDE_SIGNAL_FAULTS=1 TIDE_SERVICE_THREADS=2 "$fault" --secs "$secs" --file "$data" --budget "$budget" \
		--app-cpu 0 --tag shards.sig permread:cache:4k:fixed:2 | tag "$1" >>"$jsonl" || true
	# Read-ahead installed by the service thread itself
	# (TIDE_INSTALL_THREAD=0): the install thread stays the default only
	# while it wins against this.
	TIDE_INSTALL_THREAD=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --tag noinstall \
		seqread:disk:64k seqread:cache:64k seqread:cache:4k | tag "$1" >>"$jsonl" || true
	# Eviction as kernels without UFFDIO_MOVE do it (TIDE_RECYCLE=0):
	# recycling stays the default only while it wins against this.
	beside uringwf "$1"
	TIDE_RECYCLE=0 "$fault" --secs "$secs" --file "$data" --budget "$budget" --tag norecycle \
		seqwrite:fresh:64k:fixed seqwrite:fresh:64k:direct | tag "$1" >>"$jsonl" || true
	beside uringwf "$1"
	rm -f "$data.out"
	# Let the host settle the writes before the next part reads the disk.
	sync; sleep 1
}

# With the guest kernel's halt polling on (root, a haltpoll guest): an idle
# vCPU polls before it halts, so a wake-up aimed at it costs no interrupt,
# and tide's keepers stand down. Measured beside the same raw round trips
# and kernel mmap; the machine's own setting comes back right after.
part_halt() {
	[ -w "$hp_file" ] && [ "$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null)" = haltpoll ] \
		|| return 0
	hp_saved=$(cat "$hp_file")
	echo 200000 >"$hp_file"
	"$raw" --secs "$secs" --file "$data" --budget "$budget" uffd mmap |
		sed 's/"name":"\([^"]*\)"/"name":"\1.haltpoll"/' | tag "$1" >>"$jsonl"
	"$fault" --secs "$secs" --file "$data" --budget "$budget" --tag haltpoll \
		permread:cache:4k randread:cache:4k randread:cache:4k:fixed:2 randread:disk:4k | tag "$1" >>"$jsonl" || true
	"$fault" --secs "$secs" --file "$data" --budget "$budget" --app-cpu 0 --tag haltpoll \
		permread:cache:4k:fixed:2 | tag "$1" >>"$jsonl" || true
	hp_restore
}

start=$(date +%s)
r=1
while [ "$r" -le "$reps" ]; do
	echo "repetition $r of $reps" >&2
	# Alternate the order so no part always runs first or last.
	if [ $((r % 2)) -eq 1 ]; then
		part_raw $r; part_tide $r; part_halt $r; part_mmap $r
	else
		part_mmap $r; part_halt $r; part_tide $r; part_raw $r
	fi
	r=$((r + 1))
done
elapsed=$(($(date +%s) - start))

# "median,min,max,n" of vals[k, 1..c], for both summaries below.
awk_stats='
function stats(k, c,   a, b, x) {
	for (a = 1; a <= c; a++) s[a] = vals[k, a]
	for (a = 2; a <= c; a++) { x = s[a]; for (b = a - 1; b >= 1 && s[b] > x; b--) s[b + 1] = s[b]; s[b + 1] = x }
	return sprintf("%.6g,%.6g,%.6g,%d", c % 2 ? s[(c + 1) / 2] : (s[c / 2] + s[c / 2 + 1]) / 2,
		       s[1], s[c], c)
}'

# Medians of every numeric field of every result, over the repetitions.
awk "$awk_stats"'
/"skip"/ { next }
{
	line = $0; gsub(/^\{|\}$/, "", line); n = split(line, kv, ",")
	name = ""
	for (i = 1; i <= n; i++) {
		split(kv[i], p, ":"); k = p[1]; v = substr(kv[i], length(k) + 2)
		gsub(/"/, "", k)
		if (k == "name") { gsub(/"/, "", v); name = v }
	}
	for (i = 1; i <= n; i++) {
		split(kv[i], p, ":"); k = p[1]; v = substr(kv[i], length(k) + 2)
		gsub(/"/, "", k)
		if (k == "name" || k == "rep" || v ~ /"/) continue
		key = name "," k
		if (!(key in cnt)) order[++nk] = key
		vals[key, ++cnt[key]] = v + 0
	}
}
END {
	print "name,field,median,min,max,n"
	for (j = 1; j <= nk; j++)
		printf "%s,%s\n", order[j], stats(order[j], cnt[order[j]])
}' "$jsonl" >"$out.csv"

# The eviction figures against the raw write just before and just after
# each of them (the same repetition): the disk's write speed drifts within
# a run, so the medians above can set a figure from a slow spell against
# raw writes from a fast one. Per repetition: tide / the mean of the two
# raw writes into a new file that bracket it; then the median over the
# repetitions, as field "paired_ratio" of the tide figure.
awk "$awk_stats"'
function field(k,   r) {
	if (!match($0, "\"" k "\":[^,}]*")) return ""
	r = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3)
	gsub(/"/, "", r); return r
}
/"skip"/ { next }
{
	name = field("name"); rep = field("rep")
	if (name == "uring.seqwrite.64k.qd32.fresh.beside") {
		v = field("mbps") + 0
		for (i = 1; i <= npend; i++) {   # the bracket after
			if (pend_rep[i] == rep) {
				r = pend_val[i] / ((pend_before[i] + v) / 2)
				k = pend_name[i]
				if (!(k in cnt)) order[++nk] = k
				vals[k, ++cnt[k]] = r
			}
		}
		npend = 0; before = v; before_rep = rep
	} else if (name ~ /^tide\.seqwrite\.fresh\./ && before_rep == rep) {
		npend++; pend_name[npend] = name; pend_rep[npend] = rep
		pend_val[npend] = field("wb_mbps") + 0; pend_before[npend] = before
	}
}
END {
	for (j = 1; j <= nk; j++)
		printf "%s,paired_ratio,%s\n", order[j], stats(order[j], cnt[order[j]])
}' "$jsonl" >>"$out.csv"

machine() {
	src=$(findmnt -no SOURCE --target "$dir" 2>/dev/null || echo "?")
	dev=$(basename "$src")
	echo "- kernel: $(uname -r), $(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
	echo "- memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "- disk: $dir on $src ($(findmnt -no FSTYPE --target "$dir" 2>/dev/null)), scheduler $(cat /sys/block/"$dev"/queue/scheduler 2>/dev/null | sed 's/.*\[\(.*\)\].*/\1/' || echo ?)"
	echo "- guest halt polling: $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?') cpuidle driver, guest_halt_poll_ns $(cat "$hp_file" 2>/dev/null || echo n/a) (the .haltpoll figures: 200000)"
	echo "- wake polling of the default runs: $(awk -F'"wake_poll":' '/"name":"tide.permread.cache.4k"/ && NF > 1 { split($2, v, ","); n = v[1]; exit }
		END { split("off kernel qos threads", w, " "); print (n == "" ? "?" : w[n + 1]) }' "$jsonl") (doctor: tide doctor)"
	echo "- tide: $built"
	echo "- run: $reps repetitions, ${secs}s per figure, budget $budget, file $((bytes * 4 / 1048576)) MiB, $elapsed s in all; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
	env | grep '^TIDE_' | sed 's/^/- env: /' || true
}

# The report: each tide figure beside its raw limit, as a ratio.
report() {
	echo "# Fault-path benchmark, $stamp"
	echo
	machine
	echo
	awk -F, '
NR > 1 { m[$1 "," $2] = $3 }
function get(k) { return (k in m) ? m[k] : "" }
function row(what, tn, tf, rn, rf, target, unit,   t, r, ratio, ok) {
	t = get(tn "," tf); r = get(rn "," rf)
	ratio = (t != "" && r != "" && r > 0) ? sprintf("%.2f", t / r) : "n/a"
	ok = (ratio == "n/a" || target == "") ? "" : (ratio + 0 >= target ? "yes" : "**no**")
	printf "| %s | %s | %s | %s | %s | %s |\n", what, fmt(t, unit), fmt(r, unit), ratio, target == "" ? "" : ">= " target, ok
}
# A ratio computed per repetition (field paired_ratio), its median.
function paired(what, tn, target,   ratio, ok) {
	ratio = get(tn ",paired_ratio"); ratio = ratio == "" ? "n/a" : sprintf("%.2f", ratio)
	ok = (ratio == "n/a" || target == "") ? "" : (ratio + 0 >= target ? "yes" : "**no**")
	printf "| %s | | | %s | %s | %s |\n", what, ratio, target == "" ? "" : ">= " target, ok
}
function fmt(v, unit) {
	if (v == "") return "n/a"
	if (unit == "MB/s") return sprintf("%.0f MB/s", v)
	if (unit == "ms/GB") return sprintf("%.0f ms/GB", v)
	if (unit == "share") return sprintf("%.2f", v)
	if (v >= 10000) return sprintf("%.1fk/s", v / 1000)
	return sprintf("%.0f/s", v)
}
END {
	print "## Tide against its raw limit (medians; ratio = tide / limit)"
	print ""
	print "| figure | tide | limit | ratio | target | met |"
	print "|---|---|---|---|---|---|"
	row("fill per fault, 1 thread, 4 KiB, page cache, room in the pool (vs uffd same-vCPU round trip)", "tide.permread.cache.4k", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, keeper threads instead of the CPU latency request (TIDE_WAKE_QOS=0: the default before 2026-11-23-10, and where the request cannot be made)", "tide.permread.cache.4k.threads", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, the service thread sleeps after each pass (TIDE_SPIN_US=0)", "tide.permread.cache.4k.nospin", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, no polling (TIDE_SPIN_US=0 TIDE_WAKE_POLL_US=0)", "tide.permread.cache.4k.nopoll", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, one compute-bound thread beside the app (--busy 1)", "tide.permread.cache.4k.busy1", "faults_per_s", "uffd.same.4k", "per_s", "")
	row("same, one compute-bound thread, keeper threads (TIDE_WAKE_QOS=0)", "tide.permread.cache.4k.busy1.threads", "faults_per_s", "uffd.same.4k", "per_s", "")
	row("same, one compute-bound thread, the service thread not polling (TIDE_SPIN_US=0)", "tide.permread.cache.4k.busy1.nospin", "faults_per_s", "uffd.same.4k", "per_s", "")
	row("work of the compute-bound thread beside tide by default (vs with keeper threads; each as a share of its work alone)", "tide.permread.cache.4k.busy1", "busy_share", "tide.permread.cache.4k.busy1.threads", "busy_share", "", "share")
	row("same, vs the service thread not polling", "tide.permread.cache.4k.busy1", "busy_share", "tide.permread.cache.4k.busy1.nospin", "busy_share", "", "share")
	row("same, tide and app pinned to one vCPU, wake polling off (vs the same-vCPU round trip over the same walk, just before and after)", "tide.permread.cache.4k.pin0", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("same, data in memory: a custom store that copies and completes at once, no system call (pinned, polling off)", "tide.permread.mem.4k.pin0", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("same, default placement, both with a CPU latency request of 0 (vs the minimal handler with it)", "tide.permread.cache.4k", "faults_per_s", "uffd.unpinned_qos.4k", "per_s", "")
	row("same, default placement, vs the minimal handler busy-polling the uffd with the request (what a polling service thread can do there at best; copies a static page, no data)", "tide.permread.cache.4k", "faults_per_s", "uffd.unpinned_poll_qos.4k", "per_s", "")
	row("same, vs the minimal pager (pread + COPY + DONTNEED) busy-polling at default placement with the request", "tide.permread.cache.4k", "faults_per_s", "pager.unpinned_poll_qos.4k", "per_s", "")
	row("same, full pool (every fill evicts), vs that pager", "tide.randread.cache.4k", "faults_per_s", "pager.unpinned_poll_qos.4k", "per_s", "")
	row("raw: the minimal handler busy-polling at default placement with the request (vs the same-vCPU round trip)", "uffd.unpinned_poll_qos.4k", "per_s", "uffd.same.4k", "per_s", "")
	row("raw: the minimal pager busy-polling at default placement with the request (vs the same-vCPU round trip): the most a pager reading the page cache on a second thread got at default placement", "pager.unpinned_poll_qos.4k", "per_s", "uffd.same.4k", "per_s", "")
	row("same, both with keeper threads (vs the minimal handler with them)", "tide.permread.cache.4k.threads", "faults_per_s", "uffd.unpinned_wakepoll.4k", "per_s", "")
	row("same, both without polling (vs the minimal handler at default placement)", "tide.permread.cache.4k.nopoll", "faults_per_s", "uffd.unpinned.4k", "per_s", "")
	row("fill per fault with a full pool (every fill evicts), 4 KiB (vs uffd same-vCPU)", "tide.randread.cache.4k", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, keeper threads (TIDE_WAKE_QOS=0)", "tide.randread.cache.4k.threads", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, the service thread not polling (TIDE_SPIN_US=0)", "tide.randread.cache.4k.nospin", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, no polling", "tide.randread.cache.4k.nopoll", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, tide and app pinned to one vCPU, wake polling off (vs the round trip beside it, as above)", "tide.randread.cache.4k.pin0", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("sequential 4 KiB reads, page cache, pages/s (read-ahead: few faults)", "tide.seqread.cache.4k", "per_s", "uffd.same.4k", "per_s", "")
	row("fill per fault vs a minimal pager (pread + COPY + DONTNEED, same vCPU)", "tide.randread.cache.4k", "faults_per_s", "pager.same.4k", "per_s", "")
	row("same, pinned to one vCPU, vs the minimal pager", "tide.randread.cache.4k.pin0", "faults_per_s", "pager.same.4k", "per_s", "")
	row("fill per fault, 64 KiB, page cache (vs uffd same-vCPU 64 KiB)", "tide.randread.cache.64k", "faults_per_s", "uffd.same.64k", "per_s", "")
	row("two app threads, one vCPU each, own regions, TIDE_SERVICE_THREADS=2, wake polling off (vs one uffd + handler per vCPU)", "tide.permread.cache.4k.t2.pin0.shards", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, one service thread", "tide.permread.cache.4k.t2.pin0", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, one service thread, vs what one server can do: one shared uffd and one handler thread for both", "tide.permread.cache.4k.t2.pin0", "faults_per_s", "uffd2.shared.4k", "per_s", "")
	row("one app thread on two shards (pinned, polling off): its walk fits once its shard borrows the budget of the idle shard; evictions and peak in the last table (vs one service thread)", "tide.permread.cache.4k.pin0.shards", "faults_per_s", "tide.permread.cache.4k.pin0", "faults_per_s", "")
	row("two app threads sharing a region, default placement, full pool", "tide.randread.cache.4k.t2", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, vs two minimal pagers in SIGBUS handlers sharing one region (raw_share.c; no second thread at all)", "tide.randread.cache.4k.t2", "faults_per_s", "pager.rand.sigbus.4k.t2", "per_s", "")
	row("same, keeper threads (TIDE_WAKE_QOS=0)", "tide.randread.cache.4k.t2.threads", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, the service thread not polling (TIDE_SPIN_US=0)", "tide.randread.cache.4k.t2.nospin", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, no polling", "tide.randread.cache.4k.t2.nopoll", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("halt polling by the guest kernel on (guest_halt_poll_ns=200000, set by the bench for these runs; the keepers of tide stand down): fill per fault, 1 thread, 4 KiB, page cache, room in the pool, default placement (vs uffd same-vCPU round trip)", "tide.permread.cache.4k.haltpoll", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, vs the minimal handler at default placement, halt polling on", "tide.permread.cache.4k.haltpoll", "faults_per_s", "uffd.unpinned.4k.haltpoll", "per_s", "")
	row("same, full pool (every fill evicts)", "tide.randread.cache.4k.haltpoll", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, two app threads, one vCPU each, own regions, one service thread (vs one uffd + handler per vCPU)", "tide.permread.cache.4k.t2.pin0.haltpoll", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, two app threads sharing a region, full pool, default placement", "tide.randread.cache.4k.t2.haltpoll", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("raw: the minimal handler at default placement with halt polling on (vs the same-vCPU round trip)", "uffd.unpinned.4k.haltpoll", "per_s", "uffd.same.4k", "per_s", "")
	row("faults on the faulting thread (TIDE_SIGNAL_FAULTS): fill per fault, 1 thread, 4 KiB, page cache, room in the pool, default placement (vs uffd same-vCPU round trip)", "tide.permread.cache.4k.sig", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, pinned to one vCPU (vs the round trip beside it, as above)", "tide.permread.cache.4k.pin0.sig", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("same, data in memory (pinned)", "tide.permread.mem.4k.pin0.sig", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("same, full pool (every fill evicts), default placement", "tide.randread.cache.4k.sig", "faults_per_s", "uffd.same.4k", "per_s", 0.7)
	row("same, full pool, pinned", "tide.randread.cache.4k.pin0.sig", "faults_per_s", "uffd.same.4k.beside", "per_s", 0.7)
	row("same, full pool, vs the minimal pager in a SIGBUS handler", "tide.randread.cache.4k.sig", "faults_per_s", "pager.sigbus.4k", "per_s", "")
	row("same, two app threads, one vCPU each, own regions, TIDE_SERVICE_THREADS=2 (vs one uffd + handler per vCPU)", "tide.permread.cache.4k.t2.pin0.shards.sig", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, two app threads sharing a region, full pool, default placement", "tide.randread.cache.4k.t2.sig", "faults_per_s", "uffd2.percpu.4k", "per_s", 0.7)
	row("same, sharing a region, vs two minimal pagers in SIGBUS handlers sharing one region (random faults, drops batched, no lock between them)", "tide.randread.cache.4k.t2.sig", "faults_per_s", "pager.rand.sigbus.4k.t2", "per_s", "")
	row("same, one app thread, full pool, vs that pager alone", "tide.randread.cache.4k.sig", "faults_per_s", "pager.rand.sigbus.4k", "per_s", "")
	row("raw: two minimal SIGBUS pagers sharing one region, full pool (vs one uffd + handler per vCPU, own regions, no eviction)", "pager.rand.sigbus.4k.t2", "per_s", "uffd2.percpu.4k", "per_s", "")
	row("raw: the same, two pagers sharing a region vs one alone (what the kernel leaves of twice one)", "pager.rand.sigbus.4k.t2", "per_s", "pager.rand.sigbus.4k", "per_s", "")
	row("same, sequential fill from disk, 64 KiB pages (vs io_uring seq read QD32)", "tide.seqread.disk.64k.sig", "fill_mbps", "uring.seqread.64k.qd32", "mbps", 0.9, "MB/s")
	row("same, random 4 KiB fill, 8 app threads (vs io_uring rand read QD8)", "tide.randread.disk.4k.t8.sig", "fills_per_s", "uring.randread.4k.qd8", "per_s", 0.7)
	row("raw: the same-vCPU round trip walking as permread does (80% of the budget, far-apart stride), just before and after the pinned figures (vs the raw part: 16 MiB in order)", "uffd.same.4k.beside", "per_s", "uffd.same.4k", "per_s", "")
	row("raw: the fault served on the faulting thread by its SIGBUS handler (UFFD_FEATURE_SIGBUS: no message, no second thread), 4 KiB (vs the same-vCPU round trip)", "uffd.sigbus.4k", "per_s", "uffd.same.4k", "per_s", "")
	row("same, the minimal pager in the SIGBUS handler (vs the minimal pager thread, same vCPU)", "pager.sigbus.4k", "per_s", "pager.same.4k", "per_s", "")
	row("raw pager filling by UFFDIO_MOVE of a staging page (vs by UFFDIO_COPY), 4 KiB", "pager.move_same.4k", "per_s", "pager.same.4k", "per_s", "")
	row("same, 64 KiB", "pager.move_same.64k", "per_s", "pager.same.64k", "per_s", "")
	row("raw dirty tracking by WP_ASYNC + PAGEMAP_SCAN (vs sync WP fault + UFFDIO_WRITEPROTECT), written pages/s, 4 KiB", "wpasync.async.4k", "pages_per_s", "wpasync.sync.4k", "pages_per_s", "")
	row("same, one page in 16 written", "wpasync.async.sparse16.4k", "pages_per_s", "wpasync.sync.sparse16.4k", "pages_per_s", "")
	row("sequential fill from disk, 64 KiB pages (vs io_uring seq read QD32)", "tide.seqread.disk.64k", "fill_mbps", "uring.seqread.64k.qd32", "mbps", 0.9, "MB/s")
	row("same, vs what one thread can put in place: UFFDIO_COPY of 64 KiB and MADV_DONTNEED, in order, no fault, no I/O", "tide.seqread.disk.64k", "fill_mbps", "copy.seq.64k", "mbps", "", "MB/s")
	row("same, read-ahead installed by the service thread (TIDE_INSTALL_THREAD=0)", "tide.seqread.disk.64k.noinstall", "fill_mbps", "uring.seqread.64k.qd32", "mbps", "", "MB/s")
	row("sequential fill from disk, 64 KiB, install thread (default) vs TIDE_INSTALL_THREAD=0", "tide.seqread.disk.64k", "fill_mbps", "tide.seqread.disk.64k.noinstall", "fill_mbps", "", "MB/s")
	row("same, from the page cache", "tide.seqread.cache.64k", "fill_mbps", "tide.seqread.cache.64k.noinstall", "fill_mbps", "", "MB/s")
	row("same, page cache, 4 KiB pages", "tide.seqread.cache.4k", "fill_mbps", "tide.seqread.cache.4k.noinstall", "fill_mbps", "", "MB/s")
	row("raw: UFFDIO_COPY + MADV_DONTNEED of 64 KiB pages by one thread, in order, no fault, no I/O (vs io_uring seq read QD32)", "copy.seq.64k", "mbps", "uring.seqread.64k.qd32", "mbps", "", "MB/s")
	row("same, 512 KiB per UFFDIO_COPY (the size of one tide read)", "copy.seq.512k", "mbps", "uring.seqread.64k.qd32", "mbps", "", "MB/s")
	row("random 4 KiB fill, 8 app threads (vs io_uring rand read QD8)", "tide.randread.disk.4k.t8", "fills_per_s", "uring.randread.4k.qd8", "per_s", 0.7)
	row("same, keeper threads (TIDE_WAKE_QOS=0)", "tide.randread.disk.4k.t8.threads", "fills_per_s", "uring.randread.4k.qd8", "per_s", 0.7)
	row("eviction of contiguous dirty pages into a new file, fixed, 64 KiB, fills free (vs io_uring seq write QD32 into a new file, just before and after)", "tide.seqwrite.fresh.64k.fixed", "wb_mbps", "uring.seqwrite.64k.qd32.fresh.beside", "mbps", 0.8, "MB/s")
	row("same, direct", "tide.seqwrite.fresh.64k.direct", "wb_mbps", "uring.seqwrite.64k.qd32.fresh.beside", "mbps", 0.8, "MB/s")
	paired("same, fixed, paired: each repetition against the mean of the raw writes just before and just after it, median of those ratios", "tide.seqwrite.fresh.64k.fixed", 0.8)
	paired("same, direct, paired", "tide.seqwrite.fresh.64k.direct", 0.8)
	row("same, fixed, TIDE_RECYCLE=0: protect, write, drop (vs io_uring seq write QD32 into a new file)", "tide.seqwrite.fresh.64k.fixed.norecycle", "wb_mbps", "uring.seqwrite.64k.qd32.fresh.beside", "mbps", "", "MB/s")
	row("same, direct, TIDE_RECYCLE=0", "tide.seqwrite.fresh.64k.direct.norecycle", "wb_mbps", "uring.seqwrite.64k.qd32.fresh.beside", "mbps", "", "MB/s")
	paired("same, fixed, TIDE_RECYCLE=0, paired", "tide.seqwrite.fresh.64k.fixed.norecycle", "")
	paired("same, direct, TIDE_RECYCLE=0, paired", "tide.seqwrite.fresh.64k.direct.norecycle", "")
	row("eviction, fixed, recycling (default) vs TIDE_RECYCLE=0", "tide.seqwrite.fresh.64k.fixed", "wb_mbps", "tide.seqwrite.fresh.64k.fixed.norecycle", "wb_mbps", "", "MB/s")
	row("eviction, direct, recycling (default) vs TIDE_RECYCLE=0", "tide.seqwrite.fresh.64k.direct", "wb_mbps", "tide.seqwrite.fresh.64k.direct.norecycle", "wb_mbps", "", "MB/s")
	row("service thread CPU per GB evicted, fixed, recycling vs TIDE_RECYCLE=0 (below 1: recycling costs less; the disk hides it in MB/s)", "tide.seqwrite.fresh.64k.fixed", "service_ms_per_gb", "tide.seqwrite.fresh.64k.fixed.norecycle", "service_ms_per_gb", "", "ms/GB")
	row("same, direct", "tide.seqwrite.fresh.64k.direct", "service_ms_per_gb", "tide.seqwrite.fresh.64k.direct.norecycle", "service_ms_per_gb", "", "ms/GB")
	row("same, fixed, vs io_uring rewriting the old file just before and after", "tide.seqwrite.fresh.64k.fixed", "wb_mbps", "uring.seqwrite.64k.qd32.beside", "mbps", "", "MB/s")
	row("same, direct, vs io_uring rewriting the old file", "tide.seqwrite.fresh.64k.direct", "wb_mbps", "uring.seqwrite.64k.qd32.beside", "mbps", "", "MB/s")
	row("io_uring seq write QD32 into a new file (vs rewriting the old file, beside each other)", "uring.seqwrite.64k.qd32.fresh.beside", "mbps", "uring.seqwrite.64k.qd32.beside", "mbps", "", "MB/s")
	row("io_uring seq write QD32 beside the eviction figures (vs the same in the raw part)", "uring.seqwrite.64k.qd32.beside", "mbps", "uring.seqwrite.64k.qd32", "mbps", "", "MB/s")
	row("sequential write, fills from disk, fixed, 64 KiB (write-back MB/s)", "tide.seqwrite.disk.64k.fixed", "wb_mbps", "uring.seqwrite.64k.qd32", "mbps", "", "MB/s")
	row("same, direct", "tide.seqwrite.disk.64k.direct", "wb_mbps", "uring.seqwrite.64k.qd32", "mbps", "", "MB/s")
	print ""
	print "## Tide against kernel mmap under the same memory budget (cold file, 4 KiB touches)"
	print ""
	print "| pattern | tide | mmap | ratio |"
	print "|---|---|---|---|"
	split("seqread.disk.4k:seqread:mbps seqread.disk.64k:seqread:mbps randread.disk.4k:randread:per_s randread.disk.64k:randread:per_s randwrite.disk.4k.fixed:randwrite:per_s randwrite.disk.4k.direct:randwrite:per_s randwrite.disk.64k.fixed:randwrite:per_s randwrite.disk.64k.direct:randwrite:per_s", L, " ")
	for (i = 1; i in L; i++) {
		split(L[i], q, ":")
		t = get("tide." q[1] "," q[3]); k = get("mmap." q[2] ".4k," q[3])
		u = q[3] == "mbps" ? "MB/s" : ""
		printf "| %s (%s) | %s | %s | %s |\n", q[1], q[3] == "mbps" ? "MB/s" : "touches/s", fmt(t, u), fmt(k, u), (t != "" && k > 0) ? sprintf("%.2f", t / k) : "n/a"
	}
	split("threads:keeper threads (TIDE_WAKE_QOS=0)|nospin:the service thread not polling (TIDE_SPIN_US=0)", V, "|")
	for (i = 1; i in V; i++) {
		split(V[i], q, ":")
		t = get("tide.randread.disk.4k." q[1] ",per_s"); k = get("mmap.randread.4k,per_s")
		if (t != "")
			printf "| randread.disk.4k, %s (touches/s) | %s | %s | %s |\n", q[2], fmt(t, ""), fmt(k, ""), (t != "" && k > 0) ? sprintf("%.2f", t / k) : "n/a"
	}
	t = get("tide.randread.disk.4k.haltpoll,per_s"); k = get("mmap.randread.4k.haltpoll,per_s")
	if (t != "" || k != "")
		printf "| randread.disk.4k, guest halt polling on, both (touches/s) | %s | %s | %s |\n", fmt(t, ""), fmt(k, ""), (t != "" && k > 0) ? sprintf("%.2f", t / k) : "n/a"
	print ""
	print "## Every figure (medians)"
	print ""
	print "| name | per s | MB/s | faults/s | mean µs | p50 µs | p99 µs | fills | evictions (dirty) |"
	print "|---|---|---|---|---|---|---|---|---|"
	for (k in m) { split(k, q, ","); if (!(q[1] in seen)) { seen[q[1]] = 1; names[++nn] = q[1] } }
	for (a = 2; a <= nn; a++) { x = names[a]; for (b = a - 1; b >= 1 && names[b] > x; b--) names[b + 1] = names[b]; names[b + 1] = x }
	for (a = 1; a <= nn; a++) {
		n = names[a]
		printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, num(get(n ",per_s")), num(get(n ",mbps")),
			num(get(n ",faults_per_s")), num(get(n ",mean_us")), num(get(n ",p50_us")), num(get(n ",p99_us")),
			num(get(n ",fills")), get(n ",evictions") == "" ? "" : num(get(n ",evictions")) " (" num(get(n ",evictions_dirty")) ")"
	}
}
function num(v) { if (v == "") return ""; return v >= 100 ? sprintf("%.0f", v) : sprintf("%.3g", v) }
' "$out.csv"
	echo
	skips=$(grep '"skip"' "$jsonl" | sort -u || true)
	if [ -n "$skips" ]; then
		echo "## Skipped"
		echo
		echo "$skips" | sed 's/^/    /'
		echo
	fi
	echo "Raw results: \`$(basename "$jsonl")\` (one JSON object per run and repetition), medians: \`$(basename "$out.csv")\`. See bench/README.md for what each figure means."
}

report >"$out.md"
cp "$out.md" "$results/latest.md"
cat "$out.md"
