/* ds4 entry point: parse, then dispatch to exactly one mode
 * (help, checking hook, --dump-tokens, one-shot, interactive; --demo first
 * prepares the demo model and then runs one-shot or interactive on it). */
#include <stdio.h>

#include "cli/cli.h"

int ds4_cli_main(int argc, char **argv) {
    ds4_cli_opts o;
    int rc = ds4_cli_parse(argc, argv, &o);
    if (rc) return rc;
    if (o.help) {
        ds4_cli_usage(stdout);
        return DS4_EXIT_OK;
    }
    if (o.dump_logits) return ds4_cli_dump_logits(&o);
    if (o.demo) {
        if ((rc = ds4_cli_demo_prepare(&o.model_path))) return rc;
        if (o.n_predict < 0) o.n_predict = DS4_CLI_DEMO_MAX_TOKENS;
    }
    if (o.dump_tokens) return ds4_cli_dump_tokens(&o);
    if (o.prompt || o.prompt_file) return ds4_cli_oneshot(&o);
    return ds4_cli_interactive(&o);
}
