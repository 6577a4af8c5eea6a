#!/bin/sh
# umap install check: an OpenMP umap program builds against an installed tree
# with `cc prog.c $(pkg-config --cflags --libs umap-tide) -fopenmp` and runs.
#
#   tests/umap_install_check.sh BUILD_DIR
#
# Installs BUILD_DIR into a scratch --destdir, points pkg-config there, builds
# and runs the program below. Exit 0 pass, 1 fail, 77 skip (no userfaultfd).
set -eu

build=${1:?usage: $0 BUILD_DIR}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

meson install -C "$build" --destdir "$scratch/root" >"$scratch/install.log" 2>&1 ||
	{ cat "$scratch/install.log"; exit 1; }
pcdir=$(dirname "$(find "$scratch/root" -name umap-tide.pc | head -n 1)")
[ -f "$pcdir/umap-tide.pc" ] || { echo "umap-tide.pc was not installed"; exit 1; }
# The .pc names the final prefix; the sysroot maps it into the scratch tree.
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$scratch/root"

cat >"$scratch/omp.c" <<'EOF'
/* A umap program as umap's own examples write them: map, parallel update, flush, unmap. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <umap/umap.h>

int main(void)
{
	char path[] = "/var/tmp/umap-omp-XXXXXX";
	size_t n = (8u << 20) / sizeof(double);
	int fd = mkstemp(path);
	double *a, v;

	if (fd < 0 || unlink(path) || ftruncate(fd, (off_t)(n * sizeof(double))))
		return perror("scratch file"), 1;
	a = umap(NULL, n * sizeof(double), PROT_READ | PROT_WRITE, UMAP_PRIVATE, fd, 0);
	if (a == UMAP_FAILED) {
		if (errno == EPERM || errno == ENOSYS)
			return 77;
		return perror("umap"), 1;
	}
#pragma omp parallel for
	for (size_t i = 0; i < n; i++)
		a[i] = (double)i * 3.0;
	if (umap_flush() || uunmap(a, n * sizeof(double)))
		return perror("umap_flush/uunmap"), 1;
	for (size_t i = 0; i < n; i += 4099)
		if (pread(fd, &v, sizeof(v), (off_t)(i * sizeof(v))) != sizeof(v) || v != (double)i * 3.0)
			return fprintf(stderr, "element %zu is wrong in the file\n", i), 1;
	return 0;
}
EOF

cc=${CC:-cc}
# shellcheck disable=SC2046 # pkg-config output is a list of words by design
$cc "$scratch/omp.c" -o "$scratch/omp" $(pkg-config --cflags --libs umap-tide) -fopenmp
# The C++ test program, built the same way from the installed header.
${CXX:-c++} "$(dirname "$0")/umap_cxx.cc" -o "$scratch/cxx" $(pkg-config --cflags --libs umap-tide)
libdir=$(pkg-config --variable=libdir umap-tide) # sysroot-prefixed by pkgconf
status=0
LD_LIBRARY_PATH="$libdir" "$scratch/omp" || status=$?
[ $status -ne 0 ] || LD_LIBRARY_PATH="$libdir" "$scratch/cxx" || status=$?
case $status in
0) echo "umap install check: OpenMP C and C++ programs built with pkg-config umap-tide and ran" ;;
77) echo "umap install check: built; not run, userfaultfd unavailable" ;;
*) echo "umap install check: the program failed (status $status)" ;;
esac
exit $status
