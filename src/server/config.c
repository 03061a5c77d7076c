/* Server configuration: defaults and command-line flags (API.md §2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"
#include "util/num.h"

void srv_config_default(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->model_path = "./ds4flash.gguf";
    c->host = "127.0.0.1";
    c->port = 8000;
    c->ctx = 32768;
    c->default_max_tokens = 393216;
    c->max_body_bytes = (size_t)64 << 20;
    c->served_model_name = SRV_DEFAULT_MODEL;
    c->default_think = DS4_THINK_HIGH;
    c->kv_disk_space_mb = 4096;
    c->kv_min_tokens = 512;
    c->kv_cold_max_tokens = 30000;
    c->kv_continued_interval = 10000;
    c->kv_trim_tokens = 32;
    c->kv_align_tokens = 2048;
    c->tool_memory_max_ids = 100000;
    c->keepalive_s = 2.5;
    const char *k = getenv("DS4_API_KEY");
    if (k && *k) c->api_key = k;
}

void srv_usage(void *file) {
    fprintf(file,
            "usage: ds4-server -m MODEL.gguf [options]\n"
            "  -m, --model PATH            model file (default ./ds4flash.gguf)\n"
            "  --host HOST                 bind address (default 127.0.0.1; localhost = 127.0.0.1)\n"
            "  --port N                    port (default 8000)\n"
            "  -c, --ctx N                 context tokens (default 32768; at most the model's\n"
            "                              context length)\n"
            "  -n, --tokens N              default max_tokens (default 393216)\n"
            "  -t, --threads N             engine threads (default: all CPUs)\n"
            "  --chunk N                   prefill chunk tokens (default: the engine batch)\n"
            "  --api-key KEY               require this key (or env DS4_API_KEY)\n"
            "  --cors                      add Access-Control-Allow-* headers\n"
            "  --max-body-mb N             request body limit (default 64; larger -> 413)\n"
            "  --max-body BYTES            the same in bytes\n"
            "  --max-queue N               queued-request cap (default 0 = unbounded)\n"
            "  --served-model-name NAME    advertised model id (default deepseek-v4-flash)\n"
            "  --default-think MODE        none, high (default) or max\n"
            "  --nothink                   same as --default-think none\n"
            "  --kv-disk-dir DIR           enable the disk KV cache in DIR\n"
            "  --kv-disk-space-mb N        disk budget (default 4096)\n"
            "  --kv-cache-min-tokens N     smallest prefix saved/loaded (default 512)\n"
            "  --kv-cache-cold-max-tokens N  largest first prompt with a cold save (default 30000; 0 off)\n"
            "  --kv-cache-continued-interval-tokens N  continued-save spacing (default 10000; 0 off)\n"
            "  --kv-cache-boundary-trim-tokens N   (default 32)\n"
            "  --kv-cache-boundary-align-tokens N  (default 2048)\n"
            "  --kv-cache-reject-different-quant\n"
            "  --tool-memory-max-ids N     exact DSML replay map size (default 100000)\n"
            "  --disable-exact-dsml-tool-replay\n"
            "  --trace FILE                trace prompts, cache decisions, outputs, tool events\n"
            "  --test-hooks                TEST ONLY: honour the x-ds4-test-output header\n"
            "  --test-force-output TEXT    TEST ONLY (needs --test-hooks): the next generation without the\n"
            "                              header emits TEXT (percent-decoded) then EOS; repeat the flag\n"
            "                              for later generations (used in order, then sampling resumes)\n");
    ds4_experts_usage(file);
}

int srv_parse_args(srv_config *c, int argc, char **argv, ds4_err *err) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
#define NEED() do { if (!v) return ds4_err_set(err, "%s needs an argument", a); i++; } while (0)
#define NUM(lo, hi) do { NEED(); if (ds4_parse_int(a, v, lo, hi, &x, err)) return -1; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { srv_usage(stdout); return 1; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED(); c->model_path = v; }
        else if (!strcmp(a, "--host")) { NEED(); c->host = v; }
        else if (!strcmp(a, "--port")) { NUM(0, 65535); c->port = (int)x; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NUM(16, 1 << 30); c->ctx = (uint32_t)x; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--tokens")) { NUM(1, 1LL << 40); c->default_max_tokens = x; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NUM(0, 4096); c->threads = (int)x; }
        else if (!strcmp(a, "--chunk")) { NUM(1, 1 << 20); c->chunk = (int)x; }
        else if (!strcmp(a, "--api-key")) { NEED(); c->api_key = *v ? v : NULL; }
        else if (!strcmp(a, "--cors")) c->cors = true;
        else if (!strcmp(a, "--max-body-mb")) { NUM(1, 1 << 20); c->max_body_bytes = (size_t)x << 20; }
        else if (!strcmp(a, "--max-body")) { NUM(1, 1LL << 40); c->max_body_bytes = (size_t)x; }
        else if (!strcmp(a, "--max-queue")) { NUM(0, 1 << 30); c->max_queue = (int)x; }
        else if (!strcmp(a, "--served-model-name")) { NEED(); c->served_model_name = v; }
        else if (!strcmp(a, "--nothink")) c->default_think = DS4_THINK_NONE;
        else if (!strcmp(a, "--default-think")) {
            NEED();
            if (!strcmp(v, "none")) c->default_think = DS4_THINK_NONE;
            else if (!strcmp(v, "high")) c->default_think = DS4_THINK_HIGH;
            else if (!strcmp(v, "max")) c->default_think = DS4_THINK_MAX;
            else return ds4_err_set(err, "--default-think: expected none, high or max, got '%s'", v);
        }
        else if (!strcmp(a, "--kv-disk-dir")) { NEED(); c->kv_disk_dir = v; }
        else if (!strcmp(a, "--kv-disk-space-mb")) { NUM(1, 1LL << 30); c->kv_disk_space_mb = (uint64_t)x; }
        else if (!strcmp(a, "--kv-cache-min-tokens")) { NUM(1, 1 << 30); c->kv_min_tokens = (uint32_t)x; }
        else if (!strcmp(a, "--kv-cache-cold-max-tokens")) { NUM(0, 1 << 30); c->kv_cold_max_tokens = (uint32_t)x; }
        else if (!strcmp(a, "--kv-cache-continued-interval-tokens")) { NUM(0, 1 << 30); c->kv_continued_interval = (uint32_t)x; }
        else if (!strcmp(a, "--kv-cache-boundary-trim-tokens")) { NUM(0, 1 << 30); c->kv_trim_tokens = (uint32_t)x; }
        else if (!strcmp(a, "--kv-cache-boundary-align-tokens")) { NUM(0, 1 << 30); c->kv_align_tokens = (uint32_t)x; }
        else if (!strcmp(a, "--kv-cache-reject-different-quant")) c->kv_reject_different_quant = true;
        else if (!strcmp(a, "--tool-memory-max-ids")) { NUM(1, 1 << 30); c->tool_memory_max_ids = (size_t)x; }
        else if (!strcmp(a, "--disable-exact-dsml-tool-replay")) c->disable_exact_replay = true;
        else if (!strcmp(a, "--trace")) { NEED(); c->trace_path = v; }
        else if (!strcmp(a, "--test-hooks")) c->test_hooks = true;
        else if (!strcmp(a, "--test-force-output")) {
            NEED();
            int cap = (int)(sizeof c->test_force / sizeof c->test_force[0]);
            if (c->n_test_force == cap) return ds4_err_set(err, "--test-force-output: at most %d", cap);
            c->test_force[c->n_test_force++] = v;
        }
        else {
            int xr = ds4_experts_parse_arg(&c->experts, argc, argv, &i, err);
            if (xr < 0) return -1;
            if (xr == 0) return ds4_err_set(err, "unknown option '%s' (see ds4-server --help)", a);
        }
#undef NEED
#undef NUM
    }
    /* A scripted output on a production server would answer real users. */
    if (c->n_test_force && !c->test_hooks) return ds4_err_set(err, "--test-force-output requires --test-hooks");
    return 0;
}
