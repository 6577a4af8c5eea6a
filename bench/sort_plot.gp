# Plot of bench/sort_harness.sh: median sort time against data/pool ratio,
# one line per backend (and tide page size). Called with
#   gnuplot -e "summary='...'; outdir='...'; title='...'" sort_plot.gp
# Uses pngcairo when this gnuplot has it, else png (libgd), else svg.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
	set terminal pngcairo size 900,560 font ",11"
	set output outdir . "/sort.png"
} else {
	if (strstrt(GPVAL_TERMINALS, " png ") > 0) {
		set terminal png size 900,560
		set output outdir . "/sort.png"
	} else {
		set terminal svg size 900,560
		set output outdir . "/sort.svg"
	}
}
set title title
set xlabel "data / pool (memory budget)"
set ylabel "wall time, seconds (median)"
set xtics ("2" 2, "4" 4, "8" 8)
set logscale x 2
set xrange [1.7:9.5]
set yrange [0:*]
set grid
set key outside right top
stats summary using 1 nooutput
plot for [i=0:STATS_blocks-1] summary index i using 1:2 with linespoints lw 2 pt 7 \
	title columnheader(1)
