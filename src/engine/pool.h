/* A persistent worker pool for data-parallel loops.
 *
 * ds4_pool_run(p, n, fn, ctx) calls fn(ctx, i) for every i in [0, n) across
 * the pool's threads (the caller's thread works too) and returns when all
 * calls are done.  Tasks are handed out by an atomic counter, so uneven task
 * costs balance themselves.  A pool of 1 thread runs everything inline.
 * Not reentrant: fn must not call ds4_pool_run on the same pool. */
#ifndef DS4_ENGINE_POOL_H
#define DS4_ENGINE_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds4_pool ds4_pool;
typedef void (*ds4_task_fn)(void *ctx, int64_t i);

ds4_pool *ds4_pool_new(int n_threads); /* n_threads <= 0: number of online CPUs */
void ds4_pool_free(ds4_pool *p);
int ds4_pool_size(const ds4_pool *p);
void ds4_pool_run(ds4_pool *p, int64_t n, ds4_task_fn fn, void *ctx);
/* Which of p's threads is calling: 1..size-1 for its workers, 0 for any
 * other thread (the one that runs ds4_pool_run takes part as 0).  Tasks
 * running at the same time see different indices, so per-thread scratch
 * indexed by it stays in that core's cache from one task to the next. */
int ds4_pool_thread(const ds4_pool *p);
/* A hint, returning at once: workers waiting for a job prefetch [ptr, ptr +
 * len) into their caches, each a share (at most DS4_POOL_PREFETCH_MAX
 * bytes), until a job arrives.  For the caller's serial stretches before a
 * product whose weights are cold: the workers would otherwise spin.  A
 * later hint replaces an earlier one; the range is only read by prefetch
 * instructions, so it may be any address (they never fault). */
#define DS4_POOL_PREFETCH_MAX (256u << 10)
void ds4_pool_prefetch(ds4_pool *p, const void *ptr, size_t len);
/* A 64-byte-aligned buffer of at least `bytes`, owned by the pool and kept
 * between calls (it only grows), for the thread that runs ds4_pool_run:
 * like ds4_pool_run, one user at a time.  Valid until the next call or
 * ds4_pool_free; NULL if p is NULL or memory is short.  Why: prefill's
 * per-matmul buffers of a few MB, malloc'ed and freed each time, went back
 * to the OS and were faulted in and zeroed again (clear_page ~7% of a q2
 * prefill). */
void *ds4_pool_scratch(ds4_pool *p, size_t bytes);

#endif
