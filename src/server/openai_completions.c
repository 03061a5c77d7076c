/* POST /v1/completions (API.md §7).  Not raw completion: the prompt becomes
 * one user turn after the system text "You are a helpful assistant" (ds4
 * behaviour, kept), so the model sees its chat template.  Reasoning is not
 * split off: it stays in the returned text (the parser still runs so a
 * "</think>" is recognised, and both reasoning and text go to "text"). */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

int srv_completions_parse(srv_ctx *s, json_t *root, srv_req *r, srv_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (json_is_array(p)) p = json_array_get(p, 0);
    if (!p || json_is_null(p)) return srv_err(e, 400, NULL, NULL, "prompt", "missing prompt");
    if (!json_is_string(p)) return srv_err(e, 400, NULL, NULL, "prompt", "invalid JSON request: prompt must be a string");
    if (srv_parse_model(s, root, r, e) || srv_parse_bool(root, "stream", &r->stream, e)) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (json_is_object(so) && srv_parse_bool(so, "include_usage", &r->include_usage, e)) return -1;
    if (srv_parse_thinking(s, root, NULL, r, e) || srv_parse_sampling(root, r, true, true, e)) return -1;
    static const char *const mt[] = {"max_tokens", NULL};
    if (srv_parse_max_tokens(root, mt, r, e) || srv_parse_stop(json_object_get(root, "stop"), r, e)) return -1;
    ds4_err err = {{0}};
    if (!(r->chat = ds4_chat_new(&err)) || !ds4_chat_add(r->chat, DS4_ROLE_SYSTEM, "You are a helpful assistant", &err) ||
        !ds4_chat_add(r->chat, DS4_ROLE_USER, json_string_value(p), &err))
        return srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    return 0;
}

static json_t *frame(srv_job *j, json_t *text, const char *finish) {
    json_t *o = json_object(), *ch = json_array();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("text_completion"));
    json_object_set_new(o, "created", json_integer(j->created));
    json_object_set_new(o, "model", json_string(j->req->model));
    if (text) {
        json_t *c = json_object();
        json_object_set_new(c, "text", text);
        json_object_set_new(c, "index", json_integer(0));
        json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
        json_array_append_new(ch, c);
    }
    json_object_set_new(o, "choices", ch);
    return o;
}

static void cmpl_start(srv_job *j) {
    snprintf(j->id, sizeof j->id, "cmpl-%ld", atomic_fetch_add(&j->srv->counter, 1));
}

static void cmpl_text(srv_job *j, const char *s, size_t n) {
    if (j->stream && n) srv_stream_event(j->stream, NULL, frame(j, srv_json_strn(s, n), NULL));
}

static void cmpl_reasoning_end(srv_job *j) {
    /* The text keeps the reasoning, and with it the closing tag. */
    cmpl_text(j, "</think>", 8);
}

static void cmpl_finish(srv_job *j) {
    const char *fin = j->finish == SRV_FIN_LENGTH ? "length" : "stop";
    if (j->stream) {
        srv_stream_event(j->stream, NULL, frame(j, json_string(""), fin));
        if (j->req->include_usage) {
            json_t *u = frame(j, NULL, NULL);
            json_object_set_new(u, "usage", srv_usage_openai(j));
            srv_stream_event(j->stream, NULL, u);
        }
        srv_stream_data_raw(j->stream, "[DONE]");
        return;
    }
    ds4_buf all = {0};
    ds4_buf_puts(&all, "");
    if (j->reasoning.len) ds4_buf_append(&all, j->reasoning.data, j->reasoning.len);
    if (j->reasoning_closed && j->req->mode != DS4_THINK_NONE) ds4_buf_puts(&all, "</think>");
    if (j->content.len) ds4_buf_append(&all, j->content.data, j->content.len);
    json_t *o = frame(j, srv_json_strn(all.data, all.len), fin);
    ds4_buf_free(&all);
    json_object_set_new(o, "usage", srv_usage_openai(j));
    j->status = 200;
    j->body = srv_json_dump(o, true, &j->body_len);
}

const srv_out_vt srv_completions_out = {
    .start = cmpl_start,
    .reasoning = cmpl_text,
    .reasoning_end = cmpl_reasoning_end,
    .text = cmpl_text,
    .finish = cmpl_finish,
    .fail = srv_openai_fail,
};
