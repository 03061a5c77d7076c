/* POST /v1/responses (API.md §8), the Codex CLI wire API.
 *
 * Parse: input (string or items: message, reasoning, function_call /
 * custom_tool_call and their outputs, hosted *_call items replayed as calls,
 * compaction items skipped), instructions, mixed tool arrays (function,
 * namespace, tool_search, custom; hosted types skipped, never a 400),
 * reasoning {effort, summary}.  A tool output must answer a call replayed
 * earlier in the same input (no durable response store; §8.3).
 * Output: response objects, or the typed event stream with strictly
 * increasing sequence_number, reasoning summary events only when
 * reasoning.summary opted in, and one terminal event. */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* ---- parse ---- */

typedef struct rparse {
    srv_req *r;
    ds4_buf pending_reasoning;
    bool has_pending;
    char **call_ids;
    size_t n_call_ids;
    long last_assistant;          /* index of the assistant turn calls merge into, -1 none */
} rparse;

static int note_call_id(rparse *p, const char *id) {
    char **n = realloc(p->call_ids, (p->n_call_ids + 1) * sizeof *n);
    if (!n) return -1;
    p->call_ids = n;
    p->call_ids[p->n_call_ids] = strdup(id ? id : "");
    return p->call_ids[p->n_call_ids++] ? 0 : -1;
}

static bool call_replayed(rparse *p, const char *id) {
    for (size_t i = 0; i < p->n_call_ids; i++) if (id && !strcmp(p->call_ids[i], id)) return true;
    return false;
}

/* Reasoning held for the next assistant message or call; flushed as an empty
 * assistant turn if a user message or tool output comes first. */
static int flush_reasoning(rparse *p, srv_error *e) {
    if (!p->has_pending) return 0;
    ds4_err err = {{0}};
    ds4_chat_msg *m = ds4_chat_add(p->r->chat, DS4_ROLE_ASSISTANT, "", &err);
    if (!m || ds4_chat_msg_set_reasoning(m, p->pending_reasoning.data ? p->pending_reasoning.data : "", &err))
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    ds4_buf_truncate(&p->pending_reasoning, 0);
    p->has_pending = false;
    return 0;
}

static int take_reasoning(rparse *p, ds4_chat_msg *m, srv_error *e) {
    if (!p->has_pending) return 0;
    ds4_err err = {{0}};
    if (ds4_chat_msg_set_reasoning(m, p->pending_reasoning.data ? p->pending_reasoning.data : "", &err))
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    ds4_buf_truncate(&p->pending_reasoning, 0);
    p->has_pending = false;
    return 0;
}

static char *parts_text(json_t *c, size_t idx, srv_error *e) {
    if (!c || json_is_null(c)) return strdup("");
    if (json_is_string(c)) return strdup(json_string_value(c));
    if (!json_is_array(c)) { srv_err(e, 400, NULL, NULL, "input", "input item %zu: content must be a string or an array", idx); return NULL; }
    ds4_buf b = {0};
    ds4_buf_puts(&b, "");
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *ty = json_string_value(json_object_get(part, "type"));
        if (ty && strcmp(ty, "input_text") && strcmp(ty, "output_text") && strcmp(ty, "text") &&
            strcmp(ty, "summary_text") && strcmp(ty, "reasoning_text")) {
            srv_err(e, 400, NULL, NULL, "input", "input item %zu: unsupported content part type \"%s\" (text-only model)", idx, ty);
            ds4_buf_free(&b);
            return NULL;
        }
        const char *tx = json_string_value(json_object_get(part, "text"));
        if (tx) ds4_buf_puts(&b, tx);
    }
    return ds4_buf_take(&b, NULL);
}

static int add_call(rparse *p, const char *id, const char *name, const char *args, srv_error *e) {
    ds4_err err = {{0}};
    ds4_chat_msg *m = p->last_assistant >= 0 ? &p->r->chat->msgs[p->last_assistant] : NULL;
    if (!m) {
        if (!(m = ds4_chat_add(p->r->chat, DS4_ROLE_ASSISTANT, "", &err))) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
        p->last_assistant = (long)p->r->chat->n - 1;
    }
    if (take_reasoning(p, m, e)) return -1;
    if (ds4_chat_msg_add_tool_call(m, id, name, args, &err)) return srv_err(e, 400, NULL, NULL, "input", "invalid call: %s", err.msg);
    return note_call_id(p, id);
}

