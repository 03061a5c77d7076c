/* Tests for text/chat: byte-exact rendering of DeepSeek's four official
 * encoder cases, the worked examples E1-E6 of ENCODING.md section 11, the
 * ENCODING.md rules stated by example, and a DSML tool-call round trip
 * (render -> parse with text/dsml -> render again). */
#include "test.h"

#include <jansson.h>

#include "text/chat.h"
#include "text/dsml.h"

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    ds4_buf b = {0};
    char tmp[8192];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) ds4_buf_append(&b, tmp, r);
    fclose(f);
    return ds4_buf_take(&b, len);
}

/* Prints the first differing byte offset with some context. */
static void show_diff(const char *name, const char *got, size_t gl, const char *want, size_t wl) {
    size_t i = 0;
    while (i < gl && i < wl && got[i] == want[i]) i++;
    size_t s = i > 60 ? i - 60 : 0;
    fprintf(stderr, "  %s: differs at byte %zu (got %zu bytes, want %zu)\n    got : %.*s\n    want: %.*s\n", name, i,
            gl, wl, (int)((gl - s) < 160 ? gl - s : 160), got + s, (int)((wl - s) < 160 ? wl - s : 160), want + s);
}

static int check_render(const char *name, const ds4_chat *c, const ds4_chat_opts *o, const char *want, size_t wl) {
    ds4_err err = {{0}};
    size_t gl = 0;
    char *got = ds4_chat_render(c, o, &gl, &err);
    CHECKF(got != NULL, "%s: %s", name, err.msg);
    if (!got) return 0;
    int ok = gl == wl && memcmp(got, want, wl) == 0;
    if (!ok) show_diff(name, got, gl, want, wl);
    CHECKF(ok, "%s not byte-exact", name);
    free(got);
    return ok;
}

TEST(official_cases) {
    /* Modes as in DeepSeek's test_encoding_dsv4.py: 1-3 thinking, 4 chat. */
    static const ds4_think_mode modes[4] = {DS4_THINK_HIGH, DS4_THINK_HIGH, DS4_THINK_HIGH, DS4_THINK_NONE};
    for (int i = 1; i <= 4; i++) {
        char in[512], outp[512], name[32];
        snprintf(in, sizeof in, "%s/data/encoding/official_tests/test_input_%d.json", test_shared_dir(), i);
        snprintf(outp, sizeof outp, "%s/data/encoding/official_tests/test_output_%d.txt", test_shared_dir(), i);
        snprintf(name, sizeof name, "official_%d", i);
        ds4_err err = {{0}};
        ds4_chat *c = ds4_chat_from_file(in, &err);
        CHECKF(c != NULL, "%s", err.msg);
        size_t wl = 0;
        char *want = read_all(outp, &wl);
        CHECKF(want != NULL, "cannot read %s", outp);
        if (c && want) {
            ds4_chat_opts o = {.mode = modes[i - 1]};
            check_render(name, c, &o, want, wl);
        }
        free(want);
        ds4_chat_free(c);
    }
}

static const char *WEATHER_TOOL =
    "{\"name\": \"get_weather\", \"description\": \"Get the current weather for a city\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, "
    "\"days\": {\"type\": \"integer\", \"description\": \"Forecast length\"}}, \"required\": [\"city\"]}}";

static json_t *examples;

static void check_example(const char *key, const ds4_chat *c, ds4_think_mode mode, size_t n_ctx) {
    json_t *w = json_object_get(examples, key);
    CHECKF(json_is_string(w), "worked_examples.json lacks %s", key);
    if (!json_is_string(w)) return;
    ds4_chat_opts o = {.mode = mode, .n_ctx = n_ctx};
    check_render(key, c, &o, json_string_value(w), json_string_length(w));
}

