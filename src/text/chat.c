/* DeepSeek V4 prompt renderer; contract in chat.h, format in ENCODING.md.
 *
 * Rendering follows the reference encoder's pipeline so the corner cases
 * come out identical: (1) fold tool/user messages into "items" (merged user
 * turns made of blocks), (2) sort tool-result blocks by the call order of the
 * latest assistant message with calls, (3) in thinking mode without tools,
 * strip reasoning / drop developer messages before the last user turn,
 * (4) render item by item with the opener/task transition after each. */
#include "text/chat.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MAX_EFFORT_PREFIX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

#define D DS4_TOK_DSML
static const char TOOLS_HEAD[] =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<" D "tool_calls>\" block like the following:\n\n"
    "<" D "tool_calls>\n"
    "<" D "invoke name=\"$TOOL_NAME\">\n"
    "<" D "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" D "parameter>\n"
    "...\n"
    "</" D "invoke>\n"
    "<" D "invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</" D "invoke>\n"
    "</" D "tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";
static const char TOOLS_TAIL[] =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
static const char RESPONSE_FORMAT_HEAD[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

static const char *const TASK_NAMES[] = {"", "action", "query", "authority", "domain", "title", "read_url"};
static const char *const TASK_TOKENS[] = {
    "", "<\xef\xbd\x9c" "action\xef\xbd\x9c>", "<\xef\xbd\x9cquery\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "authority\xef\xbd\x9c>", "<\xef\xbd\x9c" "domain\xef\xbd\x9c>",
    "<\xef\xbd\x9ctitle\xef\xbd\x9c>", "<\xef\xbd\x9cread_url\xef\xbd\x9c>"};
static const char *const ROLE_NAMES[] = {"system", "developer", "user", "assistant", "tool", "latest_reminder"};

/* ---------------------------------------------------------------- names */

const char *ds4_chat_role_name(ds4_chat_role r) {
    return (unsigned)r < sizeof ROLE_NAMES / sizeof *ROLE_NAMES ? ROLE_NAMES[r] : "?";
}

int ds4_chat_role_parse(const char *s, ds4_chat_role *out) {
    for (size_t i = 0; i < sizeof ROLE_NAMES / sizeof *ROLE_NAMES; i++)
        if (!strcmp(s, ROLE_NAMES[i])) { *out = (ds4_chat_role)i; return 0; }
    if (!strcmp(s, "function")) { *out = DS4_ROLE_TOOL; return 0; }
    return -1;
}

const char *ds4_chat_task_name(ds4_chat_task t) {
    return (unsigned)t < sizeof TASK_NAMES / sizeof *TASK_NAMES ? TASK_NAMES[t] : "";
}

int ds4_chat_task_parse(const char *s, ds4_chat_task *out) {
    for (size_t i = 1; i < sizeof TASK_NAMES / sizeof *TASK_NAMES; i++)
        if (!strcmp(s, TASK_NAMES[i])) { *out = (ds4_chat_task)i; return 0; }
    return -1;
}

ds4_think_mode ds4_chat_effective_mode(ds4_think_mode mode, size_t n_ctx) {
    if (mode == DS4_THINK_MAX && n_ctx > 0 && n_ctx < DS4_THINK_MAX_MIN_CTX) return DS4_THINK_HIGH;
    return mode;
}

/* ---------------------------------------------------------- data model */

static char *dup_or_null(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = 1;
    return d;
}

static int replace_str(char **slot, const char *s, ds4_err *err) {
    int oom = 0;
    char *d = dup_or_null(s, &oom);
    if (oom) return ds4_err_set(err, "chat: out of memory");
    free(*slot);
    *slot = d;
    return 0;
}

ds4_chat *ds4_chat_new(ds4_err *err) {
    ds4_chat *c = calloc(1, sizeof *c);
    if (!c) ds4_err_set(err, "chat: out of memory");
    return c;
}

static void msg_clear(ds4_chat_msg *m) {
    free(m->content);
    free(m->reasoning_content);
    for (size_t i = 0; i < m->n_tool_calls; i++) {
        free(m->tool_calls[i].id);
        free(m->tool_calls[i].name);
        free(m->tool_calls[i].arguments);
    }
    free(m->tool_calls);
    free(m->tool_call_id);
    free(m->name);
    for (size_t i = 0; i < m->n_tools; i++) free(m->tools[i]);
    free(m->tools);
    free(m->response_format);
    memset(m, 0, sizeof *m);
}

void ds4_chat_free(ds4_chat *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) msg_clear(&c->msgs[i]);
    free(c->msgs);
    free(c);
}

