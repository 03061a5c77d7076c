/* ds4-server: the local OpenAI + Anthropic compatible HTTP server.
 * Thin main; everything lives in src/server (see server/server.h). */
#include <stdio.h>

#include "server/server.h"

int main(int argc, char **argv) {
    srv_config cfg;
    srv_config_default(&cfg);
    ds4_err err = {{0}};
    int rc = srv_parse_args(&cfg, argc, argv, &err);
    if (rc == 1) return 0;
    if (rc < 0) {
        fprintf(stderr, "ds4-server: %s\n", err.msg);
        return 2;
    }
    if (srv_run(&cfg, &err)) {
        fprintf(stderr, "ds4-server: %s\n", err.msg);
        return 1;
    }
    return 0;
}