TEST(worked_examples) {
    char path[512];
    snprintf(path, sizeof path, "%s/data/encoding/worked_examples.json", test_shared_dir());
    json_error_t je;
    examples = json_load_file(path, 0, &je);
    CHECKF(examples != NULL, "%s: %s", path, je.text);
    if (!examples) return;
    ds4_err err = {{0}};

    ds4_chat *c = ds4_chat_new(&err); /* E1 */
    ds4_chat_add(c, DS4_ROLE_SYSTEM, "You are a helpful assistant.", &err);
    ds4_chat_add(c, DS4_ROLE_USER, "What is the capital of Italy?", &err);
    check_example("E1_chat_single_turn", c, DS4_THINK_NONE, 0);
    ds4_chat_free(c);

    c = ds4_chat_new(&err); /* E2 */
    ds4_chat_add(c, DS4_ROLE_SYSTEM, "You are a helpful assistant.", &err);
    ds4_chat_add(c, DS4_ROLE_USER, "Hi!", &err);
    ds4_chat_add(c, DS4_ROLE_ASSISTANT, "Hello! How can I help?", &err);
    ds4_chat_add(c, DS4_ROLE_USER, "Name a prime number.", &err);
    check_example("E2_chat_multi_turn_history", c, DS4_THINK_NONE, 0);
    ds4_chat_free(c);

    c = ds4_chat_new(&err); /* E3 */
    ds4_chat_add(c, DS4_ROLE_USER, "Hi!", &err);
    ds4_chat_msg_set_reasoning(ds4_chat_add(c, DS4_ROLE_ASSISTANT, "Hello!", &err), "Greet back.", &err);
    ds4_chat_add(c, DS4_ROLE_USER, "What is 17*3?", &err);
    check_example("E3_thinking_multi_turn_drop", c, DS4_THINK_HIGH, 0);
    ds4_chat_free(c);

    c = ds4_chat_new(&err); /* E4: Think Max with a large enough context */
    ds4_chat_add(c, DS4_ROLE_USER, "Prove that sqrt(2) is irrational.", &err);
    check_example("E4_think_max_no_system", c, DS4_THINK_MAX, DS4_THINK_MAX_MIN_CTX);
    check_example("E4_think_max_no_system", c, DS4_THINK_MAX, 1000000);
    {   /* below 384 Ki tokens Max is downgraded: same as High, no prefix */
        ds4_chat_opts lo = {.mode = DS4_THINK_MAX, .n_ctx = DS4_THINK_MAX_MIN_CTX - 1};
        ds4_chat_opts hi = {.mode = DS4_THINK_HIGH};
        char *a = ds4_chat_render(c, &lo, NULL, &err), *b = ds4_chat_render(c, &hi, NULL, &err);
        CHECK(a && b && !strcmp(a, b));
        CHECK(a && !strstr(a, "Reasoning Effort"));
        free(a);
        free(b);
    }
    ds4_chat_free(c);

    c = ds4_chat_new(&err); /* E5 */
    ds4_chat_msg *m = ds4_chat_add(c, DS4_ROLE_SYSTEM, "You are a helpful assistant.", &err);
    ds4_chat_msg_add_tool(m, WEATHER_TOOL, &err);
    ds4_chat_add(c, DS4_ROLE_USER, "Weather in Rome for 2 days?", &err);
    m = ds4_chat_add(c, DS4_ROLE_ASSISTANT, "", &err);
    ds4_chat_msg_set_reasoning(m, "Need the weather tool.", &err);
    ds4_chat_msg_add_tool_call(m, "call_1", "get_weather", "{\"city\": \"Rome\", \"days\": 2}", &err);
    m = ds4_chat_add(c, DS4_ROLE_TOOL, "{\"temp_c\": 21, \"sky\": \"clear\"}", &err);
    ds4_chat_msg_set_tool_call_id(m, "call_1", &err);
    check_example("E5_tool_round_trip_thinking", c, DS4_THINK_HIGH, 0);
    ds4_chat_free(c);

    c = ds4_chat_new(&err); /* E6: results arrive b, a; rendered in call order a, b */
    m = ds4_chat_add(c, DS4_ROLE_SYSTEM, "", &err);
    ds4_chat_msg_add_tool(m, WEATHER_TOOL, &err);
    ds4_chat_add(c, DS4_ROLE_USER, "Rome and Oslo?", &err);
    m = ds4_chat_add(c, DS4_ROLE_ASSISTANT, "Checking both.", &err);
    ds4_chat_msg_add_tool_call(m, "a", "get_weather", "{\"city\": \"Rome\"}", &err);
    ds4_chat_msg_add_tool_call(m, "b", "get_weather", "{\"city\": \"Oslo\", \"days\": 1}", &err);
    ds4_chat_msg_set_tool_call_id(ds4_chat_add(c, DS4_ROLE_TOOL, "Oslo: 3C rain", &err), "b", &err);
    ds4_chat_msg_set_tool_call_id(ds4_chat_add(c, DS4_ROLE_TOOL, "Rome: 21C sun", &err), "a", &err);
    ds4_chat_add(c, DS4_ROLE_ASSISTANT, "Rome 21C and sunny; Oslo 3C with rain.", &err);
    ds4_chat_add(c, DS4_ROLE_USER, "Thanks", &err);
    check_example("E6_tool_round_trip_chat_two_calls", c, DS4_THINK_NONE, 0);
    /* The same conversation given as tools on the request (API helper) renders identically. */
    ds4_chat_free(c);

    json_decref(examples);
    examples = NULL;
}