ds4_chat_msg *ds4_chat_insert(ds4_chat *c, size_t pos, ds4_chat_role role, const char *content, ds4_err *err) {
    if (pos > c->n) pos = c->n;
    if ((unsigned)role > DS4_ROLE_LATEST_REMINDER) {
        ds4_err_set(err, "chat: invalid role %d", (int)role);
        return NULL;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        ds4_chat_msg *p = realloc(c->msgs, cap * sizeof *p);
        if (!p) { ds4_err_set(err, "chat: out of memory"); return NULL; }
        c->msgs = p;
        c->cap = cap;
    }
    int oom = 0;
    char *d = dup_or_null(content, &oom);
    if (oom) { ds4_err_set(err, "chat: out of memory"); return NULL; }
    memmove(c->msgs + pos + 1, c->msgs + pos, (c->n - pos) * sizeof *c->msgs);
    ds4_chat_msg *m = &c->msgs[pos];
    memset(m, 0, sizeof *m);
    m->role = role;
    m->content = d;
    c->n++;
    return m;
}

ds4_chat_msg *ds4_chat_add(ds4_chat *c, ds4_chat_role role, const char *content, ds4_err *err) {
    return ds4_chat_insert(c, c->n, role, content, err);
}

int ds4_chat_msg_set_reasoning(ds4_chat_msg *m, const char *r, ds4_err *err) {
    return replace_str(&m->reasoning_content, r, err);
}

int ds4_chat_msg_set_tool_call_id(ds4_chat_msg *m, const char *id, ds4_err *err) {
    return replace_str(&m->tool_call_id, id, err);
}

int ds4_chat_msg_set_name(ds4_chat_msg *m, const char *name, ds4_err *err) {
    return replace_str(&m->name, name, err);
}

int ds4_chat_msg_add_tool_call(ds4_chat_msg *m, const char *id, const char *name,
                               const char *arguments, ds4_err *err) {
    if (!name) return ds4_err_set(err, "chat: tool call without a name");
    ds4_chat_tool_call *p = realloc(m->tool_calls, (m->n_tool_calls + 1) * sizeof *p);
    if (!p) return ds4_err_set(err, "chat: out of memory");
    m->tool_calls = p;
    int oom = 0;
    ds4_chat_tool_call tc = {dup_or_null(id, &oom), dup_or_null(name, &oom),
                             dup_or_null(arguments ? arguments : "{}", &oom)};
    if (oom) {
        free(tc.id); free(tc.name); free(tc.arguments);
        return ds4_err_set(err, "chat: out of memory");
    }
    p[m->n_tool_calls++] = tc;
    return 0;
}

static int check_json(const char *s, const char *what, ds4_err *err) {
    json_error_t je;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v) return ds4_err_set(err, "chat: %s is not valid JSON: %s (line %d col %d)", what, je.text, je.line, je.column);
    json_decref(v);
    return 0;
}

int ds4_chat_msg_add_tool(ds4_chat_msg *m, const char *schema_json, ds4_err *err) {
    if (!schema_json || check_json(schema_json, "tool schema", err) < 0) return schema_json ? -1 : ds4_err_set(err, "chat: NULL tool schema");
    char **p = realloc(m->tools, (m->n_tools + 1) * sizeof *p);
    if (!p) return ds4_err_set(err, "chat: out of memory");
    m->tools = p;
    if (!(p[m->n_tools] = strdup(schema_json))) return ds4_err_set(err, "chat: out of memory");
    m->n_tools++;
    return 0;
}

int ds4_chat_msg_set_response_format(ds4_chat_msg *m, const char *json, ds4_err *err) {
    if (json && check_json(json, "response_format", err) < 0) return -1;
    return replace_str(&m->response_format, json, err);
}

