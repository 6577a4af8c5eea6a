#!/bin/bash
# Side-by-side `tide sort`: tide at three page sizes, the kernel's mmap under a
# cgroup v1 memory limit equal to the pool, and plain memory, for data/pool
# ratios 2, 4 and 8. Runs go in rounds (every configuration once per round,
# backends interleaved) so that drift of the machine affects all alike.
#
#   bench/sort_harness.sh [--size 512M] [--rounds 3] [--tide build/apps/tide]
#                         [--dir DIR] [--out bench/results] [--threads N]
#                         [--ratios "2 4 8"] [--pages "4K 64K 2M"]
#                         [--backends "tide mmap memory"] [--timeout 900]
# A run that takes longer than --timeout seconds is killed (status 124).
# --plot-only redoes the medians and the plot from an existing OUT/sort.csv.
#
# Writes OUT/sort.csv (one row per run), OUT/sort_summary.dat (medians),
# OUT/sort.png (or .svg) and OUT/sort_machine.txt. Needs jq, gnuplot, root for
# the cgroup (without it the mmap runs are marked cgroup=none: no budget).
set -u

size=512M
rounds=3
tide_bin=${TIDE_BIN:-}
dir=.
here=$(cd "$(dirname "$0")" && pwd)
out=$here/results
threads=$(nproc)
ratios="2 4 8"
pages="4K 64K 2M"
backends="tide mmap memory"
limit=900
plot_only=0

while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--tide) tide_bin=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--ratios) ratios=$2; shift 2 ;;
	--pages) pages=$2; shift 2 ;;
	--backends) backends=$2; shift 2 ;;
	--timeout) limit=$2; shift 2 ;;
	--plot-only) plot_only=1; shift ;;
	-h|--help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "sort_harness: unknown argument $1" >&2; exit 2 ;;
	esac
done

die() { echo "sort_harness: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is needed to read tide sort --json (apt-get install jq)"
if [ -z "$tide_bin" ]; then
	for b in "$here"/../build*/apps/tide; do [ -x "$b" ] && tide_bin=$b && break; done
fi
[ -x "$tide_bin" ] || [ "$plot_only" = 1 ] || die "no tide binary; pass --tide PATH or set TIDE_BIN"
mkdir -p "$out" || die "cannot create $out"

to_bytes() {  # 512M -> bytes, with the same suffixes as tide
	local v=${1%[KkMmGgTt]*} u=${1#"${1%[KkMmGgTt]*}"}
	case ${u^^} in
	"") echo "$v" ;; K*) echo $((v << 10)) ;; M*) echo $((v << 20)) ;;
	G*) echo $((v << 30)) ;; T*) echo $((v << 40)) ;;
	esac
}
bytes=$(to_bytes "$size")
[ -n "$bytes" ] || die "--size $size is not a size"

csv=$out/sort.csv
if [ "$plot_only" = 0 ]; then
# ---- cgroup for the mmap runs ----
cg_root=/sys/fs/cgroup/memory
cg=$cg_root/tide-sort-bench-$$
cg_state=none
if mkdir "$cg" 2>/dev/null && [ -w "$cg/memory.limit_in_bytes" ]; then
	cg_state=v1
else
	rmdir "$cg" 2>/dev/null
	echo "sort_harness: WARNING: cannot create a writable cgroup v1 memory group under" \
	     "$cg_root; the mmap runs will have NO memory limit (cgroup=none in the CSV)" >&2
