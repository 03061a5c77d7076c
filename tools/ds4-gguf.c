/* ds4-gguf FILE: print a GGUF file's header, metadata and tensor directory.
 *
 * Arrays show their first few elements, long strings are cut, control bytes
 * are escaped.  All parsing and validation is gguf_open(), so a file this
 * tool prints is a file the engine can open. */
#include "gguf/gguf.h"
#include "quant/quant.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define ARR_SHOW 8
#define STR_SHOW 64

static void put_str(gguf_str s) {
    putchar('"');
    for (uint64_t i = 0; i < s.len && i < STR_SHOW; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    printf(s.len > STR_SHOW ? "\"...(%" PRIu64 " bytes)" : "\"", s.len);
}

/* One scalar at p of type t. */
static void put_scalar(enum gguf_vtype t, const uint8_t *p) {
    union { uint8_t b[8]; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
            uint64_t u64; int64_t i64; double f64; } v;
    memcpy(v.b, p, gguf_vtype_size(t)); /* file is little-endian, as is the host */
    switch (t) {
    case GGUF_TYPE_UINT8: printf("%u", v.b[0]); break;
    case GGUF_TYPE_INT8: printf("%d", (int8_t)v.b[0]); break;
    case GGUF_TYPE_UINT16: printf("%u", v.u16); break;
    case GGUF_TYPE_INT16: printf("%d", v.i16); break;
    case GGUF_TYPE_UINT32: printf("%" PRIu32, v.u32); break;
    case GGUF_TYPE_INT32: printf("%" PRId32, v.i32); break;
    case GGUF_TYPE_FLOAT32: printf("%.9g", v.f32); break;
    case GGUF_TYPE_BOOL: printf("%s", v.b[0] ? "true" : "false"); break;
    case GGUF_TYPE_UINT64: printf("%" PRIu64, v.u64); break;
    case GGUF_TYPE_INT64: printf("%" PRId64, v.i64); break;
    case GGUF_TYPE_FLOAT64: printf("%.17g", v.f64); break;
    default: printf("?"); break;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.gguf\n", argv[0]);
        return 2;
    }
    ds4_err err = {{0}};
    gguf_file *f = gguf_open(argv[1], &err);
    if (!f) {
        fprintf(stderr, "ds4-gguf: %s\n", err.msg);
        return 1;
    }
    printf("%s: GGUF v%u, %zu bytes, alignment %u, data section at %" PRIu64 "\n", gguf_path(f), gguf_version(f),
           gguf_file_size(f), gguf_alignment(f), gguf_data_offset(f));

    printf("\nmetadata: %" PRId64 " keys\n", gguf_n_kv(f));
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        printf("  %-48.*s ", (int)(kv->key.len < 200 ? kv->key.len : 200), kv->key.ptr);
        if (kv->type == GGUF_TYPE_STRING) {
            gguf_str s;
            uint64_t n;
            memcpy(&n, kv->val, 8);
            s.len = n;
            s.ptr = (const char *)kv->val + 8;
            printf("%-8s ", "string");
            put_str(s);
        } else if (kv->type == GGUF_TYPE_ARRAY) {
            char ty[32];
            snprintf(ty, sizeof ty, "%s[%" PRIu64 "]", gguf_type_name(kv->arr_type), kv->arr_n);
            printf("%-8s [", ty);
            size_t es = gguf_vtype_size(kv->arr_type);
            for (uint64_t j = 0; j < kv->arr_n && j < ARR_SHOW; j++) {
                if (j) printf(", ");
                if (kv->arr_type == GGUF_TYPE_STRING) put_str(gguf_arr_str(kv, j));
                else put_scalar(kv->arr_type, kv->val + j * es);
            }
            printf(kv->arr_n > ARR_SHOW ? ", ...]" : "]");
        } else {
            printf("%-8s ", gguf_type_name(kv->type));
            put_scalar(kv->type, kv->val);
        }
        putchar('\n');
    }

    uint64_t total = 0;
    printf("\ntensors: %" PRId64 "\n", gguf_n_tensors(f));
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[128];
        int o = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
        snprintf(shape + o, sizeof shape - (size_t)o, "]");
        printf("  %-48.*s %-8s %-24s offset %-12" PRIu64 " %" PRIu64 " bytes\n", (int)(t->name.len < 200 ? t->name.len : 200), t->name.ptr,
               ds4_type_name(t->type), shape, t->offset, t->nbytes);
        total += t->nbytes;
    }
    printf("\ntensor data: %" PRIu64 " bytes (%.2f GiB)\n", total, (double)total / (1u << 30));
    gguf_close(f);
    return 0;
}