int ds4_chat_attach_tools(ds4_chat *c, const char *const *schemas, size_t n, ds4_err *err) {
    if (n == 0) return 0;
    ds4_chat_msg *m = NULL;
    for (size_t i = 0; i < c->n && !m; i++)
        if (c->msgs[i].role == DS4_ROLE_SYSTEM) m = &c->msgs[i];
    if (!m && !(m = ds4_chat_insert(c, 0, DS4_ROLE_SYSTEM, "", err))) return -1;
    for (size_t i = 0; i < n; i++)
        if (ds4_chat_msg_add_tool(m, schemas[i], err) < 0) return -1;
    return 0;
}

/* ------------------------------------------------- Python-style JSON dump */

static int py_string(ds4_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int rc = ds4_buf_putc(b, '"');
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': rc = ds4_buf_append(b, "\\\"", 2); break;
        case '\\': rc = ds4_buf_append(b, "\\\\", 2); break;
        case '\n': rc = ds4_buf_append(b, "\\n", 2); break;
        case '\r': rc = ds4_buf_append(b, "\\r", 2); break;
        case '\t': rc = ds4_buf_append(b, "\\t", 2); break;
        case '\b': rc = ds4_buf_append(b, "\\b", 2); break;
        case '\f': rc = ds4_buf_append(b, "\\f", 2); break;
        default:
            if (ch < 0x20) {
                char u[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
                rc = ds4_buf_append(b, u, 6);
            } else {
                rc = ds4_buf_putc(b, (char)ch);
            }
        }
    }
    return rc ? rc : ds4_buf_putc(b, '"');
}

/* Python float repr: shortest round-trip digits; fixed notation when the
 * decimal exponent is in (-4, 16], else d.ddde+XX. */
static int py_float(ds4_buf *b, double v) {
    if (isnan(v)) return ds4_buf_puts(b, "NaN");
    if (isinf(v)) return ds4_buf_puts(b, v < 0 ? "-Infinity" : "Infinity");
    char tmp[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    char digits[32];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;
    ds4_buf t = {0};
    int rc = 0;
    if (neg) rc |= ds4_buf_putc(&t, '-');
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            rc |= ds4_buf_puts(&t, "0.");
            for (int i = 0; i < -decpt; i++) rc |= ds4_buf_putc(&t, '0');
            rc |= ds4_buf_append(&t, digits, (size_t)nd);
        } else if (decpt >= nd) {
            rc |= ds4_buf_append(&t, digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) rc |= ds4_buf_putc(&t, '0');
            rc |= ds4_buf_puts(&t, ".0");
        } else {
            rc |= ds4_buf_append(&t, digits, (size_t)decpt);
            rc |= ds4_buf_putc(&t, '.');
            rc |= ds4_buf_append(&t, digits + decpt, (size_t)(nd - decpt));
        }
    } else {
        rc |= ds4_buf_putc(&t, digits[0]);
        if (nd > 1) {
            rc |= ds4_buf_putc(&t, '.');
            rc |= ds4_buf_append(&t, digits + 1, (size_t)(nd - 1));
        }
        int e = decpt - 1;
        rc |= ds4_buf_printf(&t, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    if (!rc) rc = ds4_buf_append(b, t.data, t.len);
    ds4_buf_free(&t);
    return rc ? -1 : 0;
}

static int py_dump(ds4_buf *b, json_t *v, int depth) {
    if (depth > 1000) return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        if (ds4_buf_putc(b, '{')) return -1;
        json_object_foreach(v, k, x) {
            if (!first && ds4_buf_append(b, ", ", 2)) return -1;
            first = 0;
            if (py_string(b, k, json_object_iter_key_len(json_object_key_to_iter(k))) ||
                ds4_buf_append(b, ": ", 2) || py_dump(b, x, depth + 1))
                return -1;
        }
        return ds4_buf_putc(b, '}');
    }
    case JSON_ARRAY: {
        if (ds4_buf_putc(b, '[')) return -1;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i && ds4_buf_append(b, ", ", 2)) return -1;
            if (py_dump(b, json_array_get(v, i), depth + 1)) return -1;
        }
        return ds4_buf_putc(b, ']');
    }
    case JSON_STRING: return py_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return ds4_buf_printf(b, "%lld", (long long)json_integer_value(v));
    case JSON_REAL: return py_float(b, json_real_value(v));
    case JSON_TRUE: return ds4_buf_puts(b, "true");
    case JSON_FALSE: return ds4_buf_puts(b, "false");
    case JSON_NULL: return ds4_buf_puts(b, "null");
    }
    return -1;
}