fi
cleanup() {
	[ "$cg_state" = v1 ] || return
	# Page cache charged to the group moves to the parent once it is empty.
	echo 1 > "$cg/memory.force_empty" 2>/dev/null
	rmdir "$cg" 2>/dev/null || echo "sort_harness: could not remove $cg" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the machine ----
{
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "tide: $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null) ($tide_bin)"
	echo "kernel: $(uname -sr)"
	echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "swap: $(awk '/SwapTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "disk: $(df -h --output=source,fstype "$dir" | tail -1) $(lsblk -dno NAME,SIZE,ROTA,MODEL 2>/dev/null | grep -v '^zram' | head -1)"
	echo "data: $size, threads $threads, rounds $rounds, ratios $ratios, tide pages $pages"
	echo "mmap budget: cgroup $cg_state (memory.limit_in_bytes = pool)"
	env | grep '^TIDE_' | sed 's/^/env: /' || true
} > "$out/sort_machine.txt"
cat "$out/sort_machine.txt" >&2

csv=$out/sort.csv
echo "round,backend,ratio,size,pool,page_size,threads,writeback,status,total_s,generate_s,sort_s,verify_s,writeback_s,cleanup_s,faults,major_faults,fills,evictions,bytes_read,bytes_written,peak_rss,peak_resident,cgroup,cgroup_max_usage,oom_kills,signal_faults" > "$csv"

json=$(mktemp) || die "mktemp"
trap 'rm -f "$json"; cleanup' EXIT

# run ROUND BACKEND RATIO PAGE
run() {
	local round=$1 backend=$2 ratio=$3 page=$4 pool status cgcol=- cgmax="" ooms="" oom0
	case " $backends " in *" $backend "*) ;; *) return ;; esac
	pool=$((bytes / ratio))
	local args=(sort --size "$bytes" --pool "$pool" --threads "$threads" --seed "$round"
		    --backend "$backend" --file "$dir/tide-sort-bench-$$.dat" --json)
	[ "$backend" = tide ] && args+=(--page-size "$page")
	sync
	if [ "$backend" = mmap ] && [ "$cg_state" = v1 ]; then
		echo 1 > "$cg/memory.force_empty" 2>/dev/null
		echo "$pool" > "$cg/memory.limit_in_bytes" || die "cannot set the limit of $cg"
		echo 0 > "$cg/memory.max_usage_in_bytes" 2>/dev/null
		oom0=$(awk '/oom_kill / {print $2}' "$cg/memory.oom_control")
		# The child joins the group before it execs tide, so every page it
		# touches is charged there.
		sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
			timeout "$limit" "$tide_bin" "${args[@]}" > "$json"
		status=$?
		cgcol=v1
		cgmax=$(cat "$cg/memory.max_usage_in_bytes")
		# Dirty MAP_SHARED pages cannot be written back from cgroup v1 reclaim,
		# so the kernel may kill the run: count it, it is a result too.
		ooms=$(( $(awk '/oom_kill / {print $2}' "$cg/memory.oom_control") - oom0 ))
	else
		[ "$backend" = mmap ] && cgcol=none
		timeout "$limit" "$tide_bin" "${args[@]}" > "$json"
		status=$?
	fi
	rm -f "$dir/tide-sort-bench-$$.dat"
	if [ -s "$json" ]; then
		jq -r --arg r "$round" --arg st "$status" --arg cg "$cgcol" --arg cgm "$cgmax" --arg oom "$ooms" \
		   '[$r, .backend, (.ratio|tostring), .size, .pool, .page_size, .threads,
		     (.writeback // "-"), $st, .seconds.total, .seconds.generate, .seconds.sort,
		     .seconds.verify, .seconds.writeback, .seconds.cleanup, .faults,
		     .major_faults, (.fills // ""), (.evictions // ""), .bytes_read,
		     .bytes_written, .peak_rss_bytes, (.peak_resident_bytes // ""), $cg, $cgm, $oom,
		     (if .signal_faults == null then "-" else .signal_faults end)]
		    | map(tostring) | join(",")' "$json" >> "$csv"
	else
		echo "$round,$backend,$ratio,$bytes,$pool,$page,$threads,-,$status,,,,,,,,,,,,,,,$cgcol,$cgmax,$ooms,-" >> "$csv"
	fi
	printf 'sort_harness: round %s %-6s ratio %s page %-4s -> status %s, %s s\n' \
		"$round" "$backend" "$ratio" "$page" "$status" \
		"$(jq -r '.seconds.total // "?"' "$json" 2>/dev/null)" >&2
}

start=$(date +%s)
for round in $(seq 1 "$rounds"); do
	for ratio in $ratios; do
		# Interleave: tide page sizes with the two baselines between them.
		set -- $pages
		run "$round" tide "$ratio" "$1"
		run "$round" mmap "$ratio" 4K
		[ $# -ge 2 ] && run "$round" tide "$ratio" "$2"
		run "$round" memory "$ratio" 4K
		[ $# -ge 3 ] && run "$round" tide "$ratio" "$3"
	done
done
echo "sort_harness: $(( $(date +%s) - start )) s for $rounds rounds" >&2

fi

# ---- medians, one block per series, for gnuplot ----
summary=$out/sort_summary.dat
awk -F, 'NR > 1 && $9 == 0 && $10 != "" {
		s = ($2 == "tide") ? "tide-" $6/1024 "K" : $2
		if ($2 == "tide" && $6 >= 1048576) s = "tide-" $6/1048576 "M"
		k = s SUBSEP $3; n[k]++; v[k, n[k]] = $10; series[s] = 1; ratio[$3] = 1
	}
	END {
		for (s in series) {
			print "\"" s "\""
			for (r = 1; r <= 64; r++) {
				k = s SUBSEP r
				if (!(k in n)) continue
				m = n[k]
				for (i = 1; i <= m; i++) a[i] = v[k, i]
				for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
					if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
				med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
				printf "%d %.3f %d\n", r, med, m
			}
			print ""; print ""
		}
	}' "$csv" > "$summary"

if command -v gnuplot >/dev/null; then
	gnuplot -e "summary='$summary'; outdir='$out'; title='tide sort, $size of data, $threads threads'" \
		"$here/sort_plot.gp" && echo "sort_harness: plot in $out" >&2
else
	echo "sort_harness: gnuplot not found, no plot" >&2
fi
echo "sort_harness: results in $csv" >&2