static int add_output(rparse *p, json_t *it, size_t idx, srv_error *e) {
    const char *cid = json_string_value(json_object_get(it, "call_id"));
    if (!cid) return srv_err(e, 400, NULL, NULL, "input", "input item %zu: tool output without call_id", idx);
    if (!call_replayed(p, cid))
        return srv_err(e, 400, NULL, NULL, "input",
                       "Responses continuation state is not available for call_id %s; retry by replaying the full input history", cid);
    if (flush_reasoning(p, e)) return -1;
    json_t *o = json_object_get(it, "output");
    char *txt = json_is_string(o) || json_is_array(o) || !o || json_is_null(o)
                    ? parts_text(o, idx, e)
                    : json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!txt) return -1;
    ds4_err err = {{0}};
    ds4_chat_msg *m = ds4_chat_add(p->r->chat, DS4_ROLE_TOOL, txt, &err);
    free(txt);
    if (!m || ds4_chat_msg_set_tool_call_id(m, cid, &err)) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    p->last_assistant = -1;
    return 0;
}

static int parse_items(rparse *p, json_t *input, srv_error *e) {
    size_t i;
    json_t *it;
    ds4_err err = {{0}};
    json_array_foreach(input, i, it) {
        if (!json_is_object(it)) return srv_err(e, 400, NULL, NULL, "input", "input item %zu is not an object", i);
        const char *ty = json_string_value(json_object_get(it, "type"));
        json_t *status = json_object_get(it, "status");
        if (status && !json_is_null(status) && (!json_is_string(status) || strcmp(json_string_value(status), "completed")))
            return srv_err(e, 400, NULL, NULL, "input", "input item %zu has status \"%s\"", i,
                           json_is_string(status) ? json_string_value(status) : "?");
        if (!ty || !strcmp(ty, "message")) {
            const char *role = json_string_value(json_object_get(it, "role"));
            ds4_chat_role cr = DS4_ROLE_USER;
            if (role && ds4_chat_role_parse(role, &cr))
                return srv_err(e, 400, NULL, NULL, "input", "input item %zu: unknown role \"%s\"", i, role);
            char *txt = parts_text(json_object_get(it, "content"), i, e);
            if (!txt) return -1;
            if (cr != DS4_ROLE_ASSISTANT && flush_reasoning(p, e)) { free(txt); return -1; }
            ds4_chat_msg *m = ds4_chat_add(p->r->chat, cr, txt, &err);
            free(txt);
            if (!m) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
            if (cr == DS4_ROLE_ASSISTANT && take_reasoning(p, m, e)) return -1;
            p->last_assistant = cr == DS4_ROLE_ASSISTANT ? (long)p->r->chat->n - 1 : -1;
        } else if (!strcmp(ty, "reasoning")) {
            json_t *arr[2] = {json_object_get(it, "summary"), json_object_get(it, "content")};
            for (int k = 0; k < 2; k++) {
                size_t q;
                json_t *s;
                json_array_foreach(arr[k], q, s) {
                    const char *tx = json_string_value(json_object_get(s, "text"));
                    if (tx) ds4_buf_puts(&p->pending_reasoning, tx);
                }
            }
            p->has_pending = true;
        } else if (!strcmp(ty, "function_call") || !strcmp(ty, "custom_tool_call")) {
            const char *cid = json_string_value(json_object_get(it, "call_id"));
            if (!cid) cid = json_string_value(json_object_get(it, "id"));
            const char *name = json_string_value(json_object_get(it, "name"));
            const char *ns = json_string_value(json_object_get(it, "namespace"));
            if (!name) return srv_err(e, 400, NULL, NULL, "input", "input item %zu: call without a name", i);
            ds4_buf full = {0};
            if (ns) ds4_buf_puts(&full, ns);
            ds4_buf_puts(&full, name);
            json_t *a = json_object_get(it, "arguments");
            char *args = json_is_string(a) ? strdup(json_string_value(a))
                         : a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY)
                         : json_dumps(json_object_get(it, "input") ? json_object_get(it, "input") : json_string(""),
                                      JSON_COMPACT | JSON_ENCODE_ANY);
            int rc = args ? add_call(p, cid, full.data, args, e) : srv_err(e, 500, NULL, NULL, NULL, "out of memory");
            free(args);
            ds4_buf_free(&full);
            if (rc) return -1;
        } else if (!strcmp(ty, "function_call_output") || !strcmp(ty, "custom_tool_call_output") ||
                   !strcmp(ty, "local_shell_call_output") || !strcmp(ty, "tool_search_call_output") ||
                   !strcmp(ty, "web_search_call_output") || !strcmp(ty, "image_generation_call_output")) {
            if (add_output(p, it, i, e)) return -1;
        } else if (!strcmp(ty, "local_shell_call") || !strcmp(ty, "web_search_call") || !strcmp(ty, "tool_search_call") ||
                   !strcmp(ty, "image_generation_call")) {
            /* Hosted actions replay as calls so the history stays in context. */
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(strlen(ty) - 5), ty);
            const char *cid = json_string_value(json_object_get(it, "call_id"));
            if (!cid) cid = json_string_value(json_object_get(it, "id"));
            json_t *a = json_object_get(it, "action");
            if (!a) a = json_object_get(it, "arguments");
            char *args = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
            int rc = args ? add_call(p, cid, name, args, e) : -1;
            free(args);
            if (rc) return -1;
        } else if (!strcmp(ty, "compaction") || !strcmp(ty, "context_compaction") || !strcmp(ty, "item_reference")) {
            continue;
        } else {
            return srv_err(e, 400, NULL, NULL, "input", "unsupported input item type \"%s\"", ty);
        }
    }
    return flush_reasoning(p, e);
}