static json_t *parse_json(const char *s, size_t n, json_error_t *je) {
    return json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, je);
}

int ds4_json_pyformat(ds4_buf *out, const char *json, size_t len, ds4_err *err) {
    json_error_t je;
    json_t *v = parse_json(json, len, &je);
    if (!v) return ds4_err_set(err, "json: %s (line %d col %d)", je.text, je.line, je.column);
    int rc = py_dump(out, v, 0);
    json_decref(v);
    return rc ? ds4_err_set(err, "json: out of memory or nesting too deep") : 0;
}

/* ------------------------------------------------------- DSML rendering */

#define CHK(x) do { if ((x) < 0) goto oom; } while (0)

int ds4_chat_render_tool_calls(ds4_buf *out, const ds4_chat_tool_call *calls, size_t n, ds4_err *err) {
    CHK(ds4_buf_puts(out, "\n\n<" D "tool_calls>\n"));
    for (size_t i = 0; i < n; i++) {
        const ds4_chat_tool_call *tc = &calls[i];
        if (i) CHK(ds4_buf_putc(out, '\n'));
        CHK(ds4_buf_printf(out, "<" D "invoke name=\"%s\">\n", tc->name ? tc->name : ""));
        const char *args = tc->arguments ? tc->arguments : "";
        json_error_t je;
        json_t *v = parse_json(args, strlen(args), &je);
        if (!v || !json_is_object(v)) {
            /* Official encoder: unparsable arguments become one raw string parameter. */
            json_decref(v);
            CHK(ds4_buf_printf(out, "<" D "parameter name=\"arguments\" string=\"true\">%s</" D "parameter>", args));
        } else {
            const char *k;
            json_t *x;
            int first = 1, rc = 0;
            json_object_foreach(v, k, x) {
                if (!first) rc |= ds4_buf_putc(out, '\n');
                first = 0;
                int is_str = json_is_string(x);
                rc |= ds4_buf_printf(out, "<" D "parameter name=\"%s\" string=\"%s\">", k, is_str ? "true" : "false");
                if (is_str) rc |= ds4_buf_append(out, json_string_value(x), json_string_length(x));
                else rc |= py_dump(out, x, 0);
                rc |= ds4_buf_puts(out, "</" D "parameter>");
            }
            json_decref(v);
            CHK(rc);
        }
        CHK(ds4_buf_puts(out, "\n</" D "invoke>"));
    }
    CHK(ds4_buf_puts(out, "\n</" D "tool_calls>"));
    return 0;
oom:
    return ds4_err_set(err, "chat: out of memory rendering tool calls");
}

static int render_tools_block(ds4_buf *out, char *const *tools, size_t n, ds4_err *err) {
    if (ds4_buf_puts(out, TOOLS_HEAD)) goto oom;
    for (size_t i = 0; i < n; i++) {
        if (i && ds4_buf_putc(out, '\n')) goto oom;
        if (ds4_json_pyformat(out, tools[i], strlen(tools[i]), err) < 0)
            return ds4_err_prefix(err, "tool schema %zu", i);
    }
    if (ds4_buf_puts(out, TOOLS_TAIL)) goto oom;
    return 0;
oom:
    return ds4_err_set(err, "chat: out of memory");
}

/* --------------------------------------------------------- preprocessing */

typedef struct {
    int is_tool;
    const char *text;     /* borrowed; NULL renders as "" */
    const char *call_id;  /* tool blocks: tool_call_id (borrowed) */
} chat_block;

typedef struct {
    ds4_chat_role role;         /* never TOOL: tools are folded into USER */
    const ds4_chat_msg *src;    /* non-user items: the message itself; user: first message */
    chat_block *blocks;         /* user items only */
    size_t nb;
    ds4_chat_task task;
    int wo_eos;
    int strip_reasoning;        /* drop step removed its reasoning */
} chat_item;

static void items_free(chat_item *it, size_t n) {
    for (size_t i = 0; i < n; i++) free(it[i].blocks);
    free(it);
}

static int item_add_block(chat_item *it, chat_block b) {
    chat_block *p = realloc(it->blocks, (it->nb + 1) * sizeof *p);
    if (!p) return -1;
    it->blocks = p;
    p[it->nb++] = b;
    return 0;
}

