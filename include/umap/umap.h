/*
 * umap/umap.h: the LLNL umap C API, served by tide.
 *
 * A program written for umap builds against this header and libumap-tide
 * unchanged: `cc prog.c $(pkg-config --cflags --libs umap-tide)`. The
 * signatures and constants are umap's; where tide behaves differently (offset
 * honoured, uunmap really releases the range, UMAP_FIXED refused, errors
 * reported through errno instead of aborting) docs/umap.md says so.
 *
 * Error contract, as umap and mmap(2) have it: umap() returns UMAP_FAILED and
 * sets errno; uunmap() and umap_flush() return 0, or -1 and set errno.
 * Nothing here calls abort() or exit().
 *
 * The header is C and C++ clean and needs nothing from tide.h.
 */
#ifndef UMAP_TIDE_UMAP_H
#define UMAP_TIDE_UMAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Map `length` bytes of the file `fd` from `offset`. `prot` is PROT_READ,
 * optionally | PROT_WRITE. `flags` must hold UMAP_PRIVATE (MAP_SHARED is
 * accepted as a synonym: in umap and here, written pages reach the file
 * either way). `addr` is a hint and is ignored; UMAP_FIXED fails with
 * ENOTSUP. `length` is rounded up to the region's page size. Returns the
 * region's address or UMAP_FAILED with errno set.
 */
void *umap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);

/* Write back and release the region that starts at `addr`. `length` is 0 or
 * the region's length (as given to umap). Returns 0, or -1 with errno. */
int uunmap(void *addr, size_t length);

/* Write every dirty page of every region to its file and wait until it is
 * on stable storage. Returns 0, or -1 with errno. */
int umap_flush(void);

/* 1: regions may be mapped PROT_WRITE. */
int umap_has_write_support(void);

struct umap_prefetch_item {
	void *page_base_addr;
};
/* umap's own C++ examples spell the type without `struct`; C needs this. */
typedef struct umap_prefetch_item umap_prefetch_item;

/* Fill the listed pages ahead of use. Advisory: bad addresses are skipped. */
void umap_prefetch(int npages, struct umap_prefetch_item *page_array);

/* Fill [paddr, paddr+size) ahead of use. tide has no pinning: the pages are
 * resident on return but may be evicted later under buffer pressure. */
void umap_fetch_and_pin(char *paddr, uint64_t size);

/* The configuration in effect, from the UMAP_* environment. */
long     umapcfg_get_system_page_size(void);
uint64_t umapcfg_get_umap_page_size(void);              /* UMAP_PAGESIZE, bytes */
uint64_t umapcfg_get_max_fault_events(void);            /* UMAP_MAX_FAULT_EVENTS */
uint64_t umapcfg_get_num_fillers(void);                 /* UMAP_PAGE_FILLERS */
uint64_t umapcfg_get_num_evictors(void);                /* UMAP_PAGE_EVICTORS */
uint64_t umapcfg_get_max_pages_in_buffer(void);         /* UMAP_BUFSIZE, pages */
uint64_t umapcfg_get_read_ahead(void);                  /* UMAP_READ_AHEAD, pages */
int      umapcfg_get_evict_low_water_threshold(void);   /* percent */
int      umapcfg_get_evict_high_water_threshold(void);  /* percent */

#ifdef __cplusplus
}
#endif

/* flags */
#define UMAP_PRIVATE MAP_PRIVATE
#define UMAP_FIXED   MAP_FIXED   /* refused with ENOTSUP: tide places regions itself */

/* umap()'s failure value, like MAP_FAILED. */
#define UMAP_FAILED ((void *)-1)

#endif /* UMAP_TIDE_UMAP_H */
