/* Error bodies (API.md §12) and small shared helpers: JSON output, random ids,
 * clock, logging.  Error bodies come in two shapes: OpenAI
 * {"error":{message,type,param,code}} and Anthropic
 * {"type":"error","error":{type,message}}; both end with "\n". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "server/srv_int.h"
#include "text/tokenizer.h"

static const char *anth_type_for(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

int srv_err(srv_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...) {
    if (!e) return -1;
    e->status = status;
    e->type = type ? type : (status >= 500 ? "server_error" : "invalid_request_error");
    e->code = code;
    e->param = param;
    e->anth_type = anth_type_for(status);
    e->n_prompt = e->n_ctx = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

char *srv_json_dump(json_t *v, bool newline, size_t *len) {
    if (!v) return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (!s) return NULL;
    size_t n = strlen(s);
    if (newline) {
        char *t = realloc(s, n + 2);
        if (!t) { free(s); return NULL; }
        s = t;
        s[n++] = '\n';
        s[n] = 0;
    }
    if (len) *len = n;
    return s;
}

json_t *srv_json_strn(const char *s, size_t n) {
    if (!s) return json_string("");
    size_t bad;
    if (ds4_utf8_valid(s, n, &bad)) return json_stringn(s, n);
    ds4_buf b = {0};
    size_t i = 0;
    while (i < n) {
        if (ds4_utf8_valid(s + i, n - i, &bad)) { ds4_buf_append(&b, s + i, n - i); break; }
        ds4_buf_append(&b, s + i, bad);
        ds4_buf_puts(&b, "\xef\xbf\xbd");
        i += bad + 1;
    }
    json_t *v = json_stringn(b.data ? b.data : "", b.len);
    ds4_buf_free(&b);
    return v;
}

char *srv_error_body(const srv_error *e, bool anthropic, size_t *len) {
    json_t *o = json_object(), *in = json_object();
    if (anthropic) {
        json_object_set_new(o, "type", json_string("error"));
        json_object_set_new(in, "type", json_string(e->anth_type ? e->anth_type : anth_type_for(e->status)));
        json_object_set_new(in, "message", srv_json_strn(e->msg, strlen(e->msg)));
    } else {
        json_object_set_new(in, "message", srv_json_strn(e->msg, strlen(e->msg)));
        json_object_set_new(in, "type", json_string(e->type ? e->type : "invalid_request_error"));
        json_object_set_new(in, "param", e->param ? json_string(e->param) : json_null());
        json_object_set_new(in, "code", e->code ? json_string(e->code) : json_null());
    }
    if (e->n_prompt > 0) {
        json_object_set_new(in, "n_prompt_tokens", json_integer(e->n_prompt));
        json_object_set_new(in, "n_ctx", json_integer(e->n_ctx));
    }
    json_object_set_new(o, "error", in);
    return srv_json_dump(o, true, len);
}

void srv_random_id(char *out, size_t cap, const char *prefix, size_t nbytes) {
    unsigned char r[32];
    if (nbytes > sizeof r) nbytes = sizeof r;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t k = getrandom(r + got, nbytes - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (got < nbytes) {
        /* The OS RNG is not expected to fail; never hand out a predictable id
         * silently, but do not crash either: mix in the clock and log it. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
        for (size_t i = got; i < nbytes; i++) { x ^= x >> 29; x *= 0xbf58476d1ce4e5b9ull; r[i] = (unsigned char)(x >> 56); }
        srv_log("warning: getrandom failed; tool id built from the clock");
    }
    size_t p = (size_t)snprintf(out, cap, "%s", prefix);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nbytes && p + 2 < cap; i++) {
        out[p++] = hex[r[i] >> 4];
        out[p++] = hex[r[i] & 15];
    }
    if (p < cap) out[p] = 0;
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void srv_log(const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    fprintf(stderr, "%02d:%02d:%02d ds4-server: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, line);
    fflush(stderr);
}
