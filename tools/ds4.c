/* ds4: the DwarfStar command line (chat, one-shot prompts, --demo, token
 * dumps and the engine checking hook --dump-logits).  The logic lives in
 * src/cli/ (see cli.h for the map); this file is only the entry point. */
#include "cli/cli.h"

int main(int argc, char **argv) { return ds4_cli_main(argc, argv); }
