/* ds4-server: the local OpenAI + Anthropic compatible HTTP server (API.md).
 *
 * What.  One process serves one model over HTTP/1.1 (libmicrohttpd, one
 * thread per connection, `Connection: close`).  Client threads parse,
 * validate, render and tokenize requests (server/request.c and the four
 * endpoint files); one engine worker thread (server/queue.c, server/worker.c)
 * owns the live session and runs jobs FIFO, writing SSE frames through a
 * per-request channel (server/sse.c) that the connection thread drains, with
 * timer-driven keep-alives.  Disk KV checkpoints live in kv/kvcache.h.
 *
 * This header is the boundary used by tools/ds4-server.c: configuration
 * (flags of API.md §2), argument parsing and the blocking run loop.
 * Internal types are in server/srv_int.h.
 *
 * Errors: functions return -1 with a message in ds4_err. */
#ifndef DS4_SERVER_SERVER_H
#define DS4_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/chat.h"
#include "experts/experts.h"
#include "util/err.h"

typedef struct srv_config {
    const char *model_path;        /* -m */
    const char *host;              /* bind address, default 127.0.0.1 */
    int port;                      /* default 8000 */
    uint32_t ctx;                  /* context tokens, default 32768 */
    int64_t default_max_tokens;    /* -n/--tokens, default 393216 */
    int threads;                   /* engine threads, 0 = all CPUs */
    int chunk;                     /* prefill chunk tokens, 0 = driver default */
    ds4_experts_opts experts;      /* routed experts streamed from the file (off by default) */
    const char *api_key;           /* NULL = auth off (also DS4_API_KEY) */
    bool cors;
    size_t max_body_bytes;         /* default 64 MiB */
    int max_queue;                 /* 0 = unbounded */
    const char *served_model_name; /* default deepseek-v4-flash */
    ds4_think_mode default_think;  /* default high */
    const char *kv_disk_dir;       /* NULL = disk cache off */
    uint64_t kv_disk_space_mb;     /* default 4096 */
    uint32_t kv_min_tokens;        /* 512 */
    uint32_t kv_cold_max_tokens;   /* 30000 */
    uint32_t kv_continued_interval;/* 10000 */
    uint32_t kv_trim_tokens;       /* 32 */
    uint32_t kv_align_tokens;      /* 2048 */
    bool kv_reject_different_quant;
    size_t tool_memory_max_ids;    /* 100000 */
    bool disable_exact_replay;
    const char *trace_path;        /* NULL = no trace */
    bool test_hooks;               /* TEST ONLY: honour x-ds4-test-output (see srv_int.h) */
    /* TEST ONLY (--test-force-output, needs --test-hooks): scripted outputs
     * for clients that cannot send the header; argv strings, not copied. */
    const char *test_force[16];
    int n_test_force;
    double keepalive_s;            /* SSE keep-alive interval, default 2.5 s */
} srv_config;

void srv_config_default(srv_config *c);

/* Parses argv (argv[0] skipped).  Returns 0, 1 when --help was printed to
 * stdout (caller exits 0), or -1 with a message. */
int srv_parse_args(srv_config *c, int argc, char **argv, ds4_err *err);
void srv_usage(void *file);

/* Loads the model, binds, serves until SIGINT/SIGTERM, shuts down gracefully
 * (API.md §13) and returns 0; -1 on a start-up failure. */
int srv_run(const srv_config *c, ds4_err *err);

#endif
