/* POST /v1/chat/completions (API.md §6) and the model list (§5).
 *
 * Parse: messages (roles system/developer/user/assistant/tool/function,
 * content string/array/null, reasoning_content, tool_calls, tool_call_id)
 * into a ds4_chat; tools as {type:function,function:{...}} (inner object
 * rendered verbatim).  Output: chat.completion bodies or chunk streams with
 * role, reasoning_content, content and incremental tool_calls deltas, a
 * finish chunk (carrying usage too, [improve] §11), the optional usage chunk
 * and [DONE]. */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* ---- models ---- */

static json_t *model_entry(srv_ctx *s, const char *id) {
    json_t *o = json_object();
    long maxc = s->cfg.default_max_tokens < (int64_t)s->cfg.ctx ? (long)s->cfg.default_max_tokens : (long)s->cfg.ctx;
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "object", json_string("model"));
    json_object_set_new(o, "type", json_string("model"));
    json_object_set_new(o, "created", json_integer(SRV_CREATED));
    json_object_set_new(o, "created_at", json_string("2026-01-01T00:00:00Z"));
    json_object_set_new(o, "owned_by", json_string("ds4"));
    json_object_set_new(o, "name", json_string("DeepSeek V4 Flash"));
    json_object_set_new(o, "display_name", json_string("DeepSeek V4 Flash"));
    json_object_set_new(o, "context_length", json_integer(s->cfg.ctx));
    json_t *tp = json_object();
    json_object_set_new(tp, "context_length", json_integer(s->cfg.ctx));
    json_object_set_new(tp, "max_completion_tokens", json_integer(maxc));
    json_object_set_new(tp, "is_moderated", json_false());
    json_object_set_new(o, "top_provider", tp);
    json_t *sp = json_array();
    static const char *params[] = {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k",
                                   "min_p", "stop", "seed", "stream", "reasoning_effort"};
    for (size_t i = 0; i < sizeof params / sizeof *params; i++) json_array_append_new(sp, json_string(params[i]));
    json_object_set_new(o, "supported_parameters", sp);
    return o;
}

json_t *srv_models_json(srv_ctx *s, const char *id) {
    const char *ids[2] = {s->cfg.served_model_name, SRV_ALIAS_CHAT};
    int n = strcmp(ids[0], ids[1]) ? 2 : 1;
    if (id) {
        for (int i = 0; i < n; i++) if (!strcmp(id, ids[i])) return model_entry(s, ids[i]);
        return NULL;
    }
    json_t *o = json_object(), *d = json_array();
    json_object_set_new(o, "object", json_string("list"));
    for (int i = 0; i < n; i++) json_array_append_new(d, model_entry(s, ids[i]));
    json_object_set_new(o, "data", d);
    json_object_set_new(o, "has_more", json_false());
    json_object_set_new(o, "first_id", json_string(ids[0]));
    json_object_set_new(o, "last_id", json_string(ids[n - 1]));
    return o;
}

/* ---- parse ---- */

/* arguments may be a JSON string or a raw value; returns malloc'd text. */
static char *args_text(json_t *a) {
    if (json_is_string(a)) return strdup(json_string_value(a));
    return json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
}

