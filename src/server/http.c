/* HTTP layer on libmicrohttpd: listener, body limits, routing, auth, CORS,
 * JSON / SSE responses, and the server's start-up and shutdown (srv_run).
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler
 * may block: non-streaming requests wait for their job; streaming responses
 * are MHD callback responses whose reader drains the job's srv_stream and
 * writes keep-alives while it is idle.  Every response carries
 * `Connection: close` (API.md §1).  Auth (§16): --api-key / DS4_API_KEY,
 * `Authorization: Bearer` or `x-api-key`, constant-time compare, /health and
 * OPTIONS exempt.  CORS (§15) adds the Allow-* headers everywhere. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "kv/kvcache.h"
#include "server/srv_int.h"

typedef struct conn {
    ds4_buf body;
    size_t declared;   /* Content-Length, 0 if absent */
    bool too_large;
} conn;

static bool is_anthropic_path(const char *p) { return !strncmp(p, "/v1/messages", 12); }

static void add_common_headers(srv_ctx *s, struct MHD_Response *r, const char *ctype) {
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Connection", "close");
    if (s->cfg.cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                s->cfg.api_key ? "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta"
                                               : "*");
    }
}

/* Takes ownership of body (malloc'd). */
static enum MHD_Result send_body(srv_ctx *s, struct MHD_Connection *c, int status, char *body, size_t len,
                                 const char *ctype) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (void *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                                               : MHD_RESPMEM_PERSISTENT);
    if (!r) { free(body); return MHD_NO; }
    add_common_headers(s, r, ctype);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(srv_ctx *s, struct MHD_Connection *c, int status, json_t *v) {
    size_t n;
    char *b = srv_json_dump(v, true, &n);
    if (!b) return MHD_NO;
    return send_body(s, c, status, b, n, "application/json");
}

static enum MHD_Result send_error(srv_ctx *s, struct MHD_Connection *c, const srv_error *e, bool anthropic) {
    size_t n;
    char *b = srv_error_body(e, anthropic, &n);
    if (!b) return MHD_NO;
    if (e->status >= 500 || e->status == 413 || e->status == 401) srv_log("HTTP %d: %s", e->status, e->msg);
    return send_body(s, c, e->status, b, n, "application/json");
}

/* Constant-time comparison (length leaks, content does not). */
static bool key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static bool authorised(srv_ctx *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return true;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        const char *k = auth + 7;
        while (*k == ' ') k++;
        if (key_equal(k, s->cfg.api_key)) return true;
    }
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    return x && key_equal(x, s->cfg.api_key);
}

static json_t *health_json(srv_ctx *s, bool shutting) {
    json_t *o = json_object();
    if (shutting) {
        json_object_set_new(o, "status", json_string("shutting_down"));
        return o;
    }
    json_object_set_new(o, "status", json_string("ok"));
    json_object_set_new(o, "model", json_string(s->cfg.served_model_name));
    json_object_set_new(o, "context_length", json_integer(s->cfg.ctx));
    json_object_set_new(o, "busy", json_boolean(srv_queue_busy(s->queue)));
    json_object_set_new(o, "queued", json_integer((json_int_t)srv_queue_waiting(s->queue)));
    json_object_set_new(o, "live_tokens", json_integer(atomic_load(&s->live_tokens)));
    json_object_set_new(o, "uptime_s", json_integer((json_int_t)(srv_now() - s->started)));
    json_t *kv = json_object();
    json_object_set_new(kv, "enabled", json_boolean(s->cfg.kv_disk_dir != NULL));
    json_object_set_new(kv, "budget_mb", json_integer((json_int_t)s->cfg.kv_disk_space_mb));
    json_object_set_new(o, "kv_disk", kv);
    return o;
}

/* Percent-decoding of the TEST ONLY output texts. */
char *srv_pct_decode(const char *v) {
    size_t n = strlen(v);
    char *o = malloc(n + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '%' && isxdigit((unsigned char)v[i + 1]) && isxdigit((unsigned char)v[i + 2])) {
            char hx[3] = {v[i + 1], v[i + 2], 0};
            *w++ = (char)strtol(hx, NULL, 16);
            i += 2;
            continue;
        }
        *w++ = v[i];
    }
    *w = 0;
    return o;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    ssize_t n = srv_stream_read(cls, buf, max);
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

typedef struct stream_ref {
    srv_ctx *s;
    srv_stream *st;
} stream_ref;

static ssize_t stream_reader_ref(void *cls, uint64_t pos, char *buf, size_t max) {
    return stream_reader(((stream_ref *)cls)->st, pos, buf, max);
}

static void stream_free(void *cls) {
    stream_ref *r = cls;
    srv_stream_break(r->st);
    srv_stream_unref(r->st);
    atomic_fetch_sub(&r->s->open_streams, 1);
    free(r);
}

