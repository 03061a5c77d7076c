/* Internal types of the server (not used outside src/server and tools/ds4-server.c).
 *
 * Life of a request (API.md §13):
 *   connection thread (http.c): read headers + body (413 over the cap), auth,
 *     CORS, route; the endpoint parser (openai_chat.c, ...) fills a srv_req;
 *     request.c renders the conversation (tools, exact DSML replay from the
 *     tool memory), tokenizes it and checks the context.  Errors are answered
 *     here without touching the worker.
 *   queue.c: the job is appended to a FIFO; one worker thread pops jobs.
 *   worker.c: prefix reuse / disk cache decision, prefill, decode through
 *     gen/gen.h, stop sequences, DSML parsing; it calls the endpoint's
 *     srv_out_vt callbacks, which write SSE frames to the job's srv_stream
 *     (streaming) or build the JSON body (non-streaming) at finish.
 *   connection thread: waits for the job (non-streaming) or drains the
 *     stream (SSE), writing keep-alives when idle.
 *
 * Ownership: a srv_job owns its srv_req and result buffers; it is freed by
 * the connection side after the worker marked it done (srv_job_wait) — the
 * stream channel is reference counted because MHD may free its response
 * before or after the worker finishes.
 *
 * Thread-safety: srv_ctx fields are immutable after start except the atomics;
 * srv_toolmem and srv_trace lock internally; a srv_job's result fields belong
 * to the worker until done is set. */
#ifndef DS4_SERVER_SRV_INT_H
#define DS4_SERVER_SRV_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "model/model.h"
#include "sample/sample.h"
#include "server/server.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "util/buf.h"
#include "util/err.h"

#define SRV_DEFAULT_MODEL "deepseek-v4-flash"
#define SRV_ALIAS_CHAT "deepseek-chat"
#define SRV_ALIAS_REASONER "deepseek-reasoner"
#define SRV_CREATED 1767225600L

/* TEST ONLY.  With --test-hooks, a request header x-ds4-test-output carrying
 * percent-encoded UTF-8 makes the worker emit exactly the tokens of that text
 * (then EOS) instead of sampling; the engine still evaluates every token, so
 * KV, usage and parsing are real.  The random synthetic test models cannot
 * produce a tool call on their own.  Off unless the flag is given. */
#define SRV_TEST_OUTPUT_HEADER "x-ds4-test-output"
/* Percent-decoding of the hook texts (header and --test-force-output). */
char *srv_pct_decode(const char *v);

typedef struct srv_ctx srv_ctx;
typedef struct srv_job srv_job;
typedef struct srv_stream srv_stream;
typedef struct srv_queue srv_queue;
typedef struct srv_toolmem srv_toolmem;
typedef struct srv_trace srv_trace;
typedef struct srv_engine srv_engine;

typedef enum srv_api {
    SRV_API_CHAT = 0,
    SRV_API_COMPLETIONS,
    SRV_API_RESPONSES,
    SRV_API_MESSAGES,
} srv_api;

/* ---- errors.c ---- */

typedef struct srv_error {
    int status;              /* HTTP status; 0 = no error */
    const char *type;        /* OpenAI error.type */
    const char *code;        /* OpenAI error.code or NULL */
    const char *param;       /* OpenAI error.param or NULL */
    const char *anth_type;   /* Anthropic error.type */
    char msg[768];
    long n_prompt, n_ctx;    /* > 0: context overflow extension fields */
} srv_error;