int srv_chat_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e) {
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs || json_is_null(msgs)) return srv_err(e, 400, NULL, NULL, "messages", "missing messages");
    if (!json_is_array(msgs)) return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: messages must be an array");
    if (srv_parse_model(s, root, r, e) || srv_parse_bool(root, "stream", &r->stream, e)) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (json_is_object(so) && srv_parse_bool(so, "include_usage", &r->include_usage, e)) return -1;
    if (srv_parse_thinking(s, root, NULL, r, e) || srv_parse_sampling(root, r, true, true, e)) return -1;
    static const char *const mt[] = {"max_completion_tokens", "max_tokens", NULL};
    if (srv_parse_max_tokens(root, mt, r, e) || srv_parse_stop(json_object_get(root, "stop"), r, e)) return -1;
    int none = srv_parse_tool_choice(json_object_get(root, "tool_choice"), e);
    if (none < 0) return -1;
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tools must be an array");
    size_t i;
    json_t *t;
    if (!none) {
        json_array_foreach(tools, i, t) {
            json_t *fn = json_object_get(t, "function");
            json_t *schema = json_is_object(fn) ? fn : t;
            if (!json_is_object(schema)) return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tool must be an object");
            if (srv_req_add_tool(r, schema, NULL, NULL, false, false, e)) return -1;
        }
    }
    r->tools_active = r->n_tools > 0;
    ds4_err err = {{0}};
    if (!(r->chat = ds4_chat_new(&err))) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: message %zu is not an object", i);
        json_t *rv = json_object_get(m, "role");
        ds4_chat_role role = DS4_ROLE_USER;
        if (rv && !json_is_null(rv)) {
            if (!json_is_string(rv) || ds4_chat_role_parse(json_string_value(rv), &role))
                return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: unknown role in message %zu", i);
        }
        char *content = srv_content_text(json_object_get(m, "content"), false, "message", e);
        if (!content) return -1;
        ds4_chat_msg *cm = ds4_chat_add(r->chat, role, content, &err);
        free(content);
        if (!cm) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
        json_t *rc = json_object_get(m, "reasoning_content");
        if (rc && !json_is_null(rc)) {
            char *rt = srv_content_text(rc, false, "reasoning_content", e);
            if (!rt) return -1;
            int bad = ds4_chat_msg_set_reasoning(cm, rt, &err);
            free(rt);
            if (bad) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
        }
        json_t *tcs = json_object_get(m, "tool_calls"), *tc;
        size_t k;
        if (json_is_array(tcs)) {
            json_array_foreach(tcs, k, tc) {
                json_t *fn = json_object_get(tc, "function");
                const char *name = json_string_value(json_object_get(fn, "name"));
                json_t *a = json_object_get(fn, "arguments");
                if (!name || !a) continue; /* calls missing name or arguments are skipped */
                char *at = args_text(a);
                int bad = !at || ds4_chat_msg_add_tool_call(cm, json_string_value(json_object_get(tc, "id")), name, at, &err);
                free(at);
                if (bad) return srv_err(e, 400, NULL, NULL, "messages", "invalid tool call: %s", err.msg);
            }
        }
        const char *tcid = json_string_value(json_object_get(m, "tool_call_id"));
        if (tcid && ds4_chat_msg_set_tool_call_id(cm, tcid, &err)) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    }
    return 0;
}

/* ---- output ---- */

static const char *finish_name(srv_finish f) {
    switch (f) {
    case SRV_FIN_LENGTH: return "length";
    case SRV_FIN_TOOLS: return "tool_calls";
    default: return "stop";
    }
}

json_t *srv_usage_openai(srv_job *j) {
    json_t *u = json_object(), *pd = json_object(), *cd = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(j->P));
    json_object_set_new(u, "completion_tokens", json_integer(j->G));
    json_object_set_new(u, "total_tokens", json_integer(j->P + j->G));
    json_object_set_new(pd, "cached_tokens", json_integer(j->C));
    json_object_set_new(pd, "cache_write_tokens", json_integer(j->W));
    json_object_set_new(u, "prompt_tokens_details", pd);
    json_object_set_new(cd, "reasoning_tokens", json_integer(j->R));
    json_object_set_new(u, "completion_tokens_details", cd);
    return u;
}

static json_t *chunk(srv_job *j, json_t *delta, const char *finish) {
    json_t *o = json_object(), *ch = json_array();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("chat.completion.chunk"));
    json_object_set_new(o, "created", json_integer(j->created));
    json_object_set_new(o, "model", json_string(j->req->model));
    if (delta) {
        json_t *c = json_object();
        json_object_set_new(c, "index", json_integer(0));
        json_object_set_new(c, "delta", delta);
        json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
        json_array_append_new(ch, c);
    }
    json_object_set_new(o, "choices", ch);
    return o;
}

static void send_delta(srv_job *j, const char *key, json_t *val) {
    json_t *d = json_object();
    json_object_set_new(d, key, val);
    srv_stream_event(j->stream, NULL, chunk(j, d, NULL));
}

static void chat_start(srv_job *j) {
    snprintf(j->id, sizeof j->id, "chatcmpl-%ld", atomic_fetch_add(&j->srv->counter, 1));
    if (!j->stream) return;
    json_t *d = json_object();
    json_object_set_new(d, "role", json_string("assistant"));
    srv_stream_event(j->stream, NULL, chunk(j, d, NULL));
}

static void chat_reasoning(srv_job *j, const char *s, size_t n) {
    if (j->stream) send_delta(j, "reasoning_content", srv_json_strn(s, n));
}

static void chat_text(srv_job *j, const char *s, size_t n) {
    if (j->stream) send_delta(j, "content", srv_json_strn(s, n));
}

