/* SHA-1 (FIPS 180-4) and CRC-32 (IEEE 802.3, reflected, as zlib's crc32).
 *
 * Used by the disk KV cache (API.md §18): SHA-1 of the key text names a
 * checkpoint file, CRC-32 guards its bytes against torn or corrupted writes.
 * Neither is used for security.  Plain value types, no allocation; a
 * context belongs to one thread. */
#ifndef DS4_UTIL_SHA1_H
#define DS4_UTIL_SHA1_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds4_sha1 {
    uint32_t h[5];
    uint64_t len;          /* bytes hashed so far */
    unsigned char buf[64];
    size_t n;              /* bytes in buf */
} ds4_sha1;

void ds4_sha1_init(ds4_sha1 *c);
void ds4_sha1_update(ds4_sha1 *c, const void *data, size_t n);
void ds4_sha1_final(ds4_sha1 *c, unsigned char out[20]);
/* 40 lowercase hex digits + NUL of SHA-1(data). */
void ds4_sha1_hex(const void *data, size_t n, char out[41]);

/* crc = ds4_crc32(0, ...) to start; feed the previous value to continue. */
uint32_t ds4_crc32(uint32_t crc, const void *data, size_t n);

#endif
