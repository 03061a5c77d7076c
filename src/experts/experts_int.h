/* Internal interface of src/experts: the read backend (io.c) the store uses.
 *
 * A read request covers the file extent [off, off+len) and lands at dst,
 * where (dst - off) is a multiple of DS4_XIO_ALIGN and the buffer has
 * DS4_XIO_ALIGN bytes of slack before dst and after dst+len: with O_DIRECT the
 * backend widens the extent to aligned boundaries, which then stay inside the
 * buffer.  Completions carry the caller's tag and 0 or -errno.  In pread mode
 * requests complete at submission and are handed back by xio_wait in order,
 * so the store has one code path. */
#ifndef DS4_EXPERTS_INT_H
#define DS4_EXPERTS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define DS4_XIO_ALIGN 4096u

typedef struct xio xio;

xio *xio_open(const char *path, bool want_direct, bool want_uring, int queue_depth, ds4_err *err);
void xio_close(xio *io);
bool xio_direct(const xio *io);
bool xio_uring(const xio *io);
uint64_t xio_file_size(const xio *io);

/* Queues a read; *bytes receives the bytes the device will transfer.  Fails
 * only on a submission error (the message names it). */
int xio_submit(xio *io, void *dst, uint64_t off, uint64_t len, uint64_t tag, uint64_t *bytes, ds4_err *err);
/* Queues a completion that failed with res (-errno) without any I/O: the
 * error-injection hook and submission failures go through the normal path. */
void xio_fail(xio *io, uint64_t tag, int res);
/* Hands queued requests to the kernel (io_uring_submit). */
void xio_flush(xio *io);
/* Next completion: returns 1 with *tag and *res set, 0 when nothing is in flight. */
int xio_wait(xio *io, uint64_t *tag, int *res);
int xio_inflight(const xio *io);

#endif