static int parse_tools(srv_req *r, json_t *tools, srv_error *e) {
    size_t i, k;
    json_t *t, *in;
    json_array_foreach(tools, i, t) {
        const char *ty = json_string_value(json_object_get(t, "type"));
        if (!ty) ty = "function";
        if (!strcmp(ty, "function") || !strcmp(ty, "custom")) {
            if (!json_is_string(json_object_get(t, "name"))) continue;
            if (srv_req_add_tool(r, t, NULL, NULL, !strcmp(ty, "custom"), false, e)) return -1;
        } else if (!strcmp(ty, "namespace")) {
            const char *ns = json_string_value(json_object_get(t, "name"));
            json_array_foreach(json_object_get(t, "tools"), k, in) {
                const char *nm = json_string_value(json_object_get(in, "name"));
                if (!nm) continue;
                ds4_buf full = {0};
                ds4_buf_puts(&full, ns ? ns : "");
                ds4_buf_puts(&full, nm);
                json_t *sc = json_object();
                json_object_set_new(sc, "name", json_string(full.data));
                json_t *d = json_object_get(in, "description");
                if (d) json_object_set(sc, "description", d);
                json_t *pa = json_object_get(in, "parameters");
                if (pa) json_object_set(sc, "parameters", pa);
                int rc = srv_req_add_tool(r, sc, nm, ns, false, false, e);
                json_decref(sc);
                ds4_buf_free(&full);
                if (rc) return -1;
            }
        } else if (!strcmp(ty, "tool_search")) {
            json_t *sc = json_object();
            json_object_set_new(sc, "name", json_string("tool_search"));
            json_t *d = json_object_get(t, "description");
            if (d) json_object_set(sc, "description", d);
            json_t *pa = json_object_get(t, "parameters");
            if (pa) json_object_set(sc, "parameters", pa);
            int rc = srv_req_add_tool(r, sc, NULL, NULL, false, true, e);
            json_decref(sc);
            if (rc) return -1;
        }
        /* hosted types (web_search, image_generation, ...): accepted, not rendered */
    }
    return 0;
}