static int client_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static enum MHD_Result handle_post(srv_ctx *s, struct MHD_Connection *c, const char *path, conn *cn) {
    bool anth = is_anthropic_path(path);
    srv_error e = {0};
    srv_api api;
    int (*parse)(srv_ctx *, json_t *, srv_req *, srv_error *);
    const srv_out_vt *out;
    bool count = false;
    if (!strcmp(path, "/v1/chat/completions")) { api = SRV_API_CHAT; parse = srv_chat_parse; out = &srv_chat_out; }
    else if (!strcmp(path, "/v1/completions")) { api = SRV_API_COMPLETIONS; parse = srv_completions_parse; out = &srv_completions_out; }
    else if (!strcmp(path, "/v1/responses")) { api = SRV_API_RESPONSES; parse = srv_responses_parse; out = &srv_responses_out; }
    else if (!strcmp(path, "/v1/messages")) { api = SRV_API_MESSAGES; parse = srv_messages_parse; out = &srv_messages_out; }
    else if (!strcmp(path, "/v1/messages/count_tokens")) { api = SRV_API_MESSAGES; parse = srv_messages_parse; out = &srv_messages_out; count = true; }
    else {
        srv_err(&e, 404, NULL, "not_found", NULL, "unknown endpoint");
        return send_error(s, c, &e, anth);
    }
    json_error_t je;
    json_t *root = cn->body.len ? json_loadb(cn->body.data, cn->body.len, 0, &je) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        srv_err(&e, 400, NULL, NULL, NULL, "invalid JSON request");
        return send_error(s, c, &e, anth);
    }
    srv_req *r = srv_req_new(api);
    if (!r) { json_decref(root); return MHD_NO; }
    int rc = parse(s, root, r, &e);
    json_decref(root);
    if (rc == 0 && s->cfg.test_hooks) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, SRV_TEST_OUTPUT_HEADER);
        if (h) r->force_output = srv_pct_decode(h);
    }
    r->count_only = count;
    if (rc == 0) rc = srv_req_render(s, r, &e);
    if (rc) {
        srv_req_free(r);
        return send_error(s, c, &e, anth);
    }
    if (count) {
        json_t *o = json_object();
        json_object_set_new(o, "input_tokens", json_integer((json_int_t)r->n_prompt_tokens));
        srv_req_free(r);
        return send_json(s, c, 200, o);
    }
    if (atomic_load(&s->shutting_down)) {
        srv_req_free(r);
        srv_err(&e, 503, "server_error", NULL, NULL, "server shutting down");
        return send_error(s, c, &e, anth);
    }
    srv_stream *st = r->stream ? srv_stream_new(s->cfg.keepalive_s) : NULL;
    if (r->stream && !st) { srv_req_free(r); return MHD_NO; }
    srv_job *j = srv_job_new(s, r, out, st, client_fd(c));
    if (!j) { srv_req_free(r); if (st) srv_stream_unref(st); return MHD_NO; }
    j->detached = st != NULL;
    int q = srv_queue_push(s->queue, j, s->cfg.max_queue);
    if (q) {
        j->detached = false;
        srv_job_free(j);
        if (st) srv_stream_unref(st);
        if (q == -1) srv_err(&e, anth ? 529 : 503, "server_error", "overloaded", NULL, "server busy; retry later");
        else srv_err(&e, 503, "server_error", NULL, NULL, "server shutting down");
        return send_error(s, c, &e, anth);
    }
    if (st) {
        /* Headers go out now; the reader sends frames and keep-alives. */
        stream_ref *ref = malloc(sizeof *ref);
        struct MHD_Response *resp = NULL;
        if (ref) {
            ref->s = s;
            ref->st = st;
            atomic_fetch_add(&s->open_streams, 1);
            resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader_ref, ref, stream_free);
            if (!resp) { atomic_fetch_sub(&s->open_streams, 1); free(ref); }
        }
        if (!resp) { srv_stream_break(st); srv_stream_unref(st); return MHD_NO; }
        add_common_headers(s, resp, "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result mr = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return mr;
    }
    srv_job_wait(j);
    int status = j->status ? j->status : 500;
    char *body = j->body;
    size_t blen = j->body_len;
    j->body = NULL;
    srv_job_free(j);
    if (!body) {
        /* The client went away (nothing was produced): close without a body. */
        srv_err(&e, 500, "server_error", NULL, NULL, "request cancelled");
        return send_error(s, c, &e, anth);
    }
    return send_body(s, c, status, body, blen, "application/json");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    srv_ctx *s = cls;
    conn *cn = *con_cls;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn))) return MHD_NO;
        *con_cls = cn;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            unsigned long long v = strtoull(cl, NULL, 10);
            cn->declared = (size_t)v;
            if (v > s->cfg.max_body_bytes) cn->too_large = true;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cn->too_large) {
            if (cn->body.len + *upload_size > s->cfg.max_body_bytes) {
                cn->too_large = true;
                ds4_buf_free(&cn->body);
            } else if (ds4_buf_append(&cn->body, upload, *upload_size)) {
                return MHD_NO;
            }
        }
        if (!cn->declared) cn->declared = cn->body.len;
        *upload_size = 0;
        return MHD_YES;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s", url);
    char *qm = strchr(path, '?');
    if (qm) *qm = 0;
    bool anth = is_anthropic_path(path);
    srv_error e = {0};
    if (!strcmp(method, "OPTIONS")) return send_body(s, c, 204, NULL, 0, NULL);
    bool health = !strcmp(path, "/health") || !strcmp(path, "/v1/health");
    if (health && !strcmp(method, "GET")) {
        bool sd = atomic_load(&s->shutting_down);
        return send_json(s, c, sd ? 503 : 200, health_json(s, sd));
    }
    if (!authorised(s, c)) {
        srv_err(&e, 401, NULL, "invalid_api_key", NULL, "invalid API key");
        return send_error(s, c, &e, anth);
    }
    if (cn->too_large) {
        srv_err(&e, 413, NULL, "request_too_large", NULL, "request body of %zu bytes exceeds the %zu byte limit",
                cn->declared, s->cfg.max_body_bytes);
        return send_error(s, c, &e, anth);
    }
    if (!strcmp(method, "GET")) {
        if (!strcmp(path, "/v1/models")) return send_json(s, c, 200, srv_models_json(s, NULL));
        if (!strncmp(path, "/v1/models/", 11)) {
            json_t *m = srv_models_json(s, path + 11);
            if (m) return send_json(s, c, 200, m);
            srv_err(&e, 404, NULL, "model_not_found", "model", "The model '%s' does not exist", path + 11);
            return send_error(s, c, &e, false);
        }
    } else if (!strcmp(method, "POST")) {
        return handle_post(s, c, path, cn);
    }
    srv_err(&e, 404, NULL, "not_found", NULL, "unknown endpoint");
    return send_error(s, c, &e, anth);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn *cn = *con_cls;
    if (!cn) return;
    ds4_buf_free(&cn->body);
    free(cn);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    srv_log("http: %s", line);
}

