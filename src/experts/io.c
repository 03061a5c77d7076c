/* Expert reads: io_uring with a pread fallback, O_DIRECT where allowed.
 * Contract in experts_int.h.
 *
 * O_DIRECT bypasses the page cache, so streamed experts do not push the
 * dense weights out of it and the process does not pay for a second copy.
 * It needs the offset, length and buffer aligned to the device's logical
 * block size; DS4_XIO_ALIGN (4096) covers every common device.  Whether the
 * filesystem allows it is only known by trying: open() may refuse O_DIRECT
 * (EINVAL) and some filesystems accept the flag but refuse the read, so the
 * backend probes one aligned read at open and, should a later direct read
 * still fail with EINVAL, redoes it buffered and stays buffered. */
#include "experts/experts_int.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct xreq {
    uint8_t *dst;
    uint64_t off, len, tag;
    bool used, direct;           /* direct: submitted on the O_DIRECT fd (aligned extent) */
    int next_free;
} xreq;

typedef struct xdone {
    uint64_t tag;
    int res;
} xdone;

struct xio {
    int fd, dfd;                 /* buffered; O_DIRECT (-1 if not available) */
    bool uring;
    struct io_uring ring;
    int qd;
    uint64_t size;
    xreq *reqs;                  /* qd request records, indexed by user_data */
    int free_head;
    int inflight;                /* handed to io_uring, not yet reaped */
    int queued;                  /* prepared SQEs not yet submitted */
    xdone *done;                 /* completions ready for xio_wait (FIFO) */
    int done_head, done_n, done_cap;
};

static uint64_t align_down(uint64_t v) { return v & ~(uint64_t)(DS4_XIO_ALIGN - 1); }
static uint64_t align_up(uint64_t v) { return align_down(v + DS4_XIO_ALIGN - 1); }

/* Reads [off, off+len) of fd into p; short only at EOF (-EIO then). */
static int pread_full(int fd, uint8_t *p, uint64_t off, uint64_t len) {
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -EIO; /* unexpected end of file */
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return 0;
}

/* The aligned extent a direct read of [off, off+len) transfers, and how many
 * of its bytes must arrive (it may run past EOF). */
static void direct_extent(const xio *io, uint64_t off, uint64_t len, uint64_t *aoff, uint64_t *alen, uint64_t *need) {
    *aoff = align_down(off);
    *alen = align_up(off + len) - *aoff;
    *need = off + len - *aoff;
    (void)io;
}

/* Synchronous read of a request: direct when possible, buffered otherwise
 * (and buffered again if the direct read is refused). */