/* Steps 1 and 2 of the pipeline. */
static chat_item *fold_messages(const ds4_chat *c, size_t *n_out) {
    chat_item *it = calloc(c->n ? c->n : 1, sizeof *it);
    size_t n = 0;
    if (!it) return NULL;
    for (size_t i = 0; i < c->n; i++) {
        const ds4_chat_msg *m = &c->msgs[i];
        chat_item *last = n ? &it[n - 1] : NULL;
        if (m->role == DS4_ROLE_TOOL) {
            chat_block b = {1, m->content, m->tool_call_id};
            if (!(last && last->role == DS4_ROLE_USER)) {
                last = &it[n++];
                last->role = DS4_ROLE_USER;
                last->src = m;
            }
            if (item_add_block(last, b)) goto oom;
        } else if (m->role == DS4_ROLE_USER) {
            chat_block b = {0, m->content, NULL};
            /* A user turn with a task does not absorb the next user message. */
            if (!(last && last->role == DS4_ROLE_USER && last->task == DS4_TASK_NONE)) {
                last = &it[n++];
                last->role = DS4_ROLE_USER;
                last->src = m;
                last->task = m->task;
                last->wo_eos = m->wo_eos;
            }
            if (item_add_block(last, b)) goto oom;
        } else {
            chat_item *x = &it[n++];
            x->role = m->role;
            x->src = m;
            x->task = m->task;
            x->wo_eos = m->wo_eos;
        }
    }
    /* Order tool results by the call order of the latest assistant message
     * with calls (stable; unknown ids rank 0), keeping text blocks in place. */
    const ds4_chat_msg *calls = NULL;
    for (size_t i = 0; i < n; i++) {
        chat_item *x = &it[i];
        if (x->role == DS4_ROLE_ASSISTANT && x->src->n_tool_calls) {
            calls = x->src;
            continue;
        }
        if (x->role != DS4_ROLE_USER || !calls) continue;
        int any_id = 0;
        for (size_t k = 0; k < calls->n_tool_calls; k++)
            if (calls->tool_calls[k].id && calls->tool_calls[k].id[0]) any_id = 1;
        size_t ntool = 0;
        for (size_t k = 0; k < x->nb; k++) ntool += x->blocks[k].is_tool;
        if (ntool < 2 || !any_id) continue;
        chat_block *tb = malloc(ntool * sizeof *tb);
        size_t *key = malloc(ntool * sizeof *key);
        if (!tb || !key) { free(tb); free(key); goto oom; }
        size_t t = 0;
        for (size_t k = 0; k < x->nb; k++) {
            if (!x->blocks[k].is_tool) continue;
            tb[t] = x->blocks[k];
            key[t] = 0;
            const char *id = tb[t].call_id ? tb[t].call_id : "";
            for (size_t j = 0; j < calls->n_tool_calls; j++) /* last duplicate wins, like a dict */
                if (calls->tool_calls[j].id && calls->tool_calls[j].id[0] && !strcmp(calls->tool_calls[j].id, id))
                    key[t] = j;
            t++;
        }
        for (size_t a = 1; a < ntool; a++) { /* insertion sort: stable */
            chat_block bb = tb[a];
            size_t kk = key[a], b = a;
            while (b > 0 && key[b - 1] > kk) { tb[b] = tb[b - 1]; key[b] = key[b - 1]; b--; }
            tb[b] = bb;
            key[b] = kk;
        }
        t = 0;
        for (size_t k = 0; k < x->nb; k++)
            if (x->blocks[k].is_tool) x->blocks[k] = tb[t++];
        free(tb);
        free(key);
    }
    *n_out = n;
    return it;
oom:
    items_free(it, n);
    return NULL;
}

static long last_user_index(const chat_item *it, size_t n) {
    for (size_t i = n; i-- > 0;)
        if (it[i].role == DS4_ROLE_USER || it[i].role == DS4_ROLE_DEVELOPER) return (long)i;
    return -1;
}

/* --------------------------------------------------------------- render */

