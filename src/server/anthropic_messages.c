/* POST /v1/messages and /v1/messages/count_tokens (API.md §9).
 *
 * Parse: system (string or text blocks; parts starting "x-anthropic-" are
 * dropped: Claude Code's per-request billing hash would defeat every prefix
 * match), messages with text / thinking / tool_use / tool_result blocks
 * (tool results become tool messages in block order; images and documents
 * are ignored), tools {name,description,input_schema} rendered verbatim.
 * Output: message bodies, or the event sequence message_start, ping, content
 * blocks (one open at a time, consecutive indices; thinking closes with a
 * signature_delta), message_delta with cumulative usage, message_stop. */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* A tool_result must answer a tool_use replayed earlier in the same request
 * (API.md §9.2; there is no live-state binding without the replay). */
static bool id_replayed(json_t *msgs, size_t upto, const char *id) {
    size_t i, k;
    json_t *m, *b;
    json_array_foreach(msgs, i, m) {
        if (i >= upto) break;
        json_array_foreach(json_object_get(m, "content"), k, b) {
            const char *ty = json_string_value(json_object_get(b, "type"));
            const char *bid = json_string_value(json_object_get(b, "id"));
            if (ty && !strcmp(ty, "tool_use") && bid && !strcmp(bid, id)) return true;
        }
    }
    return false;
}

static int add_tool_result(srv_req *r, json_t *b, srv_error *e) {
    ds4_err err = {{0}};
    char *txt = srv_content_text(json_object_get(b, "content"), false, "tool_result", e);
    if (!txt) return -1;
    ds4_chat_msg *m = ds4_chat_add(r->chat, DS4_ROLE_TOOL, txt, &err);
    free(txt);
    if (!m) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    const char *id = json_string_value(json_object_get(b, "tool_use_id"));
    if (id && ds4_chat_msg_set_tool_call_id(m, id, &err)) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    return 0;
}

