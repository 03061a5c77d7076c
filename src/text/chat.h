/* DeepSeek V4 chat encoding: conversation structs -> exact prompt bytes.
 *
 * Implements shared/spec/ENCODING.md (sections 2-9, checklist 12), i.e. the
 * behaviour of DeepSeek's reference encoder encoding_dsv4.py, byte for byte:
 * tool messages folded into user turns and sorted by call order, earlier
 * reasoning dropped in thinking mode unless some message carries tools,
 * developer messages before the last user turn dropped, assistant openers
 * (<think> / </think>), DSML rendering of past tool calls, the tools block,
 * response_format, latest_reminder, quick-instruction tasks and the Think Max
 * prefix.  The result starts with the BOS string; the tokenizer matches the
 * added-token strings inside the text.
 *
 * Data model: a ds4_chat owns an array of ds4_chat_msg; every string in it is
 * owned by the chat (copied on the way in) and freed by ds4_chat_free().  The
 * setters below are the only supported way to fill it.  JSON never enters the
 * core API except as opaque JSON *text* (tool schemas, call arguments,
 * response_format), which the renderer re-serialises the way Python's
 * json.dumps(ensure_ascii=False) does, as the official encoder does.
 * ds4_chat_from_json() builds a chat from the OpenAI-style JSON of the
 * official test inputs (array of messages, or {"messages":[...],"tools":[...]}).
 *
 * Errors: functions take ds4_err * (may be NULL) and return -1 / NULL with a
 * message.  Thread-safety: a ds4_chat is a plain value; render is read-only
 * and may run concurrently on the same chat, mutation needs one owner. */
#ifndef DS4_TEXT_CHAT_H
#define DS4_TEXT_CHAT_H

#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

/* Special strings (ENCODING.md section 1). */
#define DS4_TOK_BOS        "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS4_TOK_EOS        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS4_TOK_USER       "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS4_TOK_ASSISTANT  "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define DS4_TOK_THINK      "<think>"
#define DS4_TOK_THINK_END  "</think>"
#define DS4_TOK_DSML       "\xef\xbd\x9c" "DSML\xef\xbd\x9c"
#define DS4_TOK_REMINDER   "<\xef\xbd\x9clatest_reminder\xef\xbd\x9c>"

/* Think Max needs at least this many context tokens (384 Ki); below it the
 * mode is silently downgraded to High (ENCODING.md section 4, ds4 rule). */
#define DS4_THINK_MAX_MIN_CTX 393216

typedef enum {
    DS4_ROLE_SYSTEM = 0,
    DS4_ROLE_DEVELOPER,
    DS4_ROLE_USER,
    DS4_ROLE_ASSISTANT,
    DS4_ROLE_TOOL,             /* tool result; "function" is an alias */
    DS4_ROLE_LATEST_REMINDER,
} ds4_chat_role;

/* Quick-instruction tasks (ENCODING.md section 9). */
typedef enum {
    DS4_TASK_NONE = 0,
    DS4_TASK_ACTION,
    DS4_TASK_QUERY,
    DS4_TASK_AUTHORITY,
    DS4_TASK_DOMAIN,
    DS4_TASK_TITLE,
    DS4_TASK_READ_URL,
} ds4_chat_task;

typedef enum {
    DS4_THINK_NONE = 0,  /* chat mode: opener </think> */
    DS4_THINK_HIGH,      /* thinking: opener <think> */
    DS4_THINK_MAX,       /* thinking + MAX_EFFORT_PREFIX after BOS */
} ds4_think_mode;

typedef struct ds4_chat_tool_call {
    char *id;         /* owned; may be NULL (used to order tool results) */
    char *name;       /* owned, never NULL */
    char *arguments;  /* owned JSON text of the arguments (normally an object) */
} ds4_chat_tool_call;

typedef struct ds4_chat_msg {
    ds4_chat_role role;
    char *content;            /* owned; NULL = missing/null (renders as "") */
    char *reasoning_content;  /* owned; NULL = none */
    ds4_chat_tool_call *tool_calls;
    size_t n_tool_calls;
    char *tool_call_id;       /* owned; tool messages: id of the answered call */
    char *name;               /* owned; tool messages: function name (not rendered) */
    char **tools;             /* owned JSON texts of function objects {name,description,parameters} */
    size_t n_tools;
    char *response_format;    /* owned JSON text; NULL = none */
    ds4_chat_task task;
    int wo_eos;               /* assistant: omit the trailing EOS (prefill) */
} ds4_chat_msg;