/* Renders a chat built from inline JSON and compares with the expected text. */
static void check_json_case(const char *name, const char *json, ds4_think_mode mode, const char *want) {
    ds4_err err = {{0}};
    ds4_chat *c = ds4_chat_from_json(json, strlen(json), &err);
    CHECKF(c != NULL, "%s: %s", name, err.msg);
    if (!c) return;
    ds4_chat_opts o = {.mode = mode};
    check_render(name, c, &o, want, strlen(want));
    ds4_chat_free(c);
}

#define BOS DS4_TOK_BOS
#define EOS DS4_TOK_EOS
#define U DS4_TOK_USER
#define A DS4_TOK_ASSISTANT
#define DS DS4_TOK_DSML

TEST(spec_rules) {
    /* ENCODING.md 5: with drop, history looks like chat; the last turn opens <think>. */
    check_json_case("history_drop",
                    "[{\"role\":\"user\",\"content\":\"Hi!\"},{\"role\":\"assistant\",\"content\":\"Hello!\","
                    "\"reasoning_content\":\"x\"},{\"role\":\"user\",\"content\":\"Q\"},"
                    "{\"role\":\"assistant\",\"content\":\"ans\",\"reasoning_content\":\"r\"}]",
                    DS4_THINK_HIGH, BOS U "Hi!" A "</think>Hello!" EOS U "Q" A "<think>r</think>ans" EOS);
    /* Non-thinking: reasoning never shown. */
    check_json_case("chat_ignores_reasoning",
                    "[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"ans\",\"reasoning_content\":\"r\"}]",
                    DS4_THINK_NONE, BOS U "Q" A "</think>ans" EOS);
    /* Empty reasoning with tools present gives <think></think>. */
    {
        const char *j = "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"},"
                        "{\"role\":\"user\",\"content\":\"c\"}]}";
        ds4_err err = {{0}};
        ds4_chat *c = ds4_chat_from_json(j, strlen(j), &err);
        ds4_chat_opts o = {.mode = DS4_THINK_HIGH};
        char *s = c ? ds4_chat_render(c, &o, NULL, &err) : NULL;
        CHECK_STR_CONTAINS(s, "invoke tool calls.\n" U "a" A "<think></think>b" EOS U "c" A "<think>");
        CHECK_STR_CONTAINS(s, "{\"name\": \"f\"}");
        free(s);
        ds4_chat_free(c);
    }
    /* ENCODING.md 3: a user message right after tool results joins that turn. */
    check_json_case("tool_then_user_merge",
                    "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":"
                    "[{\"id\":\"x\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"x\",\"content\":\"R\"},{\"role\":\"user\",\"content\":\"more\"}]",
                    DS4_THINK_NONE,
                    BOS U "q" A "</think>\n\n<" DS "tool_calls>\n<" DS "invoke name=\"f\">\n\n</" DS "invoke>\n</" DS
                    "tool_calls>" EOS U "<tool_result>R</tool_result>\n\nmore" A "</think>");
    /* Unparsable arguments: one raw string parameter "arguments"; non-string values json.dumps style. */
    check_json_case("args_fallback_and_pyjson",
                    "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
                    "{\"function\":{\"name\":\"f\",\"arguments\":\"not json\"}},"
                    "{\"function\":{\"name\":\"g\",\"arguments\":{\"a\":[1,2.50,{\"k\":null}],\"b\":true,\"c\":\"x<&\\n\","
                    "\"d\":1e-7,\"e\":\"\\u00e9\\t\"}}}]}]",
                    DS4_THINK_NONE,
                    BOS U "q" A "</think>\n\n<" DS "tool_calls>\n<" DS "invoke name=\"f\">\n<" DS
                    "parameter name=\"arguments\" string=\"true\">not json</" DS "parameter>\n</" DS "invoke>\n<" DS
                    "invoke name=\"g\">\n<" DS "parameter name=\"a\" string=\"false\">[1, 2.5, {\"k\": null}]</" DS
                    "parameter>\n<" DS "parameter name=\"b\" string=\"false\">true</" DS "parameter>\n<" DS
                    "parameter name=\"c\" string=\"true\">x<&\n</" DS "parameter>\n<" DS
                    "parameter name=\"d\" string=\"false\">1e-07</" DS "parameter>\n<" DS
                    "parameter name=\"e\" string=\"true\">\xc3\xa9\t</" DS "parameter>\n</" DS "invoke>\n</" DS
                    "tool_calls>" EOS);
    /* Response format and a non-action task token; latest_reminder gets the opener before it. */
    check_json_case("response_format_task_query",
                    "[{\"role\":\"system\",\"content\":\"S\",\"response_format\":{\"type\":\"json_object\"}},"
                    "{\"role\":\"user\",\"content\":\"u\",\"task\":\"query\"}]",
                    DS4_THINK_NONE,
                    BOS "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
                        "{\"type\": \"json_object\"}" U "u<\xef\xbd\x9cquery\xef\xbd\x9c>");
    check_json_case("user_then_reminder",
                    "[{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"latest_reminder\",\"content\":\"R\"}]",
                    DS4_THINK_HIGH, BOS U "u" A "<think>" DS4_TOK_REMINDER "R");
    /* Two user messages in a row become one turn joined by a blank line. */
    check_json_case("user_user_merge", "[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]",
                    DS4_THINK_NONE, BOS U "a\n\nb" A "</think>");
    /* Think Max with a system message: prefix first, system text follows directly. */
    {
        ds4_err err = {{0}};
        ds4_chat *c = ds4_chat_new(&err);
        ds4_chat_add(c, DS4_ROLE_SYSTEM, "You are a helpful assistant.", &err);
        ds4_chat_add(c, DS4_ROLE_USER, "x", &err);
        ds4_chat_opts o = {.mode = DS4_THINK_MAX};
        char *s = ds4_chat_render(c, &o, NULL, &err);
        CHECK_STR_CONTAINS(s, "left unchecked.\n\nYou are a helpful assistant." U "x" A "<think>");
        free(s);
        /* tools via the API helper go to the first system message */
        const char *t[1] = {"{\"name\":\"f\"}"};
        CHECK(ds4_chat_attach_tools(c, t, 1, &err) == 0);
        CHECK_EQ_INT(c->n, 2);
        CHECK_EQ_INT(c->msgs[0].n_tools, 1);
        ds4_chat_free(c);
        c = ds4_chat_new(&err);
        ds4_chat_add(c, DS4_ROLE_USER, "x", &err);
        CHECK(ds4_chat_attach_tools(c, t, 1, &err) == 0);
        CHECK(c->n == 2 && c->msgs[0].role == DS4_ROLE_SYSTEM && c->msgs[0].content && !c->msgs[0].content[0]);
        ds4_chat_opts o2 = {0};
        s = ds4_chat_render(c, &o2, NULL, &err);
        CHECK(s && !strncmp(s, BOS "\n\n## Tools\n\n", strlen(BOS "\n\n## Tools\n\n")));
        free(s);
        ds4_chat_free(c);
    }
    /* Errors are reported, not crashed on. */
    {
        ds4_err err = {{0}};
        CHECK(ds4_chat_from_json("[{\"role\":\"wizard\"}]", 19, &err) == NULL);
        CHECK_STR_CONTAINS(err.msg, "role");
        CHECK(ds4_chat_from_json("{", 1, &err) == NULL);
        ds4_chat *c = ds4_chat_new(&err);
        ds4_chat_msg *m = ds4_chat_add(c, DS4_ROLE_SYSTEM, "", &err);
        CHECK(ds4_chat_msg_add_tool(m, "{bad", &err) == -1);
        ds4_chat_free(c);
    }
}