char *ds4_chat_render(const ds4_chat *c, const ds4_chat_opts *opts, size_t *len_out, ds4_err *err) {
    ds4_chat_opts o = {0};
    if (opts) o = *opts;
    ds4_think_mode mode = ds4_chat_effective_mode(o.mode, o.n_ctx);
    int thinking = mode != DS4_THINK_NONE;

    size_t n = 0;
    chat_item *it = fold_messages(c, &n);
    if (!it) { ds4_err_set(err, "chat: out of memory"); return NULL; }

    int drop = !o.keep_reasoning;
    for (size_t i = 0; i < n && drop; i++)
        if (it[i].role != DS4_ROLE_USER && it[i].src->n_tools) drop = 0;

    if (thinking && drop) {
        /* Before the last user turn: strip assistant reasoning, drop developer. */
        long lu = last_user_index(it, n);
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if ((long)i >= lu || it[i].role != DS4_ROLE_DEVELOPER) {
                if ((long)i < lu && it[i].role == DS4_ROLE_ASSISTANT) it[i].strip_reasoning = 1;
                it[w++] = it[i];
            } else {
                free(it[i].blocks);
            }
        }
        n = w;
    }
    long lu = last_user_index(it, n);

    ds4_buf b = {0};
    if (!o.no_bos) CHK(ds4_buf_puts(&b, DS4_TOK_BOS));
    for (size_t i = 0; i < n; i++) {
        const chat_item *x = &it[i];
        const ds4_chat_msg *m = x->src;
        if (i == 0 && mode == DS4_THINK_MAX) CHK(ds4_buf_puts(&b, MAX_EFFORT_PREFIX));
        switch (x->role) {
        case DS4_ROLE_SYSTEM:
        case DS4_ROLE_DEVELOPER:
            if (x->role == DS4_ROLE_DEVELOPER) CHK(ds4_buf_puts(&b, DS4_TOK_USER));
            CHK(ds4_buf_puts(&b, m->content ? m->content : ""));
            if (m->n_tools) {
                CHK(ds4_buf_puts(&b, "\n\n"));
                if (render_tools_block(&b, m->tools, m->n_tools, err) < 0) goto fail;
            }
            if (m->response_format) {
                CHK(ds4_buf_puts(&b, "\n\n"));
                CHK(ds4_buf_puts(&b, RESPONSE_FORMAT_HEAD));
                if (ds4_json_pyformat(&b, m->response_format, strlen(m->response_format), err) < 0) {
                    ds4_err_prefix(err, "response_format");
                    goto fail;
                }
            }
            break;
        case DS4_ROLE_USER:
            CHK(ds4_buf_puts(&b, DS4_TOK_USER));
            for (size_t k = 0; k < x->nb; k++) {
                if (k) CHK(ds4_buf_puts(&b, "\n\n"));
                const char *t = x->blocks[k].text ? x->blocks[k].text : "";
                if (x->blocks[k].is_tool) CHK(ds4_buf_printf(&b, "<tool_result>%s</tool_result>", t));
                else CHK(ds4_buf_puts(&b, t));
            }
            break;
        case DS4_ROLE_LATEST_REMINDER:
            CHK(ds4_buf_puts(&b, DS4_TOK_REMINDER));
            CHK(ds4_buf_puts(&b, m->content ? m->content : ""));
            break;
        case DS4_ROLE_ASSISTANT: {
            /* The answer to a task message never has a reasoning part. */
            int prev_task = i > 0 && it[i - 1].task != DS4_TASK_NONE;
            if (thinking && !prev_task && (!drop || (long)i > lu)) {
                if (!x->strip_reasoning && m->reasoning_content) CHK(ds4_buf_puts(&b, m->reasoning_content));
                CHK(ds4_buf_puts(&b, DS4_TOK_THINK_END));
            }
            CHK(ds4_buf_puts(&b, m->content ? m->content : ""));
            if (m->n_tool_calls && ds4_chat_render_tool_calls(&b, m->tool_calls, m->n_tool_calls, err) < 0) goto fail;
            if (!x->wo_eos) CHK(ds4_buf_puts(&b, DS4_TOK_EOS));
            break;
        }
        case DS4_ROLE_TOOL:
            break; /* folded away */
        }
        /* Transition: only before an assistant/reminder message or at the end. */
        if (i + 1 < n && it[i + 1].role != DS4_ROLE_ASSISTANT && it[i + 1].role != DS4_ROLE_LATEST_REMINDER)
            continue;
        if (x->task != DS4_TASK_NONE) {
            if (x->task == DS4_TASK_ACTION) {
                CHK(ds4_buf_puts(&b, DS4_TOK_ASSISTANT));
                CHK(ds4_buf_puts(&b, thinking ? DS4_TOK_THINK : DS4_TOK_THINK_END));
            }
            CHK(ds4_buf_puts(&b, TASK_TOKENS[x->task]));
        } else if (x->role == DS4_ROLE_USER || x->role == DS4_ROLE_DEVELOPER) {
            CHK(ds4_buf_puts(&b, DS4_TOK_ASSISTANT));
            int open_think = thinking && (!drop || (long)i >= lu);
            CHK(ds4_buf_puts(&b, open_think ? DS4_TOK_THINK : DS4_TOK_THINK_END));
        }
    }
    items_free(it, n);
    char *s = ds4_buf_take(&b, len_out);
    if (!s) ds4_err_set(err, "chat: out of memory");
    return s;
