/* Request semantics shared by the four endpoints (API.md §4): model echo,
 * thinking resolution, sampling knobs, max tokens, stop sequences, tools and
 * tool_choice, content-part flattening, and the final step every endpoint
 * shares: render the conversation (with exact DSML replay from the tool
 * memory, §19.3), tokenize, check the context (§12.3).
 *
 * Runs on connection threads; touches only immutable server state, the
 * thread-safe tokenizer and the mutex-guarded tool memory. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

srv_req *srv_req_new(srv_api api) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->api = api;
    samp_params_default(&r->samp);
    r->max_tokens = -1;
    return r;
}

void srv_req_free(srv_req *r) {
    if (!r) return;
    free(r->model);
    ds4_chat_free(r->chat);
    for (size_t i = 0; i < r->n_tools; i++) {
        free(r->tools[i].prompt_name);
        free(r->tools[i].wire_name);
        free(r->tools[i].ns);
    }
    free(r->tools);
    for (size_t i = 0; i < r->n_schemas; i++) free(r->schemas[i]);
    free(r->schemas);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->prompt);
    free(r->force_output);
    free(r);
}

int srv_parse_model(srv_ctx *s, json_t *root, srv_req *r, srv_error *e) {
    json_t *m = json_object_get(root, "model");
    if (m && !json_is_null(m) && !json_is_string(m))
        return srv_err(e, 400, NULL, NULL, "model", "invalid JSON request: model must be a string");
    r->model = strdup(json_is_string(m) ? json_string_value(m) : s->cfg.served_model_name);
    if (!r->model) return srv_err(e, 500, NULL, NULL, NULL, "out of memory");
    return 0;
}

int srv_parse_bool(json_t *root, const char *key, bool *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v))
        return srv_err(e, 400, NULL, NULL, key, "invalid JSON request: %s must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

/* reasoning_effort vocabulary (API.md §4.2).  Returns 0 and sets *mode, 1 for
 * null/absent, -1 on an unknown value. */
static int parse_effort(json_t *v, const char *what, ds4_think_mode *mode, srv_error *e) {
    if (!v || json_is_null(v)) return 1;
    if (!json_is_string(v))
        return srv_err(e, 400, NULL, NULL, what, "invalid JSON request: %s must be a string", what);
    const char *s = json_string_value(v);
    if (!strcmp(s, "none")) *mode = DS4_THINK_NONE;
    else if (!strcmp(s, "minimal") || !strcmp(s, "low") || !strcmp(s, "medium") || !strcmp(s, "high") ||
             !strcmp(s, "xhigh"))
        *mode = DS4_THINK_HIGH;
    else if (!strcmp(s, "max")) *mode = DS4_THINK_MAX;
    else return srv_err(e, 400, NULL, NULL, what, "unsupported reasoning effort \"%s\"", s);
    return 0;
}

int srv_parse_thinking(srv_ctx *s, json_t *root, json_t *effort, srv_req *r, srv_error *e) {
    ds4_think_mode mode = s->cfg.default_think;
    bool explicit_ctl = false;
    json_t *th = json_object_get(root, "thinking");
    if (th && !json_is_null(th)) {
        if (json_is_boolean(th)) {
            mode = json_is_true(th) ? DS4_THINK_HIGH : DS4_THINK_NONE;
            explicit_ctl = true;
        } else if (json_is_object(th)) {
            const char *t = json_string_value(json_object_get(th, "type"));
            if (t && !strcmp(t, "enabled")) { mode = DS4_THINK_HIGH; explicit_ctl = true; }
            else if (t && !strcmp(t, "disabled")) { mode = DS4_THINK_NONE; explicit_ctl = true; }
            /* other types (adaptive, ...) keep the default */
        } else {
            return srv_err(e, 400, NULL, NULL, "thinking", "invalid JSON request: thinking must be an object or boolean");
        }
    }
    json_t *tk = json_object_get(root, "think");
    if (tk && !json_is_null(tk)) {
        if (!json_is_boolean(tk)) return srv_err(e, 400, NULL, NULL, "think", "invalid JSON request: think must be a boolean");
        mode = json_is_true(tk) ? DS4_THINK_HIGH : DS4_THINK_NONE;
        explicit_ctl = true;
    }
    int rc = parse_effort(json_object_get(root, "reasoning_effort"), "reasoning_effort", &mode, e);
    if (rc < 0) return -1;
    if (rc == 0) explicit_ctl = true;
    if (effort) {
        rc = parse_effort(effort, "effort", &mode, e);
        if (rc < 0) return -1;
        if (rc == 0) explicit_ctl = true;
    }
    if (!explicit_ctl && r->model) {
        if (!strcmp(r->model, SRV_ALIAS_CHAT)) mode = DS4_THINK_NONE;
        else if (!strcmp(r->model, SRV_ALIAS_REASONER)) mode = DS4_THINK_HIGH;
    }
    r->mode = ds4_chat_effective_mode(mode, s->cfg.ctx);
    return 0;
}

