/* Streaming parser of DeepSeek V4 model output: reasoning, text, DSML calls.
 *
 * Feed the decoded output text in chunks of any size (down to single bytes);
 * the parser calls back with events in order.  Chunk boundaries never change
 * the result: after merging adjacent deltas of the same kind the event
 * sequence is identical for every split (tests/test_dsml.c checks all splits).
 *
 * Grammar (ENCODING.md 6.2, API.md 6.4/6.5 and Appendix A), with P one of
 * "｜DSML｜" (canonical), "DSML｜" or "" (tolerated variants; one per block):
 *   block  = ws* "<P tool_calls>" ws* (invoke ws*)+ "</P tool_calls>"
 *   invoke = "<P invoke" ws+ 'name="NAME"' ws* ">" ws* (param ws*)* "</P invoke>"
 *   param  = "<P parameter" ws+ 'name="KEY"' ws+ 'string="true|false"' ws* ">"
 *            VALUE "</P parameter>"
 * string="true" values are raw text (official encoder: nothing escaped) and
 * become JSON strings; string="false" values must be JSON (checked with
 * jansson) and are inserted as they are.  Arguments are streamed as compact
 * JSON: "{", "\"k\":" (with "," before all but the first) and, for strings,
 * the opening quote, then value bytes, the closing quote, and "}".  The
 * concatenated TOOL_ARGS deltas of a call equal its final `arguments`.
 * Entities (&lt; &amp; ..., API.md Appendix A, a ds4 convention) are NOT
 * unescaped: our renderer follows the official encoder, which never escapes,
 * so unescaping would corrupt values such as "&amp;" and break round trips.
 * Nested-object parameter bodies (a tolerated ds4 variant) are not accepted.
 *
 * Rules:
 * - Reasoning: when start_in_reasoning is set (prompt ended in <think>),
 *   output is reasoning until "</think>" (REASONING_END, never emitted as
 *   text); a repeated leading "<think>" is swallowed (IGNORED event).
 * - Text: a DSML block opener ends visible text; whitespace right before it
 *   belongs to the block (it is syntax, API.md 6.5).  Trailing whitespace and
 *   any suffix that could start an opener are held back until disambiguated,
 *   so no partial marker is ever emitted as text.
 * - Calls stream live: TOOL_START when the invoke tag is complete, TOOL_ARGS
 *   deltas, TOOL_END when "</P invoke>" closes it with valid JSON arguments,
 *   CALLS_END when the block closes (the server stops generating there).
 * - Malformed DSML (garbage between tags, bad names, duplicate parameter,
 *   invalid JSON value, empty block, unterminated block at finish) is never
 *   executed: an ERROR event is emitted (index = first call index of the
 *   block; the consumer must retract calls >= index it has already seen)
 *   followed by the whole raw block as TEXT; parsing resumes after it.
 * - DSML inside reasoning is not a call (API.md 6.5) unless it is the tail of
 *   the output: a complete block followed by nothing but whitespace up to
 *   finish counts as the action with an implicit </think> (REASONING_END
 *   with empty raw).  Its events are held until that is known; otherwise the
 *   block comes out as reasoning, without an ERROR.
 * - No EOS handling: the engine stops on the EOS token and never feeds it.
 *
 * Byte accounting: every input byte is in the `raw` of exactly one event,
 * except that after an ERROR the raw of that block's earlier tool events is
 * superseded by the TEXT event that repeats the block.  Deltas are cut at
 * UTF-8 character boundaries (an incomplete trailing sequence waits for the
 * next chunk; finish() flushes whatever remains).
 *
 * Ownership: the parser copies what it needs; event pointers are valid only
 * during the callback.  Errors: -1 with ds4_err only for out-of-memory or
 * misuse (feed after finish); malformed model output is not an error.
 * Thread-safety: one parser per stream, one thread at a time. */
#ifndef DS4_TEXT_DSML_H
#define DS4_TEXT_DSML_H

#include <stddef.h>

#include "util/err.h"

typedef enum {
    DS4_DSML_REASONING = 0, /* data: reasoning text delta */
    DS4_DSML_REASONING_END, /* "</think>" seen (raw) or implied (raw empty) */
    DS4_DSML_TEXT,          /* data: visible text delta */
    DS4_DSML_TOOL_START,    /* index, name */
    DS4_DSML_TOOL_ARGS,     /* index, name, data: arguments JSON fragment */
    DS4_DSML_TOOL_END,      /* index, name, data: complete arguments object (JSON text) */
    DS4_DSML_CALLS_END,     /* the tool_calls block closed */
    DS4_DSML_ERROR,         /* data: message; index: first retracted call index */
    DS4_DSML_IGNORED,       /* raw bytes deliberately dropped (repeated leading <think>) */
} ds4_dsml_event_type;

typedef struct ds4_dsml_event {
    ds4_dsml_event_type type;
    int index;          /* tool call index (0-based, per stream); -1 if n/a */
    const char *name;   /* tool name for TOOL_*; NULL otherwise */
    const char *data;   /* payload (see types); NUL-terminated */
    size_t len;
    const char *raw;    /* input bytes this event accounts for */
    size_t raw_len;
} ds4_dsml_event;

typedef void (*ds4_dsml_cb)(void *user, const ds4_dsml_event *ev);

typedef struct ds4_dsml_opts {
    int start_in_reasoning; /* prompt ended with <think> */
    int no_tools;           /* tool_choice none / no tools: DSML is plain text */
} ds4_dsml_opts;

typedef struct ds4_dsml_parser ds4_dsml_parser;

ds4_dsml_parser *ds4_dsml_new(const ds4_dsml_opts *opts, ds4_dsml_cb cb, void *user, ds4_err *err);
/* Processes a chunk; events for everything decidable are delivered. */
int ds4_dsml_feed(ds4_dsml_parser *p, const char *data, size_t len, ds4_err *err);
/* End of output: flushes held bytes and resolves open blocks. */
int ds4_dsml_finish(ds4_dsml_parser *p, ds4_err *err);
int ds4_dsml_in_reasoning(const ds4_dsml_parser *p);  /* still before </think> */
int ds4_dsml_in_block(const ds4_dsml_parser *p);      /* inside a DSML block in text */
void ds4_dsml_free(ds4_dsml_parser *p);

/* Whole-output convenience built on the streaming parser. */
typedef struct ds4_dsml_call {
    char *name;       /* owned */
    char *arguments;  /* owned compact JSON object */
} ds4_dsml_call;

typedef struct ds4_dsml_result {
    char *reasoning;  /* owned, "" if none */
    char *content;    /* owned visible text (includes recovered malformed DSML) */
    ds4_dsml_call *calls;
    size_t n_calls;
    int reasoning_closed; /* "</think>" seen or implied */
    int n_errors;         /* malformed blocks recovered as text */
} ds4_dsml_result;

int ds4_dsml_parse_all(const char *text, size_t len, int start_in_reasoning, ds4_dsml_result *out, ds4_err *err);
void ds4_dsml_result_free(ds4_dsml_result *r);

#endif