oom:
    ds4_err_set(err, "chat: out of memory while rendering");
fail:
    items_free(it, n);
    ds4_buf_free(&b);
    return NULL;
}

/* ----------------------------------------------------------- JSON input */

/* Content: string, null, or an array of parts.  Tool results join text parts
 * with "\n\n" and mark others "[Unsupported TYPE]" (official encoder); other
 * roles concatenate text parts (API layer, API.md 4.8). */
static int flatten_content(json_t *v, int is_tool, char **out, ds4_err *err) {
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        if (!(*out = strndup(json_string_value(v), json_string_length(v)))) goto oom;
        return 0;
    }
    if (!json_is_array(v)) return ds4_err_set(err, "content must be a string, null or an array");
    ds4_buf b = {0};
    size_t i;
    json_t *part;
    int n = 0, rc = 0;
    json_array_foreach(v, i, part) {
        const char *text = NULL;
        const char *type = json_string_value(json_object_get(part, "type"));
        if (json_is_string(part)) text = json_string_value(part);
        else if (json_is_string(json_object_get(part, "text")) && (!type || !strcmp(type, "text")))
            text = json_string_value(json_object_get(part, "text"));
        if (!text && !is_tool) continue;
        if (is_tool && n++) rc |= ds4_buf_puts(&b, "\n\n");
        if (text) rc |= ds4_buf_puts(&b, text);
        else rc |= ds4_buf_printf(&b, "[Unsupported %s]", type ? type : "None");
    }
    if (rc) { ds4_buf_free(&b); goto oom; }
    if (!(*out = ds4_buf_take(&b, NULL))) goto oom;
    return 0;
oom:
    return ds4_err_set(err, "chat: out of memory");
}