static void tool_delta(srv_job *j, srv_call *c, bool header, const char *args, size_t n) {
    json_t *tc = json_object(), *fn = json_object(), *arr = json_array();
    json_object_set_new(tc, "index", json_integer((long)(c - j->calls)));
    if (header) {
        json_object_set_new(tc, "id", json_string(c->id));
        json_object_set_new(tc, "type", json_string("function"));
        json_object_set_new(fn, "name", srv_json_strn(c->name, strlen(c->name)));
    }
    json_object_set_new(fn, "arguments", srv_json_strn(args, n));
    json_object_set_new(tc, "function", fn);
    json_array_append_new(arr, tc);
    send_delta(j, "tool_calls", arr);
}

static void chat_tool_start(srv_job *j, srv_call *c) {
    if (j->stream) tool_delta(j, c, true, "", 0);
}

static void chat_tool_args(srv_job *j, srv_call *c, const char *s, size_t n) {
    if (j->stream) tool_delta(j, c, false, s, n);
}

static void chat_finish(srv_job *j) {
    const char *fin = finish_name(j->finish);
    if (j->stream) {
        json_t *last = chunk(j, json_object(), fin);
        if (!j->req->include_usage) json_object_set_new(last, "usage", srv_usage_openai(j));
        srv_stream_event(j->stream, NULL, last);
        if (j->req->include_usage) {
            json_t *u = chunk(j, NULL, NULL);
            json_object_set_new(u, "usage", srv_usage_openai(j));
            srv_stream_event(j->stream, NULL, u);
        }
        srv_stream_data_raw(j->stream, "[DONE]");
        return;
    }
    json_t *o = json_object(), *ch = json_array(), *c = json_object(), *msg = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("chat.completion"));
    json_object_set_new(o, "created", json_integer(j->created));
    json_object_set_new(o, "model", json_string(j->req->model));
    json_object_set_new(msg, "role", json_string("assistant"));
    json_object_set_new(msg, "content", srv_json_strn(j->content.data, j->content.len));
    if (j->reasoning.len) json_object_set_new(msg, "reasoning_content", srv_json_strn(j->reasoning.data, j->reasoning.len));
    if (j->n_calls) {
        json_t *tcs = json_array();
        for (size_t i = 0; i < j->n_calls; i++) {
            json_t *tc = json_object(), *fn = json_object();
            json_object_set_new(tc, "id", json_string(j->calls[i].id));
            json_object_set_new(tc, "type", json_string("function"));
            json_object_set_new(fn, "name", srv_json_strn(j->calls[i].name, strlen(j->calls[i].name)));
            json_object_set_new(fn, "arguments", srv_json_strn(j->calls[i].args.data, j->calls[i].args.len));
            json_object_set_new(tc, "function", fn);
            json_array_append_new(tcs, tc);
        }
        json_object_set_new(msg, "tool_calls", tcs);
    }
    json_object_set_new(c, "index", json_integer(0));
    json_object_set_new(c, "message", msg);
    json_object_set_new(c, "finish_reason", json_string(fin));
    json_array_append_new(ch, c);
    json_object_set_new(o, "choices", ch);
    json_object_set_new(o, "usage", srv_usage_openai(j));
    j->status = 200;
    j->body = srv_json_dump(o, true, &j->body_len);
}

/* Shared by chat and completions: error frame mid-stream (§12.4) or an HTTP error. */
void srv_openai_fail(srv_job *j) {
    if (j->stream) {
        json_t *o = json_object(), *in = json_object();
        json_object_set_new(in, "message", srv_json_strn(j->err.msg, strlen(j->err.msg)));
        json_object_set_new(in, "type", json_string(j->err.status >= 500 ? "server_error" : j->err.type));
        if (j->err.code) json_object_set_new(in, "code", json_string(j->err.code));
        json_object_set_new(o, "error", in);
        srv_stream_event(j->stream, "error", o);
        return;
    }
    free(j->body);
    j->status = j->err.status ? j->err.status : 500;
    j->body = srv_error_body(&j->err, false, &j->body_len);
}

const srv_out_vt srv_chat_out = {
    .start = chat_start,
    .reasoning = chat_reasoning,
    .text = chat_text,
    .tool_start = chat_tool_start,
    .tool_args = chat_tool_args,
    .finish = chat_finish,
    .fail = srv_openai_fail,
};