int srv_responses_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e) {
    json_t *input = json_object_get(root, "input");
    if (!input || json_is_null(input)) return srv_err(e, 400, NULL, NULL, "input", "missing input");
    if (!json_is_string(input) && !json_is_array(input))
        return srv_err(e, 400, NULL, NULL, "input", "invalid JSON request: input must be a string or an array");
    static const char *const unsupported[] = {"previous_response_id", "conversation"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, unsupported[k]);
        if (v && !json_is_null(v))
            return srv_err(e, 400, NULL, NULL, unsupported[k], "%s is not supported; replay full input instead", unsupported[k]);
    }
    if (srv_parse_model(s, root, r, e) || srv_parse_bool(root, "stream", &r->stream, e)) return -1;
    json_t *rs = json_object_get(root, "reasoning");
    if (rs && !json_is_null(rs) && !json_is_object(rs))
        return srv_err(e, 400, NULL, NULL, "reasoning", "invalid JSON request: reasoning must be an object");
    if (srv_parse_thinking(s, root, json_object_get(rs, "effort"), r, e)) return -1;
    const char *sum = json_string_value(json_object_get(rs, "summary"));
    r->reasoning_summary = sum && (!strcmp(sum, "auto") || !strcmp(sum, "concise") || !strcmp(sum, "detailed"));
    if (srv_parse_sampling(root, r, false, false, e)) return -1;
    static const char *const mt[] = {"max_output_tokens", "max_tokens", NULL};
    if (srv_parse_max_tokens(root, mt, r, e)) return -1;
    int none = srv_parse_tool_choice(json_object_get(root, "tool_choice"), e);
    if (none < 0) return -1;
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tools must be an array");
    if (!none && parse_tools(r, tools, e)) return -1;
    r->tools_active = r->n_tools > 0;
    ds4_err err = {{0}};
    if (!(r->chat = ds4_chat_new(&err))) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    json_t *ins = json_object_get(root, "instructions");
    if (json_is_string(ins) && !ds4_chat_add(r->chat, DS4_ROLE_SYSTEM, json_string_value(ins), &err))
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    if (json_is_string(input)) {
        if (!ds4_chat_add(r->chat, DS4_ROLE_USER, json_string_value(input), &err)) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
        return 0;
    }
    rparse p = {.r = r, .last_assistant = -1};
    int rc = parse_items(&p, input, e);
    for (size_t i = 0; i < p.n_call_ids; i++) free(p.call_ids[i]);
    free(p.call_ids);
    ds4_buf_free(&p.pending_reasoning);
    return rc;
}

/* ---- output ---- */

static const srv_tooldecl *decl_of(srv_job *j, const char *prompt_name) {
    for (size_t i = 0; i < j->req->n_tools; i++)
        if (!strcmp(j->req->tools[i].prompt_name, prompt_name)) return &j->req->tools[i];
    return NULL;
}

static void send(srv_job *j, const char *type, json_t *o) {
    json_t *x = json_object();
    json_object_set_new(x, "type", json_string(type));
    json_object_set_new(x, "sequence_number", json_integer(j->seq++));
    json_object_update(x, o);
    json_decref(o);
    srv_stream_event(j->stream, type, x);
}

static json_t *rs_item(srv_job *j, const char *status, bool full) {
    json_t *it = json_object(), *sum = json_array();
    json_object_set_new(it, "id", json_string(j->rs_id));
    json_object_set_new(it, "type", json_string("reasoning"));
    json_object_set_new(it, "status", json_string(status));
    if (full) {
        json_t *p = json_object();
        json_object_set_new(p, "type", json_string("summary_text"));
        json_object_set_new(p, "text", srv_json_strn(j->reasoning.data, j->reasoning.len));
        json_array_append_new(sum, p);
    }
    json_object_set_new(it, "summary", sum);
    return it;
}

static json_t *text_part(const char *s, size_t n) {
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string("output_text"));
    json_object_set_new(p, "text", srv_json_strn(s, n));
    json_object_set_new(p, "annotations", json_array());
    return p;
}

static json_t *msg_item(srv_job *j, const char *status, bool full) {
    json_t *it = json_object(), *c = json_array();
    json_object_set_new(it, "id", json_string(j->msg_id));
    json_object_set_new(it, "type", json_string("message"));
    json_object_set_new(it, "status", json_string(status));
    json_object_set_new(it, "role", json_string("assistant"));
    if (full) json_array_append_new(c, text_part(j->content.data, j->content.len));
    json_object_set_new(it, "content", c);
    return it;
}