static int sync_read(xio *io, uint8_t *dst, uint64_t off, uint64_t len) {
    if (io->dfd >= 0) {
        uint64_t aoff, alen, need;
        direct_extent(io, off, len, &aoff, &alen, &need);
        uint8_t *p = dst - (off - aoff);
        uint64_t got = 0;
        int rc = 0;
        while (got < need) {
            ssize_t r = pread(io->dfd, p + got, alen - got, (off_t)(aoff + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) { rc = -errno; break; }
            if (r == 0) { rc = -EIO; break; }
            got += (uint64_t)r;
            if (got < need && (got % DS4_XIO_ALIGN)) { /* unaligned tail: finish buffered */
                return pread_full(io->fd, p + got, aoff + got, need - got);
            }
        }
        if (rc != -EINVAL) return rc;
        close(io->dfd); /* the filesystem refuses O_DIRECT here: stay buffered */
        io->dfd = -1;
    }
    return pread_full(io->fd, dst, off, len);
}

static void push_done(xio *io, uint64_t tag, int res) {
    if (io->done_n == io->done_cap) {
        int cap = io->done_cap ? io->done_cap * 2 : 64;
        xdone *d = malloc(sizeof *d * (size_t)cap);
        if (!d) abort(); /* a few bytes per request; nothing sensible to do without them */
        for (int i = 0; i < io->done_n; i++) d[i] = io->done[(io->done_head + i) % io->done_cap];
        free(io->done);
        io->done = d;
        io->done_cap = cap;
        io->done_head = 0;
    }
    io->done[(io->done_head + io->done_n) % io->done_cap] = (xdone){tag, res};
    io->done_n++;
}

xio *xio_open(const char *path, bool want_direct, bool want_uring, int queue_depth, ds4_err *err) {
    xio *io = calloc(1, sizeof *io);
    if (!io) { ds4_err_set(err, "out of memory"); return NULL; }
    io->dfd = -1;
    io->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (io->fd < 0) {
        ds4_err_set(err, "%s: cannot open for expert reads: %s", path, strerror(errno));
        free(io);
        return NULL;
    }
    struct stat st;
    if (fstat(io->fd, &st) == 0) io->size = (uint64_t)st.st_size;
    if (want_direct) {
        io->dfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
        if (io->dfd >= 0) { /* probe: some filesystems accept the flag but not the read */
            void *b = NULL;
            if (posix_memalign(&b, DS4_XIO_ALIGN, DS4_XIO_ALIGN) == 0) {
                ssize_t r = pread(io->dfd, b, DS4_XIO_ALIGN, 0);
                if (r < 0) { close(io->dfd); io->dfd = -1; }
                free(b);
            }
        }
    }
    io->qd = queue_depth > 0 ? queue_depth : 256;
    if (want_uring && io_uring_queue_init((unsigned)io->qd, &io->ring, 0) == 0) io->uring = true;
    if (io->uring) {
        io->reqs = calloc((size_t)io->qd, sizeof *io->reqs);
        if (!io->reqs) { xio_close(io); ds4_err_set(err, "out of memory"); return NULL; }
        for (int i = 0; i < io->qd; i++) io->reqs[i].next_free = i + 1 < io->qd ? i + 1 : -1;
        io->free_head = 0;
    }
    return io;
}

void xio_close(xio *io) {
    if (!io) return;
    uint64_t tag;
    int res;
    while (io->inflight && xio_wait(io, &tag, &res) == 1) {}
    if (io->uring) io_uring_queue_exit(&io->ring);
    if (io->dfd >= 0) close(io->dfd);
    if (io->fd >= 0) close(io->fd);
    free(io->reqs);
    free(io->done);
    free(io);
}

bool xio_direct(const xio *io) { return io->dfd >= 0; }
bool xio_uring(const xio *io) { return io->uring; }
uint64_t xio_file_size(const xio *io) { return io->size; }
int xio_inflight(const xio *io) { return io->inflight + io->done_n; }

/* Reaps one io_uring completion (blocking) into the done queue, finishing
 * short reads and refused direct reads synchronously. */
static void reap_one(xio *io) {
    struct io_uring_cqe *cqe;
    int rc;
    if (io->queued) { io_uring_submit(&io->ring); io->queued = 0; }
    do rc = io_uring_wait_cqe(&io->ring, &cqe);
    while (rc == -EINTR);
    if (rc < 0) abort(); /* only with a broken ring: requests would be lost */
    int id = (int)io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&io->ring, cqe);
    io->inflight--;
    xreq *r = &io->reqs[id];
    int out = 0;
    if (res == -EINVAL && r->direct) {
        if (io->dfd >= 0) close(io->dfd); /* refused at read time: redo buffered and stay buffered */
        io->dfd = -1;
        out = pread_full(io->fd, r->dst, r->off, r->len);
    } else if (res < 0) {
        out = res;
    } else {
        /* A direct request transferred from the aligned start; a buffered one from off. */
        uint64_t start = r->off, need = r->len;
        uint8_t *p = r->dst;
        if (r->direct) {
            uint64_t aoff, alen;
            direct_extent(io, r->off, r->len, &aoff, &alen, &need);
            start = aoff;
            p = r->dst - (r->off - aoff);
        }
        if ((uint64_t)res < need) {
            if (res == 0) out = -EIO;
            else out = pread_full(io->fd, p + res, start + (uint64_t)res, need - (uint64_t)res);
        }
    }
    push_done(io, r->tag, out);
    r->used = false;
    r->next_free = io->free_head;
    io->free_head = id;
}

int xio_submit(xio *io, void *dst, uint64_t off, uint64_t len, uint64_t tag, uint64_t *bytes, ds4_err *err) {
    uint8_t *d = dst;
    if ((uintptr_t)d % DS4_XIO_ALIGN != off % DS4_XIO_ALIGN)
        return ds4_err_set(err, "expert read buffer misaligned (internal error)");
    uint64_t aoff, alen, need;
    direct_extent(io, off, len, &aoff, &alen, &need);
    if (bytes) *bytes = io->dfd >= 0 ? alen : len;
    if (!io->uring) {
        push_done(io, tag, sync_read(io, d, off, len));
        return 0;
    }
    while (io->free_head < 0) reap_one(io); /* all request records busy */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    if (!sqe) {
        io_uring_submit(&io->ring);
        io->queued = 0;
        sqe = io_uring_get_sqe(&io->ring);
        if (!sqe) return ds4_err_set(err, "io_uring: no submission entry available");
    }
    int id = io->free_head;
    xreq *r = &io->reqs[id];
    io->free_head = r->next_free;
    *r = (xreq){d, off, len, tag, true, io->dfd >= 0, -1};
    if (r->direct) io_uring_prep_read(sqe, io->dfd, d - (off - aoff), (unsigned)alen, aoff);
    else io_uring_prep_read(sqe, io->fd, d, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, (uint64_t)id);
    io->inflight++;
    io->queued++;
    return 0;
}

void xio_fail(xio *io, uint64_t tag, int res) { push_done(io, tag, res); }

void xio_flush(xio *io) {
    if (io->uring && io->queued) {
        io_uring_submit(&io->ring);
        io->queued = 0;
    }
}

int xio_wait(xio *io, uint64_t *tag, int *res) {
    if (!io->done_n) {
        if (!io->uring || !io->inflight) return 0;
        reap_one(io);
    }
    xdone d = io->done[io->done_head];
    io->done_head = (io->done_head + 1) % io->done_cap;
    io->done_n--;
    *tag = d.tag;
    *res = d.res;
    return 1;
}
