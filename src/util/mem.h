/* Large working buffers (a prefill batch's activations, the pool's converted
 * inputs, long-context KV rows): 64-byte aligned, and from 2 MiB up on
 * transparent huge pages where the kernel offers them (MADV_HUGEPAGE), so
 * the phases that stream tens of MB of them do not also walk page tables
 * every 4 KiB.  Release with free().  Returns NULL on overflow or when out
 * of memory. */
#ifndef DS4_UTIL_MEM_H
#define DS4_UTIL_MEM_H

#include <stddef.h>

/* At least `bytes` bytes, uninitialised. */
void *ds4_alloc_big(size_t bytes);

/* n * size bytes, zeroed (to the end of the last 64-byte line). */
void *ds4_calloc_big(size_t n, size_t size);

#endif