/* Free-text input of a custom tool call: the only string argument the model
 * gave, else the whole arguments object as text. */
static json_t *custom_input(const srv_call *c) {
    json_t *a = c->args.data ? json_loadb(c->args.data, c->args.len, 0, NULL) : NULL;
    json_t *out = NULL;
    if (json_is_object(a) && json_object_size(a) == 1) {
        json_t *v = json_object_iter_value(json_object_iter(a));
        if (json_is_string(v)) out = json_string(json_string_value(v));
    }
    json_decref(a);
    return out ? out : srv_json_strn(c->args.data, c->args.len);
}

static json_t *call_item(srv_job *j, srv_call *c, const char *status, bool full) {
    const srv_tooldecl *d = decl_of(j, c->name);
    json_t *it = json_object();
    json_object_set_new(it, "id", json_string(c->item_id));
    if (d && d->custom) {
        json_object_set_new(it, "type", json_string("custom_tool_call"));
        json_object_set_new(it, "status", json_string(status));
        json_object_set_new(it, "name", srv_json_strn(d->wire_name, strlen(d->wire_name)));
        json_object_set_new(it, "call_id", json_string(c->id));
        json_object_set_new(it, "input", full ? custom_input(c) : json_string(""));
        return it;
    }
    json_object_set_new(it, "type", json_string("function_call"));
    json_object_set_new(it, "status", json_string(status));
    const char *wire = d ? d->wire_name : c->name;
    json_object_set_new(it, "name", srv_json_strn(wire, strlen(wire)));
    if (d && d->ns) json_object_set_new(it, "namespace", json_string(d->ns));
    json_object_set_new(it, "call_id", json_string(c->id));
    json_object_set_new(it, "arguments", full ? srv_json_strn(c->args.data, c->args.len) : json_string(""));
    return it;
}

static json_t *response_obj(srv_job *j, const char *status) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("response"));
    json_object_set_new(o, "created_at", json_integer(j->created));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "model", json_string(j->req->model));
    json_object_set_new(o, "output", json_array());
    return o;
}

static void resp_start(srv_job *j) {
    srv_random_id(j->id, sizeof j->id, "resp_", 12);
    srv_random_id(j->rs_id, sizeof j->rs_id, "rs_", 12);
    srv_random_id(j->msg_id, sizeof j->msg_id, "msg_", 12);
    if (!j->stream) return;
    json_t *o = json_object();
    json_object_set_new(o, "response", response_obj(j, "in_progress"));
    send(j, "response.created", o);
    o = json_object();
    json_object_set_new(o, "response", response_obj(j, "in_progress"));
    send(j, "response.in_progress", o);
}

static json_t *ids(const char *item_id, int out_index) {
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_string(item_id));
    json_object_set_new(o, "output_index", json_integer(out_index));
    return o;
}

static void close_reasoning(srv_job *j, bool completed) {
    if (j->open_kind != 1) return;
    json_t *o = ids(j->rs_id, j->rs_index);
    json_object_set_new(o, "summary_index", json_integer(0));
    json_object_set_new(o, "text", srv_json_strn(j->reasoning.data, j->reasoning.len));
    send(j, "response.reasoning_summary_text.done", o);
    o = ids(j->rs_id, j->rs_index);
    json_object_set_new(o, "summary_index", json_integer(0));
    json_t *part = json_object();
    json_object_set_new(part, "type", json_string("summary_text"));
    json_object_set_new(part, "text", srv_json_strn(j->reasoning.data, j->reasoning.len));
    json_object_set_new(o, "part", part);
    send(j, "response.reasoning_summary_part.done", o);
    o = json_object();
    json_object_set_new(o, "output_index", json_integer(j->rs_index));
    json_object_set_new(o, "item", rs_item(j, completed ? "completed" : "incomplete", true));
    send(j, "response.output_item.done", o);
    j->open_kind = 0;
}