static int get_number(json_t *root, const char *key, double *out, bool *present, srv_error *e) {
    json_t *v = json_object_get(root, key);
    *present = false;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return srv_err(e, 400, NULL, NULL, key, "invalid JSON request: %s must be a number", key);
    *out = json_number_value(v);
    *present = true;
    return 0;
}

int srv_parse_sampling(json_t *root, srv_req *r, bool allow_topk, bool allow_minp, srv_error *e) {
    double v;
    bool p;
    samp_params sp;
    samp_params_default(&sp);
    if (get_number(root, "temperature", &v, &p, e)) return -1;
    if (p) sp.temperature = v < 0 ? 0 : (v > 100 ? 100 : (float)v);
    if (get_number(root, "top_p", &v, &p, e)) return -1;
    if (p) sp.top_p = v < 0 ? 0 : (v > 1 ? 1 : (float)v);
    if (allow_topk) {
        if (get_number(root, "top_k", &v, &p, e)) return -1;
        if (p) sp.top_k = v < 0 ? 0 : (v > 1e9 ? 1000000000 : (int32_t)v);
    }
    if (allow_minp) {
        if (get_number(root, "min_p", &v, &p, e)) return -1;
        if (p) sp.min_p = v < 0 ? 0 : (v > 1 ? 1 : (float)v);
    }
    if (get_number(root, "seed", &v, &p, e)) return -1;
    int64_t seed = p && v >= 1 && v < 9.2e18 ? (int64_t)v : -1;
    /* Thinking mode ignores the client's knobs (API.md §4.3); the seed stays. */
    if (r->mode != DS4_THINK_NONE) samp_params_default(&sp);
    sp.seed = seed;
    r->samp = sp;
    return 0;
}

int srv_parse_max_tokens(json_t *root, const char *const *names, srv_req *r, srv_error *e) {
    for (; *names; names++) {
        json_t *v = json_object_get(root, *names);
        if (!v || json_is_null(v)) continue;
        if (!json_is_number(v)) return srv_err(e, 400, NULL, NULL, *names, "invalid JSON request: %s must be an integer", *names);
        double d = json_number_value(v);
        r->max_tokens = d < 0 ? 0 : (d > 1e15 ? (int64_t)1e15 : (int64_t)d);
        return 0;
    }
    return 0;
}

static int add_stop(srv_req *r, const char *s) {
    if (!*s) return 0;
    char **ns = realloc(r->stop, (r->n_stop + 1) * sizeof *ns);
    if (!ns) return -1;
    r->stop = ns;
    if (!(r->stop[r->n_stop] = strdup(s))) return -1;
    r->n_stop++;
    return 0;
}

int srv_parse_stop(json_t *v, srv_req *r, srv_error *e) {
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) return add_stop(r, json_string_value(v)) ? srv_err(e, 500, NULL, NULL, NULL, "out of memory") : 0;
    if (!json_is_array(v)) return srv_err(e, 400, NULL, NULL, "stop", "invalid JSON request: stop must be a string or an array of strings");
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x)) return srv_err(e, 400, NULL, NULL, "stop", "invalid JSON request: stop must be a string or an array of strings");
        if (add_stop(r, json_string_value(x))) return srv_err(e, 500, NULL, NULL, NULL, "out of memory");
    }
    return 0;
}

int srv_parse_tool_choice(json_t *v, srv_error *e) {
    if (!v || json_is_null(v)) return 0;
    const char *t = NULL;
    if (json_is_string(v)) t = json_string_value(v);
    else if (json_is_object(v)) t = json_string_value(json_object_get(v, "type"));
    else return srv_err(e, 400, NULL, NULL, "tool_choice", "invalid JSON request: tool_choice must be a string or an object");
    /* required / any / forced function: no constrained decoding; treated as
     * auto on every endpoint (API.md §4.7 [improve]). */
    return t && !strcmp(t, "none") ? 1 : 0;
}