/* Second signal: exit immediately (API.md §13). */
static void *second_signal(void *arg) {
    sigset_t *set = arg;
    int sig;
    sigwait(set, &sig);
    srv_log("second signal: exiting now");
    _exit(130);
    return NULL;
}

int srv_run(const srv_config *cfg, ds4_err *err) {
    static srv_ctx ctx;
    srv_ctx *s = &ctx;
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->started = srv_now();
    atomic_init(&s->counter, 1);
    /* Block the signals in every thread; the main thread waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->port);
    const char *host = !strcmp(cfg->host, "localhost") ? "127.0.0.1" : cfg->host;
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return ds4_err_set(err, "--host: not an IPv4 address: %s", cfg->host);

    srv_log("loading %s", cfg->model_path);
    if (!(s->model = ds4_model_load(cfg->model_path, err))) return -1;
    if (!(s->tok = ds4_tokenizer_load_gguf(s->model->gguf, err))) {
        ds4_err_prefix(err, "%s: tokenizer", cfg->model_path);
        ds4_model_free(s->model);
        return -1;
    }
    int rc = -1;
    struct MHD_Daemon *d = NULL;
    if (cfg->trace_path && !(s->trace = srv_trace_open(cfg->trace_path, err))) goto out;
    if (!(s->toolmem = srv_toolmem_new(cfg->tool_memory_max_ids))) { ds4_err_set(err, "out of memory"); goto out; }
    if (!(s->eng = srv_engine_new(s, err))) goto out;
    if (!(s->queue = srv_queue_new(srv_engine_run, s->eng, err))) goto out;
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
                         NULL, handler, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)(128 * 1024), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
    if (!d) { ds4_err_set(err, "cannot listen on %s:%d: %s", host, cfg->port, strerror(errno)); goto out; }
    srv_log("listening on http://%s:%d (model %s, ctx %u%s%s)", host, cfg->port, cfg->served_model_name, cfg->ctx,
            cfg->api_key ? ", api key required" : "", cfg->kv_disk_dir ? ", disk KV cache on" : "");
    int sig = 0;
    sigwait(&set, &sig);
    srv_log("signal %d: shutting down (a second signal exits immediately)", sig);
    pthread_t th;
    if (pthread_create(&th, NULL, second_signal, &set) == 0) pthread_detach(th);
    atomic_store(&s->shutting_down, 1);
    srv_queue_shutdown(s->queue);    /* running job stops at its next step; queued ones fail fast */
    /* Let connection threads flush the final frames (error events) before
     * the daemon closes the sockets; bounded so a stuck client cannot hold
     * the exit. */
    for (int i = 0; i < 100 && atomic_load(&s->open_streams) > 0; i++) usleep(50 * 1000);
    MHD_stop_daemon(d);
    d = NULL;
    srv_engine_shutdown_save(s->eng);
    rc = 0;
out:
    if (d) MHD_stop_daemon(d);
    srv_queue_free(s->queue);
    srv_engine_free(s->eng);
    srv_toolmem_free(s->toolmem);
    srv_trace_close(s->trace);
    ds4_tokenizer_free(s->tok);
    ds4_model_free(s->model);
    srv_log("bye");
    return rc;
}