static void close_message(srv_job *j, bool completed) {
    if (j->open_kind != 2) return;
    json_t *o = ids(j->msg_id, j->msg_index);
    json_object_set_new(o, "content_index", json_integer(0));
    json_object_set_new(o, "text", srv_json_strn(j->sent_text.data, j->sent_text.len));
    json_object_set_new(o, "logprobs", json_array());
    send(j, "response.output_text.done", o);
    o = ids(j->msg_id, j->msg_index);
    json_object_set_new(o, "content_index", json_integer(0));
    json_object_set_new(o, "part", text_part(j->sent_text.data, j->sent_text.len));
    send(j, "response.content_part.done", o);
    o = json_object();
    json_object_set_new(o, "output_index", json_integer(j->msg_index));
    json_object_set_new(o, "item", msg_item(j, completed ? "completed" : "incomplete", true));
    send(j, "response.output_item.done", o);
    j->open_kind = 0;
}

static void resp_reasoning(srv_job *j, const char *s, size_t n) {
    if (!j->stream || !j->req->reasoning_summary) return;
    if (j->rs_index < 0) {
        j->rs_index = j->block++;
        json_t *o = json_object();
        json_object_set_new(o, "output_index", json_integer(j->rs_index));
        json_object_set_new(o, "item", rs_item(j, "in_progress", false));
        send(j, "response.output_item.added", o);
        o = ids(j->rs_id, j->rs_index);
        json_object_set_new(o, "summary_index", json_integer(0));
        json_t *part = json_object();
        json_object_set_new(part, "type", json_string("summary_text"));
        json_object_set_new(part, "text", json_string(""));
        json_object_set_new(o, "part", part);
        send(j, "response.reasoning_summary_part.added", o);
        j->open_kind = 1;
    }
    if (j->open_kind != 1) return;
    json_t *o = ids(j->rs_id, j->rs_index);
    json_object_set_new(o, "summary_index", json_integer(0));
    json_object_set_new(o, "delta", srv_json_strn(s, n));
    send(j, "response.reasoning_summary_text.delta", o);
}

static void resp_reasoning_end(srv_job *j) {
    if (j->stream) close_reasoning(j, true);
}

static void resp_text(srv_job *j, const char *s, size_t n) {
    if (!j->stream) return;
    close_reasoning(j, false);
    if (j->msg_index < 0) {
        j->msg_index = j->block++;
        json_t *o = json_object();
        json_object_set_new(o, "output_index", json_integer(j->msg_index));
        json_object_set_new(o, "item", msg_item(j, "in_progress", false));
        send(j, "response.output_item.added", o);
        o = ids(j->msg_id, j->msg_index);
        json_object_set_new(o, "content_index", json_integer(0));
        json_object_set_new(o, "part", text_part("", 0));
        send(j, "response.content_part.added", o);
        j->open_kind = 2;
    }
    if (j->open_kind != 2) return;
    ds4_buf_append(&j->sent_text, s, n);
    json_t *o = ids(j->msg_id, j->msg_index);
    json_object_set_new(o, "content_index", json_integer(0));
    json_object_set_new(o, "delta", srv_json_strn(s, n));
    json_object_set_new(o, "logprobs", json_array());
    send(j, "response.output_text.delta", o);
}

static void resp_tool_start(srv_job *j, srv_call *c) {
    c->out_index = j->block++;
    if (!j->stream) return;
    close_reasoning(j, false);
    close_message(j, true);
    json_t *o = json_object();
    json_object_set_new(o, "output_index", json_integer(c->out_index));
    json_object_set_new(o, "item", call_item(j, c, "in_progress", false));
    send(j, "response.output_item.added", o);
    j->open_kind = 3;
}

static bool is_custom(srv_job *j, srv_call *c) {
    const srv_tooldecl *d = decl_of(j, c->name);
    return d && d->custom;
}

static void resp_tool_args(srv_job *j, srv_call *c, const char *s, size_t n) {
    if (!j->stream || is_custom(j, c)) return;
    json_t *o = ids(c->item_id, c->out_index);
    json_object_set_new(o, "delta", srv_json_strn(s, n));
    send(j, "response.function_call_arguments.delta", o);
}