int srv_req_add_tool(srv_req *r, json_t *schema, const char *wire_name, const char *ns, bool custom, bool tool_search,
                     srv_error *e) {
    char *js = json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER);
    const char *pname = json_string_value(json_object_get(schema, "name"));
    if (!js || !pname) { free(js); return srv_err(e, 400, NULL, NULL, "tools", "invalid JSON request: tool without a name"); }
    char **sc = realloc(r->schemas, (r->n_schemas + 1) * sizeof *sc);
    srv_tooldecl *td = realloc(r->tools, (r->n_tools + 1) * sizeof *td);
    if (sc) r->schemas = sc;
    if (td) r->tools = td;
    if (!sc || !td) { free(js); return srv_err(e, 500, NULL, NULL, NULL, "out of memory"); }
    r->schemas[r->n_schemas++] = js;
    srv_tooldecl *d = &r->tools[r->n_tools++];
    memset(d, 0, sizeof *d);
    d->prompt_name = strdup(pname);
    d->wire_name = strdup(wire_name ? wire_name : pname);
    d->ns = ns ? strdup(ns) : NULL;
    d->custom = custom;
    d->tool_search = tool_search;
    return 0;
}

char *srv_content_text(json_t *v, bool strict, const char *what, srv_error *e) {
    if (!v || json_is_null(v)) return strdup("");
    if (json_is_string(v)) return strdup(json_string_value(v));
    if (!json_is_array(v)) {
        srv_err(e, 400, NULL, NULL, what, "invalid JSON request: %s content must be a string or an array", what);
        return NULL;
    }
    ds4_buf b = {0};
    ds4_buf_puts(&b, "");
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p) {
        if (json_is_string(p)) { ds4_buf_puts(&b, json_string_value(p)); continue; }
        if (!json_is_object(p)) continue;
        json_t *t = json_object_get(p, "text");
        const char *ty = json_string_value(json_object_get(p, "type"));
        if (json_is_string(t)) { ds4_buf_puts(&b, json_string_value(t)); continue; }
        if (json_is_null(t)) continue;
        if (strict) {
            srv_err(e, 400, NULL, NULL, what, "unsupported content part type \"%s\" (text-only model)", ty ? ty : "?");
            ds4_buf_free(&b);
            return NULL;
        }
    }
    return ds4_buf_take(&b, NULL);
}

/* Exact DSML replay (API.md §19.3): for every assistant turn with tool calls
 * whose ids all resolve to one remembered block, substitute the sampled bytes
 * for the canonical rendering.  The canonical block is found in the rendered
 * prompt in message order (the renderer emits them in that order). */
static int apply_replay(srv_ctx *s, srv_req *r, srv_error *e) {
    if (s->cfg.disable_exact_replay) {
        for (size_t i = 0; i < r->chat->n; i++) if (r->chat->msgs[i].n_tool_calls) r->replay_canonical++;
        return 0;
    }
    size_t cursor = 0;
    for (size_t i = 0; i < r->chat->n; i++) {
        const ds4_chat_msg *m = &r->chat->msgs[i];
        if (m->role != DS4_ROLE_ASSISTANT || !m->n_tool_calls) continue;
        ds4_buf canon = {0};
        if (ds4_chat_render_tool_calls(&canon, m->tool_calls, m->n_tool_calls, NULL) || !canon.data) {
            ds4_buf_free(&canon);
            r->replay_canonical++;
            continue;
        }
        char *hit = memmem(r->prompt + cursor, r->prompt_len - cursor, canon.data, canon.len);
        char *block = NULL;
        size_t blen = 0;
        bool same = true;
        for (size_t k = 0; k < m->n_tool_calls && same; k++) {
            size_t l = 0;
            char *b = m->tool_calls[k].id ? srv_toolmem_get(s->toolmem, m->tool_calls[k].id, &l) : NULL;
            if (!b) { r->replay_missing++; same = false; break; }
            if (!block) { block = b; blen = l; }
            else { same = l == blen && !memcmp(b, block, l); free(b); }
        }
        if (!hit || !same || !block) {
            r->replay_canonical++;
            if (hit) cursor = (size_t)(hit - r->prompt) + canon.len;
            free(block);
            ds4_buf_free(&canon);
            continue;
        }
        size_t at = (size_t)(hit - r->prompt);
        size_t nl = r->prompt_len - canon.len + blen;
        char *np = malloc(nl + 1);
        if (!np) { free(block); ds4_buf_free(&canon); return srv_err(e, 500, NULL, NULL, NULL, "out of memory"); }
        memcpy(np, r->prompt, at);
        memcpy(np + at, block, blen);
        memcpy(np + at + blen, r->prompt + at + canon.len, r->prompt_len - at - canon.len);
        np[nl] = 0;
        free(r->prompt);
        r->prompt = np;
        r->prompt_len = nl;
        cursor = at + blen;
        r->replay_mem++;
        free(block);
        ds4_buf_free(&canon);
    }
    return 0;
}

/* System and developer messages anywhere in the history are collected,
 * joined with a blank line and rendered once at the top (API.md §4.8,
 * Appendix B); Claude Code sends system reminders mid-conversation. */
