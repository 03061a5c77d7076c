/* SSE channel between the worker (producer) and the connection thread
 * (consumer, inside libmicrohttpd's content-reader callback).
 *
 * The producer appends whole frames under the mutex, so the consumer never
 * sees half a frame and a keep-alive can be inserted between any two reads.
 * Keep-alives are timer driven (API.md §14): the consumer waits at most
 * keepalive_s for data and, if nothing was sent for that long, hands out the
 * current keep-alive frame (": keep-alive" comment, or an Anthropic ping once
 * message_start was sent).  A long prefill chunk therefore never silences the
 * socket.  Writes after the consumer is gone fail, which is how the worker
 * learns of a disconnect while streaming.  Reference counted: the job and
 * the MHD response each hold one reference. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/srv_int.h"

struct srv_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ds4_buf buf;          /* pending bytes, consumed from the front */
    bool closed, broken;
    char *keepalive;      /* owned frame text */
    double keepalive_s;
    double last_out;      /* monotonic time of the last bytes handed out */
    int refs;
};

srv_stream *srv_stream_new(double keepalive_s) {
    srv_stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    st->keepalive = strdup(": keep-alive\n\n");
    st->keepalive_s = keepalive_s > 0 ? keepalive_s : 2.5;
    st->last_out = srv_now();
    st->refs = 1;
    return st;
}

void srv_stream_ref(srv_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->refs++;
    pthread_mutex_unlock(&st->mu);
}

void srv_stream_unref(srv_stream *st) {
    if (!st) return;
    pthread_mutex_lock(&st->mu);
    int left = --st->refs;
    pthread_mutex_unlock(&st->mu);
    if (left) return;
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    ds4_buf_free(&st->buf);
    free(st->keepalive);
    free(st);
}

int srv_stream_write(srv_stream *st, const char *data, size_t n) {
    pthread_mutex_lock(&st->mu);
    int rc = -1;
    if (!st->broken && !st->closed && ds4_buf_append(&st->buf, data, n) == 0) rc = 0;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int srv_stream_event(srv_stream *st, const char *name, json_t *obj) {
    size_t n;
    char *js = srv_json_dump(obj, false, &n);
    if (!js) return -1;
    ds4_buf f = {0};
    if (name) ds4_buf_printf(&f, "event: %s\n", name);
    ds4_buf_puts(&f, "data: ");
    ds4_buf_append(&f, js, n);
    ds4_buf_puts(&f, "\n\n");
    free(js);
    int rc = f.data ? srv_stream_write(st, f.data, f.len) : -1;
    ds4_buf_free(&f);
    return rc;
}

int srv_stream_data_raw(srv_stream *st, const char *text) {
    ds4_buf f = {0};
    ds4_buf_printf(&f, "data: %s\n\n", text);
    int rc = f.data ? srv_stream_write(st, f.data, f.len) : -1;
    ds4_buf_free(&f);
    return rc;
}

void srv_stream_set_keepalive(srv_stream *st, const char *frame) {
    char *k = strdup(frame);
    if (!k) return;
    pthread_mutex_lock(&st->mu);
    free(st->keepalive);
    st->keepalive = k;
    pthread_mutex_unlock(&st->mu);
}

void srv_stream_close(srv_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->closed = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void srv_stream_break(srv_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->broken = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

bool srv_stream_broken(srv_stream *st) {
    pthread_mutex_lock(&st->mu);
    bool b = st->broken;
    pthread_mutex_unlock(&st->mu);
    return b;
}

ssize_t srv_stream_read(srv_stream *st, char *buf, size_t max) {
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->buf.len) {
            size_t n = st->buf.len < max ? st->buf.len : max;
            memcpy(buf, st->buf.data, n);
            ds4_buf_consume(&st->buf, n);
            st->last_out = srv_now();
            pthread_mutex_unlock(&st->mu);
            return (ssize_t)n;
        }
        if (st->closed || st->broken) {
            pthread_mutex_unlock(&st->mu);
            return -1;
        }
        double now = srv_now(), due = st->last_out + st->keepalive_s;
        if (now >= due) {
            size_t n = strlen(st->keepalive);
            if (n > max) n = max;
            memcpy(buf, st->keepalive, n);
            st->last_out = now;
            pthread_mutex_unlock(&st->mu);
            return (ssize_t)n;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double wait = due - now;
        ts.tv_sec += (time_t)wait;
        ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    }
}