/* Fills e and returns -1.  anth_type NULL derives it from status. */
int srv_err(srv_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Body of e in the OpenAI or Anthropic shape (API.md §12.1), ending in "\n".
 * Returns malloc'd text. */
char *srv_error_body(const srv_error *e, bool anthropic, size_t *len);
/* Dumps a JSON value compactly (insertion order, raw UTF-8) plus an optional
 * trailing "\n"; takes a reference of v (decref'd).  NULL on OOM. */
char *srv_json_dump(json_t *v, bool newline, size_t *len);
/* JSON string from bytes that may be invalid UTF-8 (bad bytes -> U+FFFD). */
json_t *srv_json_strn(const char *s, size_t n);
/* Random id: prefix + 2*nbytes lowercase hex from the OS RNG. */
void srv_random_id(char *out, size_t cap, const char *prefix, size_t nbytes);
double srv_now(void); /* monotonic seconds */

/* ---- request.c: parsed, rendered request ---- */

typedef struct srv_tooldecl {
    char *prompt_name;  /* name as rendered into the prompt (namespace + name) */
    char *wire_name;    /* name reported back (inner name) */
    char *ns;           /* Responses namespace or NULL */
    bool custom;        /* Responses custom tool: returned as custom_tool_call */
    bool tool_search;
} srv_tooldecl;

typedef struct srv_req {
    srv_api api;
    char *model;                 /* echoed */
    bool stream, include_usage;
    ds4_chat *chat;              /* the conversation (owned) */
    ds4_think_mode mode;         /* effective thinking mode */
    bool tools_active;           /* tools rendered and output parsed for calls */
    srv_tooldecl *tools;
    size_t n_tools;
    char **schemas;              /* rendered tool schema JSON texts */
    size_t n_schemas;
    bool reasoning_summary;      /* Responses: surface reasoning */
    samp_params samp;
    int64_t max_tokens;          /* requested (before clamping) */
    char **stop;
    size_t n_stop;
    char *prompt;                /* rendered prompt bytes */
    size_t prompt_len;
    size_t n_prompt_tokens;      /* tokenization of the whole prompt */
    char *force_output;          /* TEST ONLY hook text, or NULL */
    bool count_only;             /* count_tokens: no context check (the count is the answer) */
    int replay_mem, replay_canonical, replay_missing;
} srv_req;

srv_req *srv_req_new(srv_api api);
void srv_req_free(srv_req *r);

/* Helpers for endpoint parsers (return -1 with e filled). */
int srv_parse_model(srv_ctx *s, json_t *root, srv_req *r, srv_error *e);
/* Thinking controls of API.md §4.2; `effort` may be NULL. */
int srv_parse_thinking(srv_ctx *s, json_t *root, json_t *effort, srv_req *r, srv_error *e);
int srv_parse_sampling(json_t *root, srv_req *r, bool allow_topk, bool allow_minp, srv_error *e);
int srv_parse_max_tokens(json_t *root, const char *const *names, srv_req *r, srv_error *e);
int srv_parse_stop(json_t *v, srv_req *r, srv_error *e);
int srv_parse_bool(json_t *root, const char *key, bool *out, srv_error *e);
/* tool_choice: returns 1 if tools are disabled ("none"). */
int srv_parse_tool_choice(json_t *v, srv_error *e);
/* Adds a tool schema (JSON object, rendered verbatim) with its wire names. */
int srv_req_add_tool(srv_req *r, json_t *schema, const char *wire_name, const char *ns, bool custom, bool tool_search,
                     srv_error *e);
/* Text of a content value: string, null, or an array of string parts /
 * objects with "text" (other parts ignored).  strict: non-text part -> error. */
char *srv_content_text(json_t *v, bool strict, const char *what, srv_error *e);
/* Renders r->chat (tools attached, exact DSML replay, API.md §19.3),
 * tokenizes, and checks the context (API.md §12.3). */
int srv_req_render(srv_ctx *s, srv_req *r, srv_error *e);

/* ---- sse.c: the byte channel from worker to connection ---- */

srv_stream *srv_stream_new(double keepalive_s);
void srv_stream_ref(srv_stream *st);
void srv_stream_unref(srv_stream *st);
/* Appends bytes (whole frames only).  -1 once the client is gone. */
int srv_stream_write(srv_stream *st, const char *data, size_t n);
/* Writes "event: NAME\n" (if name) + "data: JSON\n\n"; takes a reference of obj. */
int srv_stream_event(srv_stream *st, const char *name, json_t *obj);
int srv_stream_data_raw(srv_stream *st, const char *text);
/* Frame sent whenever nothing was written for keepalive_s (default ": keep-alive\n\n"). */
void srv_stream_set_keepalive(srv_stream *st, const char *frame);
void srv_stream_close(srv_stream *st);    /* producer is done */
void srv_stream_break(srv_stream *st);    /* consumer is gone */
bool srv_stream_broken(srv_stream *st);
/* Consumer side: copies up to max bytes, waiting up to the keep-alive interval.
 * Returns bytes (> 0), 0 never, -1 at end of stream. */
ssize_t srv_stream_read(srv_stream *st, char *buf, size_t max);

/* ---- the job ---- */

typedef enum srv_finish {
    SRV_FIN_STOP = 0,   /* EOS */
    SRV_FIN_STOPSEQ,    /* stop sequence matched (stop_hit) */
    SRV_FIN_LENGTH,     /* max tokens or context full */
    SRV_FIN_TOOLS,      /* DSML block closed and parsed */
    SRV_FIN_ERROR,
} srv_finish;

typedef struct srv_call {
    char id[64];        /* call_... / toolu_... */
    char item_id[40];   /* Responses fc_... */
    char *name;         /* prompt name as the model wrote it */
    ds4_buf args;       /* streamed argument JSON */
    bool complete;      /* TOOL_END seen */
    int out_index;      /* Responses output_index / Anthropic block index */
} srv_call;

typedef struct srv_out_vt {
    void (*start)(srv_job *j);                         /* prompt counts known */
    void (*reasoning)(srv_job *j, const char *s, size_t n);
    void (*reasoning_end)(srv_job *j);
    void (*text)(srv_job *j, const char *s, size_t n);
    void (*tool_start)(srv_job *j, srv_call *c);
    void (*tool_args)(srv_job *j, srv_call *c, const char *s, size_t n);
    void (*tool_end)(srv_job *j, srv_call *c);
    void (*finish)(srv_job *j);                        /* success (stream tail or body) */
    void (*fail)(srv_job *j);                          /* j->err set */
} srv_out_vt;

struct srv_job {
    srv_ctx *srv;
    srv_req *req;                /* owned */
    const srv_out_vt *out;
    srv_stream *stream;          /* reference held; NULL when not streaming */
    int fd;                      /* client socket for disconnect probes, -1 unknown */
    atomic_int cancel;
    /* result (worker) */
    ds4_buf reasoning, content;
    srv_call *calls;
    size_t n_calls, cap_calls;
    srv_finish finish;
    char *stop_hit;
    bool reasoning_closed;
    bool started;                /* out->start was called */
    long P, C, W, G, R;          /* usage, API.md §11 */
    srv_error err;               /* set when failed */
    bool failed;
    /* non-streaming response */
    int status;
    char *body;
    size_t body_len;
    /* endpoint emitter state */
    char id[64];
    long created;
    long seq;                    /* Responses sequence_number */
    int block;                   /* Anthropic: next block index; Responses: next output_index */
    int open_kind;               /* 0 none, 1 thinking/reasoning, 2 text, 3 tool */
    char rs_id[40], msg_id[40];
    int rs_index, msg_index;
    ds4_buf sent_text;           /* text streamed so far (Responses) */
    /* synchronisation */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    bool detached;               /* streaming: freed by the worker after done */
    srv_job *next;
};

srv_job *srv_job_new(srv_ctx *s, srv_req *r, const srv_out_vt *out, srv_stream *st, int fd);
void srv_job_free(srv_job *j);
void srv_job_mark_done(srv_job *j);
void srv_job_wait(srv_job *j);
/* Records a failure; streaming jobs get the error frame via out->fail. */
void srv_job_fail(srv_job *j, const srv_error *e);
bool srv_job_cancelled(srv_job *j);  /* flag, broken stream or closed socket */
srv_call *srv_job_add_call(srv_job *j, const char *name, const char *id_prefix);

/* ---- queue.c ---- */

typedef void (*srv_run_fn)(void *user, srv_job *j);
srv_queue *srv_queue_new(srv_run_fn run, void *user, ds4_err *err);
/* 0 queued, -1 full (max_queue > 0 reached), -2 shutting down. */
int srv_queue_push(srv_queue *q, srv_job *j, int max_queue);
size_t srv_queue_waiting(srv_queue *q);
bool srv_queue_busy(srv_queue *q);
/* Refuses new jobs, lets queued ones run (they fail fast once the worker
 * sees the shutdown flag), joins the worker. */
void srv_queue_shutdown(srv_queue *q);
void srv_queue_free(srv_queue *q);

/* ---- toolmem.c: id -> exact sampled DSML block (API.md §19) ---- */

srv_toolmem *srv_toolmem_new(size_t max_ids);
void srv_toolmem_free(srv_toolmem *m);
/* Binds every id to the same block (copied). */
int srv_toolmem_put(srv_toolmem *m, const char *const *ids, size_t n, const char *block, size_t len);
/* Malloc'd copy of the block bound to id (and *len), or NULL. */
char *srv_toolmem_get(srv_toolmem *m, const char *id, size_t *len);
size_t srv_toolmem_count(srv_toolmem *m);
/* Serialises / loads the mappings whose block occurs in text (KTM section, API.md §18.2). */
int srv_toolmem_export(srv_toolmem *m, const char *text, size_t len, ds4_buf *out);
int srv_toolmem_import(srv_toolmem *m, const void *data, size_t len, size_t max_entries);

/* ---- trace.c ---- */

srv_trace *srv_trace_open(const char *path, ds4_err *err);
void srv_trace_close(srv_trace *t);
void srv_trace_printf(srv_trace *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_trace_text(srv_trace *t, const char *label, const char *data, size_t len);

/* ---- worker.c ---- */

srv_engine *srv_engine_new(srv_ctx *s, ds4_err *err);
void srv_engine_free(srv_engine *e);
void srv_engine_run(void *user, srv_job *j);   /* srv_run_fn */
void srv_engine_shutdown_save(srv_engine *e);
size_t srv_engine_live_tokens(srv_engine *e);

/* ---- endpoints ---- */

int srv_chat_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e);
int srv_completions_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e);
int srv_responses_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e);
int srv_messages_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e);
extern const srv_out_vt srv_chat_out, srv_completions_out, srv_responses_out, srv_messages_out;
json_t *srv_usage_openai(srv_job *j);   /* chat/completions usage object (API.md §11) */
void srv_openai_fail(srv_job *j);       /* OpenAI error frame or error body */
/* GET /v1/models[/{id}] bodies (openai_chat.c); NULL id = the list. */
json_t *srv_models_json(srv_ctx *s, const char *id);

/* ---- shared server state ---- */

struct kv_cache;

struct srv_ctx {
    srv_config cfg;
    ds4_model *model;
    ds4_tokenizer *tok;          /* owned, from the GGUF */
    srv_engine *eng;
    srv_queue *queue;
    srv_toolmem *toolmem;
    srv_trace *trace;            /* may be NULL */
    struct kv_cache *kv;         /* may be NULL */
    atomic_int shutting_down;
    atomic_long counter;         /* chatcmpl-<n>, cmpl-<n> */
    atomic_long live_tokens;
    atomic_int open_streams;     /* SSE responses not yet released by MHD */
    int test_force_next;         /* TEST ONLY: next cfg.test_force (worker thread only) */
    double started;
};

void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
