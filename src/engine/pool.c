/* Persistent thread pool; see pool.h.  A job is (fn, ctx, n) plus an atomic
 * next-index counter, published by bumping `generation`.
 *
 * Spin, then sleep: a decode step issues hundreds of small jobs (one per
 * matmul), each a few microseconds of work, so a futex sleep/wake per job
 * (tens of microseconds on a VM) dominated: on the 2-core machine, `small`
 * q8_0 decoded at 66 tok/s with 2 threads vs 92 with 1.  Workers now poll
 * the generation for up to SPIN pause iterations (~0.3 ms) before sleeping
 * on the condition variable, and the caller polls `active` the same way
 * before waiting on `done` (127 tok/s with 2 threads).  An idle pool goes
 * to sleep after one such spin, so it costs nothing between requests. */
#include "engine/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RELAX() _mm_pause()
#elif defined(__aarch64__)
#define RELAX() __asm__ __volatile__("yield")
#else
#define RELAX() ((void)0)
#endif

#define SPIN 20000

struct ds4_pool {
    int n;                    /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    _Atomic uint64_t generation; /* bumped per job (under mu, so sleepers cannot miss it) */
    atomic_int active;        /* workers still inside the current job */
    atomic_int stop;
    ds4_task_fn fn;           /* written before the generation bump, read after seeing it */
    void *ctx;
    int64_t total;
    atomic_int_fast64_t next;
};

static void drain(ds4_pool *p) {
    for (;;) {
        int64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->total) break;
        p->fn(p->ctx, i);
    }
}

static void *worker(void *arg) {
    ds4_pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load(&p->generation);
        for (int i = 0; i < SPIN && g == seen && !atomic_load(&p->stop); i++) {
            RELAX();
            g = atomic_load(&p->generation);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen) pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load(&p->generation);
        drain(p);
        if (atomic_fetch_sub(&p->active, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

ds4_pool *ds4_pool_new(int n_threads) {
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    ds4_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) { free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++)
            if (pthread_create(&p->threads[i], NULL, worker, p)) { p->n = i + 1; break; }
    }
    return p;
}

void ds4_pool_free(ds4_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int ds4_pool_size(const ds4_pool *p) { return p ? p->n : 1; }

void ds4_pool_run(ds4_pool *p, int64_t n, ds4_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    atomic_store(&p->next, 0);
    atomic_store(&p->active, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p);
    for (int i = 0; i < SPIN && atomic_load(&p->active) > 0; i++) RELAX();
    if (atomic_load(&p->active) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->active) > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
