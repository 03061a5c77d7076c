/* Persistent thread pool; see pool.h.
 *
 * A job is (fn, ctx, total) in one of two slots, and a 64-bit claim word
 * (job id << 32 | next task index).  Every thread, the caller included,
 * claims task indices with a compare-and-swap that also checks the job id,
 * and the caller returns as soon as `finished` reaches `total`: it never
 * waits for a worker that has not started, so a worker that the OS has
 * descheduled (another process on its core) costs nothing unless it already
 * holds a task.  A worker that wakes late finds the job id changed (or no
 * index left) and goes back to waiting; the id check makes it safe to read
 * the job's slot before claiming (slot parity alternates, and a slot is
 * rewritten only two jobs later, after the claim word has moved on).
 *
 * Spin, then sleep: a decode step issues hundreds of small jobs (one per
 * matmul, a few microseconds each), and a futex sleep/wake per job (tens of
 * microseconds on a VM) dominated: `small` q8_0 decoded at 66 tok/s with 2
 * threads vs 92 with 1 on the 2-core machine.  Workers poll for a new job,
 * and the caller for the last task to finish, up to `spin` pause iterations
 * (~0.5 ms at most) before sleeping on a condition variable (127 tok/s with
 * 2 threads).  The budget adapts: it halves (down to ~15 us) whenever the
 * caller had to sleep (the machine may be oversubscribed: spinning would only
 * steal the CPU the late thread needs) and doubles when a wait ends within
 * the spin.  The floor matters: with a budget near zero every wait fails and
 * the pool would stay in the slow sleep/wake regime after one disturbance.
 * An idle pool sleeps.
 *
 * The mutex and condition variables are touched only when someone sleeps
 * (`sleepers`, `waiting`): a spinning pool hands a job over with two
 * atomics, no lock.  Each side stores its own flag, then reads the other's
 * (all seq_cst), so of a waker and a sleeper at least one sees the other:
 * the sleeper re-checks under the mutex, the waker then locks and signals.
 * An empty 2-task job on 2 threads: ~270-300 -> ~100 ns; small-q2 decode
 * ~1% (6 ABBA pairs).
 *
 * Prefetch hints (ds4_pool_prefetch) ride on the spin: a spinning worker
 * that sees a new hint sequence number prefetches its share, checking for
 * a new job every 256 bytes.  A sleeping worker ignores hints. */
#include "engine/pool.h"
#include "util/mem.h"

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

#define SPIN 20000     /* ~0.5 ms of pause */
#define SPIN_MIN 600   /* ~15 us: the floor keeps a disturbed pool able to recover */

/* Atomic (relaxed) fields: a very late worker may read a slot while the
 * caller rewrites it; it then fails the job-id check and discards what it
 * read, but the read itself must not be a data race. */
typedef struct pool_job {
    _Atomic(ds4_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t total;
} pool_job;

struct ds4_pool {
    int n;                       /* threads including the caller */
    pthread_t *threads;
    struct worker_arg *wargs;    /* each worker's (pool, index) */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    _Atomic uint64_t generation; /* current job id (see `sleepers` for the hand-over) */
    _Atomic uint64_t claim;      /* (job id & 0xffffffff) << 32 | next index */
    atomic_int_fast64_t finished;/* tasks of the current job completed */
    atomic_int spin;             /* adaptive spin budget (a hint; relaxed) */
    atomic_int stop;
    atomic_int sleepers;         /* workers asleep on `wake` */
    atomic_int waiting;          /* the caller is asleep on `done` */
    pool_job slot[2];            /* job g lives in slot[g & 1] */
    _Atomic(const char *) pf_ptr; /* ds4_pool_prefetch: the latest hint */
    _Atomic size_t pf_len;
    _Atomic uint64_t pf_seq;
    void *scratch;               /* ds4_pool_scratch */
    size_t scratch_bytes;
};

/* Claims and runs tasks of job g until none is left or the job changed.
 * Returns after signalling `done` if this thread finished the last task. */
static void drain(ds4_pool *p, uint64_t g) {
    pool_job *j = &p->slot[g & 1];
    ds4_task_fn fn = atomic_load_explicit(&j->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&j->ctx, memory_order_relaxed);
    int64_t total = atomic_load_explicit(&j->total, memory_order_relaxed);
    uint64_t c = atomic_load(&p->claim);
    for (;;) {
        if ((c >> 32) != (g & 0xffffffffu) || (int64_t)(c & 0xffffffffu) >= total) return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1)) continue; /* c reloaded */
        fn(ctx, (int64_t)(c & 0xffffffffu));
        if (atomic_fetch_add(&p->finished, 1) + 1 == total) {
            if (atomic_load(&p->waiting)) { /* else the caller sees `finished` itself */
                pthread_mutex_lock(&p->mu);
                pthread_cond_signal(&p->done);
                pthread_mutex_unlock(&p->mu);
            }
            return;
        }
        c = atomic_load(&p->claim);
    }
}

/* The pool this thread works for and its index there (ds4_pool_thread). */
static _Thread_local const ds4_pool *tl_pool;
static _Thread_local int tl_index;

int ds4_pool_thread(const ds4_pool *p) { return p && tl_pool == p ? tl_index : 0; }

typedef struct worker_arg { ds4_pool *p; int index; } worker_arg;

/* Worker `index`'s share of the latest prefetch hint (ds4_pool_prefetch),
 * four lines at a time, given up as soon as a new job is posted.  The
 * pointer and length are read without the sequence number: a torn pair
 * only prefetches a wrong range, which is harmless. */