TEST(pyjson_floats) {
    static const struct { const char *in, *out; } cases[] = {
        {"1.0", "1.0"}, {"0.1", "0.1"}, {"1e16", "1e+16"}, {"1e15", "1000000000000000.0"},
        {"0.0001", "0.0001"}, {"0.00001", "1e-05"}, {"-0.0", "-0.0"}, {"123.456", "123.456"},
        {"1.5e300", "1.5e+300"}, {"[]", "[]"}, {"{}", "{}"}, {"\"a/b\\u0001\"", "\"a/b\\u0001\""},
        {"{\"a\":1,\"b\":{\"c\":[true,false,null]}}", "{\"a\": 1, \"b\": {\"c\": [true, false, null]}}"},
        {"12345678901234567", "12345678901234567"}, {"2.5e-3", "0.0025"}, {"1.7976931348623157e308", "1.7976931348623157e+308"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ds4_buf b = {0};
        ds4_err err = {{0}};
        CHECK(ds4_json_pyformat(&b, cases[i].in, strlen(cases[i].in), &err) == 0);
        CHECKF(b.data && !strcmp(b.data, cases[i].out), "%s -> %s (want %s)", cases[i].in, b.data ? b.data : "(null)",
               cases[i].out);
        ds4_buf_free(&b);
    }
}

/* Collects a whole parse into one struct. */
TEST(tool_call_round_trip) {
    ds4_err err = {{0}};
    ds4_chat_tool_call calls[3] = {
        {"c1", "get_weather", "{\"city\": \"Rome\", \"days\": 2}"},
        {"c2", "bash", "{\"command\": \"ls -la && echo \\\"ok\\\" <x>\\nline2\", \"opts\": {\"a\": [1, 2.5, null]}}"},
        {"c3", "noargs", "{}"},
    };
    ds4_chat *c = ds4_chat_new(&err);
    ds4_chat_add(c, DS4_ROLE_USER, "go", &err);
    ds4_chat_msg *m = ds4_chat_add(c, DS4_ROLE_ASSISTANT, "Sure.", &err);
    ds4_chat_msg_set_reasoning(m, "thinking about it", &err);
    for (int i = 0; i < 3; i++) ds4_chat_msg_add_tool_call(m, calls[i].id, calls[i].name, calls[i].arguments, &err);
    ds4_chat_opts o = {.mode = DS4_THINK_HIGH};
    size_t l1 = 0;
    char *p1 = ds4_chat_render(c, &o, &l1, &err);
    CHECK(p1 != NULL);
    ds4_chat_free(c);
    if (!p1) return;
    /* The model output is what follows "<｜Assistant｜><think>" up to EOS. */
    const char *start = strstr(p1, A "<think>") + strlen(A "<think>");
    const char *end = strstr(start, EOS);
    ds4_dsml_result r;
    CHECK(ds4_dsml_parse_all(start, (size_t)(end - start), 1, &r, &err) == 0);
    CHECK(r.reasoning && !strcmp(r.reasoning, "thinking about it"));
    CHECK(r.content && !strcmp(r.content, "Sure."));
    CHECK_EQ_INT(r.n_calls, 3);
    CHECK_EQ_INT(r.n_errors, 0);
    for (size_t i = 0; i < r.n_calls && i < 3; i++) {
        CHECK(!strcmp(r.calls[i].name, calls[i].name));
        json_t *a = json_loads(r.calls[i].arguments, 0, NULL), *b = json_loads(calls[i].arguments, 0, NULL);
        CHECKF(a && b && json_equal(a, b), "call %zu: %s vs %s", i, r.calls[i].arguments, calls[i].arguments);
        json_decref(a);
        json_decref(b);
    }
    /* Render again from the parsed calls: identical bytes. */
    c = ds4_chat_new(&err);
    ds4_chat_add(c, DS4_ROLE_USER, "go", &err);
    m = ds4_chat_add(c, DS4_ROLE_ASSISTANT, r.content, &err);
    ds4_chat_msg_set_reasoning(m, r.reasoning, &err);
    for (size_t i = 0; i < r.n_calls; i++) ds4_chat_msg_add_tool_call(m, calls[i].id, r.calls[i].name, r.calls[i].arguments, &err);
    size_t l2 = 0;
    char *p2 = ds4_chat_render(c, &o, &l2, &err);
    CHECK(p2 && l1 == l2 && !memcmp(p1, p2, l1));
    if (p2 && (l1 != l2 || memcmp(p1, p2, l1))) show_diff("round_trip", p2, l2, p1, l1);
    free(p1);
    free(p2);
    ds4_chat_free(c);
    ds4_dsml_result_free(&r);
}

/* ENCODING.md prose examples and the five API prompts (chat mode, one user message). */
TEST(spec_examples) {
    /* 6.3: two tool results in one user turn, then the thinking opener (tools present, kept). */
    check_json_case("tool_results_turn",
                    "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
                    "{\"id\":\"1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                    "{\"id\":\"2\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"2\",\"content\":\"B\"},"
                    "{\"role\":\"tool\",\"tool_call_id\":\"1\",\"content\":\"A\"}]",
                    DS4_THINK_HIGH,
                    BOS U "q" A "</think>\n\n<" DS "tool_calls>\n<" DS "invoke name=\"f\">\n\n</" DS "invoke>\n<" DS
                    "invoke name=\"f\">\n\n</" DS "invoke>\n</" DS "tool_calls>" EOS U
                    "<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>" A "<think>");
    /* E3 prose: a completed thinking turn, and parsing the raw model output back. */
    check_json_case("completed_thinking_turn",
                    "[{\"role\":\"user\",\"content\":\"What is 17*3?\"},"
                    "{\"role\":\"assistant\",\"content\":\"51\",\"reasoning_content\":\"17*3 = 51.\"}]",
                    DS4_THINK_HIGH, BOS U "What is 17*3?" A "<think>17*3 = 51.</think>51" EOS);
    ds4_dsml_result r;
    ds4_err err = {{0}};
    const char *raw = "17*3 = 51.</think>51";
    CHECK(ds4_dsml_parse_all(raw, strlen(raw), 1, &r, &err) == 0);
    CHECK(!strcmp(r.reasoning, "17*3 = 51.") && !strcmp(r.content, "51") && r.n_calls == 0);
    ds4_dsml_result_free(&r);

    char path[512];
    snprintf(path, sizeof path, "%s/data/encoding/api_prompt_token_counts.jsonl", test_shared_dir());
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (f && getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j) continue;
        ds4_chat *c = ds4_chat_new(&err);
        ds4_chat_add(c, DS4_ROLE_USER, json_string_value(json_object_get(j, "prompt")), &err);
        json_t *want = json_object_get(j, "rendered");
        ds4_chat_opts o = {.mode = DS4_THINK_NONE};
        check_render(json_string_value(json_object_get(j, "name")), c, &o, json_string_value(want), json_string_length(want));
        ds4_chat_free(c);
        json_decref(j);
        n++;
    }
    free(line);
    if (f) fclose(f);
    CHECK_EQ_INT(n, 5);
}

int main(void) {
    RUN(official_cases);
    RUN(worked_examples);
    RUN(spec_rules);
    RUN(spec_examples);
    RUN(pyjson_floats);
    RUN(tool_call_round_trip);
    TEST_END();
}