static char *dump_compact(json_t *v) {
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int load_message(ds4_chat *c, json_t *jm, size_t idx, ds4_err *err) {
    if (!json_is_object(jm)) return ds4_err_set(err, "message %zu is not an object", idx);
    ds4_chat_role role = DS4_ROLE_USER;
    json_t *jr = json_object_get(jm, "role");
    if (jr && (!json_is_string(jr) || ds4_chat_role_parse(json_string_value(jr), &role) < 0))
        return ds4_err_set(err, "message %zu: unknown role", idx);
    char *content = NULL;
    if (flatten_content(json_object_get(jm, "content"), role == DS4_ROLE_TOOL, &content, err) < 0)
        return ds4_err_prefix(err, "message %zu", idx);
    ds4_chat_msg *m = ds4_chat_add(c, role, NULL, err);
    if (!m) { free(content); return -1; }
    m->content = content;

    json_t *v = json_object_get(jm, "reasoning_content");
    if (v && !json_is_null(v)) {
        char *r = NULL;
        if (flatten_content(v, 0, &r, err) < 0) return ds4_err_prefix(err, "message %zu reasoning_content", idx);
        m->reasoning_content = r;
    }
    if ((v = json_object_get(jm, "tool_call_id")) && json_is_string(v) &&
        ds4_chat_msg_set_tool_call_id(m, json_string_value(v), err) < 0)
        return -1;
    if ((v = json_object_get(jm, "name")) && json_is_string(v) && ds4_chat_msg_set_name(m, json_string_value(v), err) < 0)
        return -1;
    if ((v = json_object_get(jm, "task")) && !json_is_null(v)) {
        if (!json_is_string(v) || ds4_chat_task_parse(json_string_value(v), &m->task) < 0)
            return ds4_err_set(err, "message %zu: invalid task", idx);
    }
    if ((v = json_object_get(jm, "wo_eos"))) m->wo_eos = json_is_true(v);

    json_t *calls = json_object_get(jm, "tool_calls");
    if (calls && json_is_array(calls)) {
        size_t i;
        json_t *tc;
        json_array_foreach(calls, i, tc) {
            json_t *fn = json_object_get(tc, "function");
            if (!json_is_object(fn)) fn = tc;
            const char *name = json_string_value(json_object_get(fn, "name"));
            json_t *args = json_object_get(fn, "arguments");
            const char *id = json_string_value(json_object_get(tc, "id"));
            if (!id) id = json_string_value(json_object_get(fn, "id"));
            if (!name || !args) continue; /* API.md: calls missing name or arguments are skipped */
            char *a = json_is_string(args) ? strdup(json_string_value(args)) : dump_compact(args);
            if (!a) return ds4_err_set(err, "chat: out of memory");
            int rc = ds4_chat_msg_add_tool_call(m, id, name, a, err);
            free(a);
            if (rc < 0) return -1;
        }
    }
    json_t *tools = json_object_get(jm, "tools");
    if (tools && json_is_array(tools)) {
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            json_t *fn = json_object_get(t, "function");
            char *s = dump_compact(json_is_object(fn) ? fn : t);
            if (!s) return ds4_err_set(err, "chat: out of memory");
            int rc = ds4_chat_msg_add_tool(m, s, err);
            free(s);
            if (rc < 0) return -1;
        }
    }
    if ((v = json_object_get(jm, "response_format")) && !json_is_null(v)) {
        char *s = dump_compact(v);
        if (!s) return ds4_err_set(err, "chat: out of memory");
        int rc = ds4_chat_msg_set_response_format(m, s, err);
        free(s);
        if (rc < 0) return -1;
    }
    return 0;
}

ds4_chat *ds4_chat_from_json(const char *json, size_t len, ds4_err *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) {
        ds4_err_set(err, "chat json: %s (line %d col %d)", je.text, je.line, je.column);
        return NULL;
    }
    json_t *msgs = json_is_array(root) ? root : json_object_get(root, "messages");
    json_t *tools = json_is_object(root) ? json_object_get(root, "tools") : NULL;
    ds4_chat *c = NULL;
    if (!json_is_array(msgs)) {
        ds4_err_set(err, "chat json: expected an array of messages or {\"messages\": [...]}");
        goto fail;
    }
    if (!(c = ds4_chat_new(err))) goto fail;
    size_t i;
    json_t *jm;
    json_array_foreach(msgs, i, jm)
        if (load_message(c, jm, i, err) < 0) goto fail;
    if (json_is_array(tools) && json_array_size(tools)) {
        size_t nt = json_array_size(tools);
        char **s = calloc(nt, sizeof *s);
        int rc = s ? 0 : ds4_err_set(err, "chat: out of memory");
        for (size_t k = 0; k < nt && rc == 0; k++) {
            json_t *t = json_array_get(tools, k), *fn = json_object_get(t, "function");
            if (!(s[k] = dump_compact(json_is_object(fn) ? fn : t))) rc = ds4_err_set(err, "chat: out of memory");
        }
        if (rc == 0) rc = ds4_chat_attach_tools(c, (const char *const *)s, nt, err);
        for (size_t k = 0; s && k < nt; k++) free(s[k]);
        free(s);
        if (rc < 0) goto fail;
    }
    json_decref(root);
    return c;
fail:
    json_decref(root);
    ds4_chat_free(c);
    return NULL;
}

ds4_chat *ds4_chat_from_file(const char *path, ds4_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ds4_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    ds4_buf b = {0};
    char tmp[65536];
    size_t r;
    int rc = 0;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) rc |= ds4_buf_append(&b, tmp, r);
    int bad = ferror(f);
    fclose(f);
    if (rc || bad) {
        ds4_buf_free(&b);
        ds4_err_set(err, "%s: read failed", path);
        return NULL;
    }
    ds4_chat *c = ds4_chat_from_json(b.data ? b.data : "", b.len, err);
    ds4_buf_free(&b);
    if (!c) ds4_err_prefix(err, "%s", path);
    return c;
}