int srv_messages_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e) {
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs || json_is_null(msgs)) return srv_err(e, 400, NULL, NULL, "messages", "missing messages");
    if (!json_is_array(msgs)) return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: messages must be an array");
    if (srv_parse_model(s, root, r, e) || srv_parse_bool(root, "stream", &r->stream, e)) return -1;
    json_t *oc = json_object_get(root, "output_config");
    if (srv_parse_thinking(s, root, json_is_object(oc) ? json_object_get(oc, "effort") : NULL, r, e)) return -1;
    if (srv_parse_sampling(root, r, true, false, e)) return -1;
    static const char *const mt[] = {"max_tokens", NULL};
    if (srv_parse_max_tokens(root, mt, r, e) || srv_parse_stop(json_object_get(root, "stop_sequences"), r, e)) return -1;
    int none = srv_parse_tool_choice(json_object_get(root, "tool_choice"), e);
    if (none < 0) return -1;
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tools must be an array");
    size_t i, k;
    json_t *t, *b;
    if (!none) {
        json_array_foreach(tools, i, t) {
            if (!json_is_object(t)) return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tool must be an object");
            if (!json_is_string(json_object_get(t, "name"))) continue; /* hosted tool types without a schema */
            if (srv_req_add_tool(r, t, NULL, NULL, false, false, e)) return -1;
        }
    }
    r->tools_active = r->n_tools > 0;
    ds4_err err = {{0}};
    if (!(r->chat = ds4_chat_new(&err))) return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    /* system */
    json_t *sys = json_object_get(root, "system");
    ds4_buf st = {0};
    if (json_is_string(sys)) {
        ds4_buf_puts(&st, json_string_value(sys));
    } else if (json_is_array(sys)) {
        json_array_foreach(sys, i, b) {
            const char *txt = json_is_string(b) ? json_string_value(b) : json_string_value(json_object_get(b, "text"));
            if (!txt || !strncmp(txt, "x-anthropic-", 12)) continue;
            if (st.len) ds4_buf_puts(&st, "\n\n");
            ds4_buf_puts(&st, txt);
        }
    } else if (sys && !json_is_null(sys)) {
        return srv_err(e, 400, NULL, NULL, "system", "invalid JSON request: system must be a string or an array");
    }
    if (st.len && !ds4_chat_add(r->chat, DS4_ROLE_SYSTEM, st.data, &err)) {
        ds4_buf_free(&st);
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    }
    ds4_buf_free(&st);
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: message %zu is not an object", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        bool assistant = role && !strcmp(role, "assistant");
        /* Claude Code also sends system reminders as role "system" messages. */
        bool system = role && (!strcmp(role, "system") || !strcmp(role, "developer"));
        if (role && !assistant && !system && strcmp(role, "user"))
            return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: unknown role \"%s\"", role);
        json_t *c = json_object_get(m, "content");
        ds4_buf text = {0}, reas = {0};
        ds4_buf_puts(&text, "");
        bool has_reas = false;
        ds4_chat_msg *am = NULL;
        if (json_is_string(c)) {
            ds4_buf_puts(&text, json_string_value(c));
        } else if (json_is_array(c)) {
            json_array_foreach(c, k, b) {
                const char *ty = json_string_value(json_object_get(b, "type"));
                if (!ty) continue;
                if (!strcmp(ty, "text")) {
                    const char *tx = json_string_value(json_object_get(b, "text"));
                    if (tx) ds4_buf_puts(&text, tx);
                } else if (!strcmp(ty, "thinking") && assistant) {
                    const char *tx = json_string_value(json_object_get(b, "thinking"));
                    if (tx) { ds4_buf_puts(&reas, tx); has_reas = true; }
                } else if (!strcmp(ty, "tool_use") && assistant) {
                    const char *name = json_string_value(json_object_get(b, "name"));
                    json_t *in = json_object_get(b, "input");
                    if (!name) continue;
                    if (!am && !(am = ds4_chat_add(r->chat, DS4_ROLE_ASSISTANT, NULL, &err))) goto oom;
                    char *args = in ? json_dumps(in, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : strdup("{}");
                    int bad = !args || ds4_chat_msg_add_tool_call(am, json_string_value(json_object_get(b, "id")), name, args, &err);
                    free(args);
                    if (bad) { ds4_buf_free(&text); ds4_buf_free(&reas); return srv_err(e, 400, NULL, NULL, "messages", "invalid tool_use: %s", err.msg); }
                } else if (!strcmp(ty, "tool_result") && !assistant) {
                    const char *tid = json_string_value(json_object_get(b, "tool_use_id"));
                    if (!tid || !id_replayed(msgs, i, tid)) {
                        ds4_buf_free(&text);
                        ds4_buf_free(&reas);
                        return srv_err(e, 400, NULL, NULL, "messages",
                                       "Anthropic continuation state is not available for tool_use_id %s; retry by "
                                       "replaying the full messages history", tid ? tid : "(missing)");
                    }
                    if (add_tool_result(r, b, e)) { ds4_buf_free(&text); ds4_buf_free(&reas); return -1; }
                }
            }
        } else if (c && !json_is_null(c)) {
            ds4_buf_free(&text);
            return srv_err(e, 400, NULL, NULL, "messages", "invalid JSON request: content must be a string or an array");
        }
        if (assistant) {
            if (!am && !(am = ds4_chat_add(r->chat, DS4_ROLE_ASSISTANT, NULL, &err))) goto oom;
            /* tool_use blocks were added first; set the text now. */
            free(am->content);
            am->content = strdup(text.data);
            if (has_reas && ds4_chat_msg_set_reasoning(am, reas.data ? reas.data : "", &err)) goto oom;
        } else if (system) {
            if (text.len && !ds4_chat_add(r->chat, DS4_ROLE_SYSTEM, text.data, &err)) goto oom;
        } else if (text.len || !json_is_array(c)) {
            if (!ds4_chat_add(r->chat, DS4_ROLE_USER, text.data, &err)) goto oom;
        }
        ds4_buf_free(&text);
        ds4_buf_free(&reas);
        continue;
    oom:
        ds4_buf_free(&text);
        ds4_buf_free(&reas);
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    }
    return 0;
}

/* ---- output ---- */

static json_t *usage(srv_job *j, bool with_output) {
    json_t *u = json_object();
    long in = j->P - j->C - j->W;
    json_object_set_new(u, "input_tokens", json_integer(in > 0 ? in : 0));
    if (with_output) json_object_set_new(u, "output_tokens", json_integer(j->G));
    json_object_set_new(u, "cache_read_input_tokens", json_integer(j->C));
    json_object_set_new(u, "cache_creation_input_tokens", json_integer(j->W));
    return u;
}