static int hoist_system(srv_req *r, srv_error *e) {
    ds4_chat *c = r->chat;
    size_t nsys = 0;
    for (size_t i = 0; i < c->n; i++) if (c->msgs[i].role == DS4_ROLE_SYSTEM || c->msgs[i].role == DS4_ROLE_DEVELOPER) nsys++;
    if (nsys == 0 || (nsys == 1 && c->msgs[0].role == DS4_ROLE_SYSTEM)) return 0;
    ds4_buf b = {0};
    ds4_buf_puts(&b, "");
    size_t w = 0;
    for (size_t i = 0; i < c->n; i++) {
        ds4_chat_msg *m = &c->msgs[i];
        if (m->role == DS4_ROLE_SYSTEM || m->role == DS4_ROLE_DEVELOPER) {
            if (m->content && *m->content) {
                if (b.len) ds4_buf_puts(&b, "\n\n");
                ds4_buf_puts(&b, m->content);
            }
            /* Move the message to the end: it is freed with the chat below. */
            continue;
        }
        if (w != i) { ds4_chat_msg t = c->msgs[w]; c->msgs[w] = *m; *m = t; }
        w++;
    }
    /* msgs[w..n) now hold the system messages: rename them to user so the
     * insert below keeps them out of the render, then drop them. */
    size_t keep = w;
    ds4_chat *nc = ds4_chat_new(NULL);
    if (!nc) { ds4_buf_free(&b); return srv_err(e, 500, NULL, NULL, NULL, "out of memory"); }
    /* Hand the trailing system messages to a scratch chat that frees them. */
    for (size_t i = keep; i < c->n; i++) {
        ds4_chat_msg *m = ds4_chat_add(nc, DS4_ROLE_SYSTEM, NULL, NULL);
        if (m) { ds4_chat_msg t = *m; *m = c->msgs[i]; c->msgs[i] = t; }
    }
    ds4_chat_free(nc);
    for (size_t i = keep; i < c->n; i++) memset(&c->msgs[i], 0, sizeof c->msgs[i]);
    c->n = keep;
    ds4_err err = {{0}};
    int rc = ds4_chat_insert(c, 0, DS4_ROLE_SYSTEM, b.data, &err) ? 0 : srv_err(e, 500, NULL, NULL, NULL, "%s", err.msg);
    ds4_buf_free(&b);
    return rc;
}

int srv_req_render(srv_ctx *s, srv_req *r, srv_error *e) {
    ds4_err err = {{0}};
    if (hoist_system(r, e)) return -1;
    if (r->tools_active && r->n_schemas &&
        ds4_chat_attach_tools(r->chat, (const char *const *)r->schemas, r->n_schemas, &err))
        return srv_err(e, 400, NULL, NULL, "tools", "invalid tools: %s", err.msg);
    ds4_chat_opts o = {.mode = r->mode, .n_ctx = s->cfg.ctx};
    r->prompt = ds4_chat_render(r->chat, &o, &r->prompt_len, &err);
    if (!r->prompt) return srv_err(e, 400, NULL, NULL, NULL, "cannot render the conversation: %s", err.msg);
    if (apply_replay(s, r, e)) return -1;
    if (!r->count_only && (r->replay_mem || r->replay_canonical || r->replay_missing))
        srv_log("tool_replay: mem=%d disk=0 canonical=%d missing_ids=%d", r->replay_mem, r->replay_canonical,
                r->replay_missing);
    ds4_tok_ids ids = {0};
    if (ds4_tok_encode(s->tok, r->prompt, r->prompt_len, 0, &ids, &err)) {
        ds4_tok_ids_free(&ids);
        return srv_err(e, 500, NULL, NULL, NULL, "tokenizer failed: %s", err.msg);
    }
    r->n_prompt_tokens = ids.n;
    ds4_tok_ids_free(&ids);
    /* count_tokens must answer above the context too: Claude Code counts
     * large tool output to decide on truncation and compaction. */
    if (!r->count_only && r->n_prompt_tokens >= s->cfg.ctx) {
        const char *param = r->api == SRV_API_RESPONSES ? "input" : r->api == SRV_API_COMPLETIONS ? "prompt" : "messages";
        if (r->api == SRV_API_MESSAGES)
            srv_err(e, 400, NULL, "context_length_exceeded", param, "prompt is too long: %zu tokens > %u maximum",
                    r->n_prompt_tokens, s->cfg.ctx);
        else
            srv_err(e, 400, NULL, "context_length_exceeded", param,
                    "Prompt has %zu tokens, but the configured context size is %u tokens", r->n_prompt_tokens,
                    s->cfg.ctx);
        e->n_prompt = (long)r->n_prompt_tokens;
        e->n_ctx = (long)s->cfg.ctx;
        return -1;
    }
    return 0;
}