static void prefetch_hint(ds4_pool *p, uint64_t seen, int index) {
    const char *ptr = atomic_load_explicit(&p->pf_ptr, memory_order_relaxed);
    size_t len = atomic_load_explicit(&p->pf_len, memory_order_relaxed);
    size_t share = (len / (size_t)(p->n - 1) + 255) & ~(size_t)255;
    size_t a = share * (size_t)(index - 1), e = a + share < len ? a + share : len;
    if (a >= len) return;
    if (e - a > DS4_POOL_PREFETCH_MAX) e = a + DS4_POOL_PREFETCH_MAX;
    for (size_t o = a; o < e; o += 256) {
        if (atomic_load_explicit(&p->generation, memory_order_relaxed) != seen) return;
        __builtin_prefetch(ptr + o, 0, 3);
        __builtin_prefetch(ptr + o + 64, 0, 3);
        __builtin_prefetch(ptr + o + 128, 0, 3);
        __builtin_prefetch(ptr + o + 192, 0, 3);
    }
}

void ds4_pool_prefetch(ds4_pool *p, const void *ptr, size_t len) {
    if (!p || p->n == 1 || !ptr || !len) return;
    atomic_store_explicit(&p->pf_ptr, ptr, memory_order_relaxed);
    atomic_store_explicit(&p->pf_len, len, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->pf_seq, 1, memory_order_release);
}

static void *worker(void *arg) {
    ds4_pool *p = ((worker_arg *)arg)->p;
    tl_pool = p;
    tl_index = ((worker_arg *)arg)->index;
    uint64_t seen = 0, pf_seen = 0;
    for (;;) {
        uint64_t g = atomic_load(&p->generation);
        int budget = atomic_load_explicit(&p->spin, memory_order_relaxed);
        for (int i = 0; i < budget && g == seen && !atomic_load(&p->stop); i++) {
            uint64_t q = atomic_load_explicit(&p->pf_seq, memory_order_acquire);
            if (q != pf_seen) {
                pf_seen = q;
                prefetch_hint(p, seen, ((worker_arg *)arg)->index);
            }
            RELAX();
            g = atomic_load(&p->generation);
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen) pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            g = atomic_load(&p->generation);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        drain(p, g);
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
    atomic_store(&p->spin, SPIN);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->wargs = calloc((size_t)n_threads - 1, sizeof *p->wargs);
        if (!p->threads || !p->wargs) { free(p->threads); free(p->wargs); free(p); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            p->wargs[i] = (worker_arg){p, i + 1};
            if (pthread_create(&p->threads[i], NULL, worker, &p->wargs[i])) { p->n = i + 1; break; }
        }
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
    free(p->wargs);
    free(p->scratch);
    free(p);
}

void *ds4_pool_scratch(ds4_pool *p, size_t bytes) {
    if (!p) return NULL;
    if (bytes > p->scratch_bytes) {
        /* half again as much, so batches of growing sizes settle quickly */
        size_t want = ((bytes + bytes / 2) + 63) & ~(size_t)63;
        void *b = ds4_alloc_big(want);
        if (!b) return NULL;
        free(p->scratch);
        p->scratch = b;
        p->scratch_bytes = want;
    }
    return p->scratch;
}

int ds4_pool_size(const ds4_pool *p) { return p ? p->n : 1; }

/* Task indices live in 32 bits of the claim word; larger jobs run in pieces. */
#define MAX_TASKS 0x7fffffff
typedef struct piece { ds4_task_fn fn; void *ctx; int64_t base; } piece;
static void piece_task(void *c, int64_t i) {
    const piece *pc = c;
    pc->fn(pc->ctx, pc->base + i);
}

void ds4_pool_run(ds4_pool *p, int64_t n, ds4_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    if (n > MAX_TASKS) {
        for (int64_t b = 0; b < n; b += MAX_TASKS) {
            piece pc = {fn, ctx, b};
            ds4_pool_run(p, n - b < MAX_TASKS ? n - b : MAX_TASKS, piece_task, &pc);
        }
        return;
    }
    /* Only the caller writes the slot and resets the counters, and the
     * previous job is complete (finished == total), so no thread still uses
     * this slot's job: a late worker of job g-1 fails the id check. */
    uint64_t g = atomic_load(&p->generation) + 1;
    pool_job *j = &p->slot[g & 1];
    atomic_store_explicit(&j->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&j->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&j->total, n, memory_order_relaxed);
    atomic_store(&p->finished, 0);
    atomic_store(&p->claim, (g & 0xffffffffu) << 32);
    atomic_store(&p->generation, g);
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    drain(p, g);
    if (atomic_load(&p->finished) >= n) return;
    int budget = atomic_load_explicit(&p->spin, memory_order_relaxed);
    for (int i = 0; i < budget && atomic_load(&p->finished) < n; i++) RELAX();
    if (atomic_load(&p->finished) < n) {
        atomic_store_explicit(&p->spin, budget / 2 > SPIN_MIN ? budget / 2 : SPIN_MIN, memory_order_relaxed);
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->waiting, 1);
        while (atomic_load(&p->finished) < n) pthread_cond_wait(&p->done, &p->mu);
        atomic_store(&p->waiting, 0);
        pthread_mutex_unlock(&p->mu);
    } else if (budget < SPIN) {
        atomic_store_explicit(&p->spin, budget * 2 < SPIN ? budget * 2 : SPIN, memory_order_relaxed);
    }
}