static void resp_tool_end(srv_job *j, srv_call *c) {
    if (!j->stream) return;
    const srv_tooldecl *d = decl_of(j, c->name);
    json_t *o;
    if (!is_custom(j, c)) {
        o = ids(c->item_id, c->out_index);
        const char *wire = d ? d->wire_name : c->name;
        json_object_set_new(o, "name", srv_json_strn(wire, strlen(wire)));
        json_object_set_new(o, "arguments", srv_json_strn(c->args.data, c->args.len));
        send(j, "response.function_call_arguments.done", o);
    }
    o = json_object();
    json_object_set_new(o, "output_index", json_integer(c->out_index));
    json_object_set_new(o, "item", call_item(j, c, "completed", true));
    send(j, "response.output_item.done", o);
    j->open_kind = 0;
}

static json_t *usage(srv_job *j) {
    json_t *u = json_object(), *id = json_object(), *od = json_object();
    json_object_set_new(u, "input_tokens", json_integer(j->P));
    json_object_set_new(id, "cached_tokens", json_integer(j->C));
    json_object_set_new(id, "cache_write_tokens", json_integer(j->W));
    json_object_set_new(u, "input_tokens_details", id);
    json_object_set_new(u, "output_tokens", json_integer(j->G));
    json_object_set_new(od, "reasoning_tokens", json_integer(j->R));
    json_object_set_new(u, "output_tokens_details", od);
    json_object_set_new(u, "total_tokens", json_integer(j->P + j->G));
    return u;
}

static json_t *final_response(srv_job *j, const char *status) {
    json_t *o = response_obj(j, status), *out = json_object_get(o, "output");
    const char *item_status = !strcmp(status, "completed") ? "completed" : "incomplete";
    if (j->req->reasoning_summary && j->reasoning.len)
        json_array_append_new(out, rs_item(j, j->reasoning_closed ? "completed" : "incomplete", true));
    if (j->content.len) json_array_append_new(out, msg_item(j, item_status, true));
    for (size_t i = 0; i < j->n_calls; i++) json_array_append_new(out, call_item(j, &j->calls[i], "completed", true));
    if (!strcmp(status, "incomplete")) {
        json_t *d = json_object();
        json_object_set_new(d, "reason", json_string("max_output_tokens"));
        json_object_set_new(o, "incomplete_details", d);
    }
    json_object_set_new(o, "usage", usage(j));
    return o;
}

static void resp_finish(srv_job *j) {
    const char *status = j->finish == SRV_FIN_LENGTH ? "incomplete" : "completed";
    if (j->stream) {
        close_reasoning(j, j->reasoning_closed);
        /* Text recovered after the stream (e.g. malformed DSML) goes out before the item closes. */
        if (j->content.len > j->sent_text.len && j->content.len &&
            !memcmp(j->content.data, j->sent_text.data ? j->sent_text.data : "", j->sent_text.len))
            resp_text(j, j->content.data + j->sent_text.len, j->content.len - j->sent_text.len);
        close_message(j, j->finish != SRV_FIN_LENGTH);
        json_t *o = json_object();
        json_object_set_new(o, "response", final_response(j, status));
        send(j, j->finish == SRV_FIN_LENGTH ? "response.incomplete" : "response.completed", o);
        return;
    }
    j->status = 200;
    j->body = srv_json_dump(final_response(j, status), true, &j->body_len);
}

static void resp_fail(srv_job *j) {
    if (!j->stream) { srv_openai_fail(j); return; }
    if (!j->id[0]) resp_start(j);
    json_t *r = response_obj(j, "failed"), *er = json_object(), *o = json_object();
    json_object_set_new(er, "code", json_string(j->err.code ? j->err.code : "server_error"));
    json_object_set_new(er, "message", srv_json_strn(j->err.msg, strlen(j->err.msg)));
    json_object_set_new(r, "error", er);
    json_object_set_new(o, "response", r);
    send(j, "response.failed", o);
}

const srv_out_vt srv_responses_out = {
    .start = resp_start,
    .reasoning = resp_reasoning,
    .reasoning_end = resp_reasoning_end,
    .text = resp_text,
    .tool_start = resp_tool_start,
    .tool_args = resp_tool_args,
    .tool_end = resp_tool_end,
    .finish = resp_finish,
    .fail = resp_fail,
};