typedef struct ds4_chat {
    ds4_chat_msg *msgs;
    size_t n, cap;
} ds4_chat;

typedef struct ds4_chat_opts {
    ds4_think_mode mode;
    size_t n_ctx;        /* context size in tokens; 0 = unknown (no Max downgrade) */
    int keep_reasoning;  /* 1 = official drop_thinking=False (never drop reasoning) */
    int no_bos;          /* 1 = do not write the BOS string */
} ds4_chat_opts;

ds4_chat *ds4_chat_new(ds4_err *err);
void ds4_chat_free(ds4_chat *c);

/* Appends (or inserts at pos <= n) a message; content is copied (NULL allowed).
 * The returned pointer is borrowed and valid until the next add/insert. */
ds4_chat_msg *ds4_chat_add(ds4_chat *c, ds4_chat_role role, const char *content, ds4_err *err);
ds4_chat_msg *ds4_chat_insert(ds4_chat *c, size_t pos, ds4_chat_role role, const char *content, ds4_err *err);

/* Setters copy their arguments.  set_* replace a previous value. */
int ds4_chat_msg_set_reasoning(ds4_chat_msg *m, const char *reasoning, ds4_err *err);
int ds4_chat_msg_set_tool_call_id(ds4_chat_msg *m, const char *id, ds4_err *err);
int ds4_chat_msg_set_name(ds4_chat_msg *m, const char *name, ds4_err *err);
/* arguments: JSON text as the client sent it (need not be valid JSON). */
int ds4_chat_msg_add_tool_call(ds4_chat_msg *m, const char *id, const char *name,
                               const char *arguments, ds4_err *err);
/* schema_json: one function object; must be valid JSON (checked). */
int ds4_chat_msg_add_tool(ds4_chat_msg *m, const char *schema_json, ds4_err *err);
int ds4_chat_msg_set_response_format(ds4_chat_msg *m, const char *json, ds4_err *err);

/* API-layer helper (ENCODING.md 6.1): attaches tool schemas to the first
 * system message, inserting an empty system message at the front if none. */
int ds4_chat_attach_tools(ds4_chat *c, const char *const *schemas_json, size_t n, ds4_err *err);

/* Max is downgraded to High when 0 < n_ctx < DS4_THINK_MAX_MIN_CTX. */
ds4_think_mode ds4_chat_effective_mode(ds4_think_mode mode, size_t n_ctx);

/* Renders the prompt.  Returns a malloc'd NUL-terminated string (free()),
 * its byte length in *len_out (may be NULL), or NULL with err set. */
char *ds4_chat_render(const ds4_chat *c, const ds4_chat_opts *opts, size_t *len_out, ds4_err *err);

/* Appends the DSML block of one assistant turn (ENCODING.md 6.2):
 * "\n\n<｜DSML｜tool_calls>\n" invokes "\n</｜DSML｜tool_calls>".  Arguments that
 * are not a JSON object become one string parameter named "arguments". */
int ds4_chat_render_tool_calls(ds4_buf *out, const ds4_chat_tool_call *calls, size_t n, ds4_err *err);

/* Re-serialises JSON text like Python json.dumps(v, ensure_ascii=False):
 * ", " / ": " separators, key order kept, non-ASCII raw.  Appends to out. */
int ds4_json_pyformat(ds4_buf *out, const char *json, size_t len, ds4_err *err);

/* Builds a chat from OpenAI-style JSON: an array of messages, or an object
 * with "messages" and optional "tools" (attached via ds4_chat_attach_tools).
 * Accepts roles system/developer/user/assistant/tool/function/latest_reminder
 * (missing role = user), content as string/null/array of parts,
 * reasoning_content, tool_calls[{id,function{name,arguments}}] (arguments as
 * string or object), tool_call_id, name, tools (OpenAI wrappers unwrapped),
 * response_format, task, wo_eos.  Unknown keys (e.g. "mask") are ignored. */
ds4_chat *ds4_chat_from_json(const char *json, size_t len, ds4_err *err);
ds4_chat *ds4_chat_from_file(const char *path, ds4_err *err);

const char *ds4_chat_role_name(ds4_chat_role r);
int ds4_chat_role_parse(const char *s, ds4_chat_role *out);  /* 0 ok, -1 unknown */
const char *ds4_chat_task_name(ds4_chat_task t);              /* "" for NONE */
int ds4_chat_task_parse(const char *s, ds4_chat_task *out);

#endif
