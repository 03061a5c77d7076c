/* The job queue and the one engine worker thread (API.md §13), plus the job
 * object's lifecycle.
 *
 * FIFO fairness: jobs run strictly in arrival order, one at a time, to
 * completion.  The worker function is a parameter (srv_run_fn) that receives
 * one job; batching several sequences later means popping up to N jobs here
 * and handing the batch to a batched run function — nothing else in the
 * server depends on "one at a time".
 *
 * Thread-safety: push/len/busy from any thread (queue mutex); the run
 * function is only ever called from the worker thread. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "server/srv_int.h"

struct srv_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_job *head, *tail;
    size_t n;
    bool busy, stop;
    srv_run_fn run;
    void *user;
    pthread_t th;
    bool started;
};

static void *worker_main(void *arg) {
    srv_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        srv_job *j = q->head;
        if (!j) { pthread_mutex_unlock(&q->mu); break; }  /* stop and drained */
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        q->n--;
        q->busy = true;
        pthread_mutex_unlock(&q->mu);
        j->next = NULL;
        q->run(q->user, j);
        pthread_mutex_lock(&q->mu);
        q->busy = false;
        pthread_mutex_unlock(&q->mu);
        /* Streaming jobs have no waiter: the worker owns them to the end. */
        bool detached = j->detached;
        srv_job_mark_done(j);
        if (detached) srv_job_free(j);
    }
    return NULL;
}

srv_queue *srv_queue_new(srv_run_fn run, void *user, ds4_err *err) {
    srv_queue *q = calloc(1, sizeof *q);
    if (!q) { ds4_err_set(err, "out of memory"); return NULL; }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->run = run;
    q->user = user;
    if (pthread_create(&q->th, NULL, worker_main, q)) {
        ds4_err_set(err, "cannot start the worker thread");
        free(q);
        return NULL;
    }
    q->started = true;
    return q;
}

int srv_queue_push(srv_queue *q, srv_job *j, int max_queue) {
    pthread_mutex_lock(&q->mu);
    if (q->stop) { pthread_mutex_unlock(&q->mu); return -2; }
    if (max_queue > 0 && q->n >= (size_t)max_queue) { pthread_mutex_unlock(&q->mu); return -1; }
    j->next = NULL;
    if (q->tail) q->tail->next = j; else q->head = j;
    q->tail = j;
    q->n++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

size_t srv_queue_waiting(srv_queue *q) {
    pthread_mutex_lock(&q->mu);
    size_t n = q->n;
    pthread_mutex_unlock(&q->mu);
    return n;
}

bool srv_queue_busy(srv_queue *q) {
    pthread_mutex_lock(&q->mu);
    bool b = q->busy;
    pthread_mutex_unlock(&q->mu);
    return b;
}

void srv_queue_shutdown(srv_queue *q) {
    if (!q || !q->started) return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->th, NULL);
    q->started = false;
}

void srv_queue_free(srv_queue *q) {
    if (!q) return;
    srv_queue_shutdown(q);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

/* ---- jobs ---- */

srv_job *srv_job_new(srv_ctx *s, srv_req *r, const srv_out_vt *out, srv_stream *st, int fd) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->srv = s;
    j->req = r;
    j->out = out;
    j->stream = st;
    if (st) srv_stream_ref(st);
    j->fd = fd;
    atomic_init(&j->cancel, 0);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->created = (long)time(NULL);
    j->rs_index = j->msg_index = -1;
    return j;
}

void srv_job_free(srv_job *j) {
    if (!j) return;
    srv_req_free(j->req);
    if (j->stream) srv_stream_unref(j->stream);
    ds4_buf_free(&j->reasoning);
    ds4_buf_free(&j->content);
    ds4_buf_free(&j->sent_text);
    for (size_t i = 0; i < j->n_calls; i++) {
        free(j->calls[i].name);
        ds4_buf_free(&j->calls[i].args);
    }
    free(j->calls);
    free(j->stop_hit);
    free(j->body);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void srv_job_mark_done(srv_job *j) {
    if (j->stream) srv_stream_close(j->stream);
    pthread_mutex_lock(&j->mu);
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

void srv_job_wait(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

void srv_job_fail(srv_job *j, const srv_error *e) {
    j->err = *e;
    j->failed = true;
    j->finish = SRV_FIN_ERROR;
    if (j->out && j->out->fail) j->out->fail(j);
}

bool srv_job_cancelled(srv_job *j) {
    if (atomic_load(&j->cancel)) return true;
    if (atomic_load(&j->srv->shutting_down)) { atomic_store(&j->cancel, 1); return true; }
    if (j->stream && srv_stream_broken(j->stream)) { atomic_store(&j->cancel, 1); return true; }
    if (j->fd >= 0) {
        /* The request was read completely, so a readable socket means EOF
         * (or a reset): the client went away (API.md §13 disconnects). */
        struct pollfd p = {.fd = j->fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            atomic_store(&j->cancel, 1);
            return true;
        }
        if (p.revents & POLLIN) {
            char c;
            ssize_t k = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                atomic_store(&j->cancel, 1);
                return true;
            }
        }
    }
    return false;
}

srv_call *srv_job_add_call(srv_job *j, const char *name, const char *id_prefix) {
    if (j->n_calls == j->cap_calls) {
        size_t nc = j->cap_calls ? j->cap_calls * 2 : 4;
        srv_call *c = realloc(j->calls, nc * sizeof *c);
        if (!c) return NULL;
        j->calls = c;
        j->cap_calls = nc;
    }
    srv_call *c = &j->calls[j->n_calls];
    memset(c, 0, sizeof *c);
    c->name = strdup(name ? name : "");
    if (!c->name) return NULL;
    srv_random_id(c->id, sizeof c->id, id_prefix, 16);
    srv_random_id(c->item_id, sizeof c->item_id, "fc_", 12);
    c->out_index = -1;
    j->n_calls++;
    return c;
}