static void ev(srv_job *j, const char *type, json_t *o) {
    json_t *x = json_object();
    json_object_set_new(x, "type", json_string(type));
    json_object_update(x, o);
    json_decref(o);
    srv_stream_event(j->stream, type, x);
}

static void block_start(srv_job *j, int kind, json_t *cb) {
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(j->block));
    json_object_set_new(o, "content_block", cb);
    ev(j, "content_block_start", o);
    j->open_kind = kind;
}

static void block_delta(srv_job *j, const char *dtype, const char *key, json_t *val) {
    json_t *o = json_object(), *d = json_object();
    json_object_set_new(d, "type", json_string(dtype));
    json_object_set_new(d, key, val);
    json_object_set_new(o, "index", json_integer(j->block));
    json_object_set_new(o, "delta", d);
    ev(j, "content_block_delta", o);
}

static void block_stop(srv_job *j) {
    if (!j->open_kind) return;
    if (j->open_kind == 1) block_delta(j, "signature_delta", "signature", json_string(j->id));
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(j->block));
    ev(j, "content_block_stop", o);
    j->block++;
    j->open_kind = 0;
}

static void msg_start(srv_job *j) {
    srv_random_id(j->id, sizeof j->id, "msg_", 12);
    if (!j->stream) return;
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(j->id));
    json_object_set_new(m, "type", json_string("message"));
    json_object_set_new(m, "role", json_string("assistant"));
    json_object_set_new(m, "model", json_string(j->req->model));
    json_object_set_new(m, "content", json_array());
    json_object_set_new(m, "stop_reason", json_null());
    json_object_set_new(m, "stop_sequence", json_null());
    json_object_set_new(m, "usage", usage(j, true));
    json_t *o = json_object();
    json_object_set_new(o, "message", m);
    ev(j, "message_start", o);
    ev(j, "ping", json_object());
    /* From now on keep-alives are real protocol events (API.md §14.4). */
    srv_stream_set_keepalive(j->stream, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

static void msg_reasoning(srv_job *j, const char *s, size_t n) {
    if (!j->stream) return;
    if (j->open_kind != 1) {
        block_stop(j);
        json_t *cb = json_object();
        json_object_set_new(cb, "type", json_string("thinking"));
        json_object_set_new(cb, "thinking", json_string(""));
        json_object_set_new(cb, "signature", json_string(""));
        block_start(j, 1, cb);
    }
    block_delta(j, "thinking_delta", "thinking", srv_json_strn(s, n));
}

static void msg_reasoning_end(srv_job *j) {
    if (j->stream && j->open_kind == 1) block_stop(j);
}

static void msg_text(srv_job *j, const char *s, size_t n) {
    if (!j->stream) return;
    if (j->open_kind != 2) {
        block_stop(j);
        json_t *cb = json_object();
        json_object_set_new(cb, "type", json_string("text"));
        json_object_set_new(cb, "text", json_string(""));
        block_start(j, 2, cb);
        j->msg_index = 1; /* a text block was sent */
    }
    block_delta(j, "text_delta", "text", srv_json_strn(s, n));
}

static void msg_tool_start(srv_job *j, srv_call *c) {
    if (!j->stream) return;
    block_stop(j);
    json_t *cb = json_object();
    json_object_set_new(cb, "type", json_string("tool_use"));
    json_object_set_new(cb, "id", json_string(c->id));
    json_object_set_new(cb, "name", srv_json_strn(c->name, strlen(c->name)));
    json_object_set_new(cb, "input", json_object());
    block_start(j, 3, cb);
}

static void msg_tool_args(srv_job *j, srv_call *c, const char *s, size_t n) {
    (void)c;
    if (j->stream && j->open_kind == 3) block_delta(j, "input_json_delta", "partial_json", srv_json_strn(s, n));
}

static void msg_tool_end(srv_job *j, srv_call *c) {
    (void)c;
    if (j->stream && j->open_kind == 3) block_stop(j);
}

static const char *stop_reason(srv_finish f) {
    switch (f) {
    case SRV_FIN_STOPSEQ: return "stop_sequence";
    case SRV_FIN_LENGTH: return "max_tokens";
    case SRV_FIN_TOOLS: return "tool_use";
    default: return "end_turn";
    }
}

static void msg_finish(srv_job *j) {
    json_t *seq = j->finish == SRV_FIN_STOPSEQ && j->stop_hit ? json_string(j->stop_hit) : json_null();
    if (j->stream) {
        block_stop(j);
        if (j->msg_index < 0 && !j->n_calls) {
            json_t *cb = json_object();
            json_object_set_new(cb, "type", json_string("text"));
            json_object_set_new(cb, "text", json_string(""));
            block_start(j, 2, cb);
            block_stop(j);
        }
        json_t *o = json_object(), *d = json_object();
        json_object_set_new(d, "stop_reason", json_string(stop_reason(j->finish)));
        json_object_set_new(d, "stop_sequence", seq);
        json_object_set_new(o, "delta", d);
        json_t *u = usage(j, false);
        json_t *u2 = json_object();
        json_object_set_new(u2, "output_tokens", json_integer(j->G));
        json_object_update(u2, u);
        json_decref(u);
        json_object_set_new(o, "usage", u2);
        ev(j, "message_delta", o);
        ev(j, "message_stop", json_object());
        return;
    }
    json_t *o = json_object(), *content = json_array();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "type", json_string("message"));
    json_object_set_new(o, "role", json_string("assistant"));
    json_object_set_new(o, "model", json_string(j->req->model));
    if (j->reasoning.len) {
        json_t *b = json_object();
        json_object_set_new(b, "type", json_string("thinking"));
        json_object_set_new(b, "thinking", srv_json_strn(j->reasoning.data, j->reasoning.len));
        json_object_set_new(b, "signature", json_string(j->id));
        json_array_append_new(content, b);
    }
    if (j->content.len || !j->n_calls) {
        json_t *b = json_object();
        json_object_set_new(b, "type", json_string("text"));
        json_object_set_new(b, "text", srv_json_strn(j->content.data, j->content.len));
        json_array_append_new(content, b);
    }
    for (size_t i = 0; i < j->n_calls; i++) {
        json_t *b = json_object();
        json_object_set_new(b, "type", json_string("tool_use"));
        json_object_set_new(b, "id", json_string(j->calls[i].id));
        json_object_set_new(b, "name", srv_json_strn(j->calls[i].name, strlen(j->calls[i].name)));
        json_t *in = j->calls[i].args.data ? json_loadb(j->calls[i].args.data, j->calls[i].args.len, 0, NULL) : NULL;
        if (!json_is_object(in)) {
            srv_log("tool call %s: arguments are not a JSON object, sending {}: %.*s", j->calls[i].name,
                    (int)j->calls[i].args.len, j->calls[i].args.data ? j->calls[i].args.data : "");
            json_decref(in);
            in = json_object();
        }
        json_object_set_new(b, "input", in);
        json_array_append_new(content, b);
    }
    json_object_set_new(o, "content", content);
    json_object_set_new(o, "stop_reason", json_string(stop_reason(j->finish)));
    json_object_set_new(o, "stop_sequence", seq);
    json_object_set_new(o, "usage", usage(j, true));
    j->status = 200;
    j->body = srv_json_dump(o, true, &j->body_len);
}

static void msg_fail(srv_job *j) {
    if (j->stream) {
        json_t *o = json_object(), *in = json_object();
        json_object_set_new(in, "type", json_string(j->err.status == 503 || j->err.status == 529 ? "overloaded_error" : "api_error"));
        json_object_set_new(in, "message", srv_json_strn(j->err.msg, strlen(j->err.msg)));
        json_object_set_new(o, "error", in);
        ev(j, "error", o);
        return;
    }
    free(j->body);
    j->status = j->err.status ? j->err.status : 500;
    j->body = srv_error_body(&j->err, true, &j->body_len);
}

const srv_out_vt srv_messages_out = {
    .start = msg_start,
    .reasoning = msg_reasoning,
    .reasoning_end = msg_reasoning_end,
    .text = msg_text,
    .tool_start = msg_tool_start,
    .tool_args = msg_tool_args,
    .tool_end = msg_tool_end,
    .finish = msg_finish,
    .fail = msg_fail,
};
