/* ds4-server end to end: drives the node --test suite in tests/server.
 *
 * Makes a small synthetic model with the real tokenizer (4 layers of the tiny
 * preset: ratio 0, 0, 4, 128, so compressed and indexer state are exercised),
 * starts ds4-server on a free 127.0.0.1 port with --test-hooks (the
 * x-ds4-test-output header forces outputs such as tool calls), installs the
 * official `openai` and `@anthropic-ai/sdk` packages into
 * tests/server/node_modules if they are missing (npm install from the
 * committed package.json/lock), runs `node --test` on the tests/server .test.mjs files,
 * stops the server with SIGTERM and passes iff node passed and the server
 * exited 0.  All traffic stays on loopback; the run is bounded in time.
 * Without node/npm, or if npm install fails (offline), the test fails and
 * says so. */
#include "test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "convert/mkmodel.h"

#define API_KEY "ds4-test-key"
#define NODE_TIMEOUT_S 2400

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* GET /health over a raw loopback socket; 1 when it answers 200. */
static int health_ok(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        const char *req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if (write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
            char buf[64] = {0};
            ssize_t n = read(fd, buf, sizeof buf - 1);
            ok = n > 12 && !strncmp(buf + 9, "200", 3);
        }
    }
    close(fd);
    return ok;
}

static int have_cmd(const char *cmd) {
    char line[256];
    snprintf(line, sizeof line, "%s --version >/dev/null 2>&1", cmd);
    return system(line) == 0;
}

static void print_tail(const char *path, int lines) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' >&2", lines, path);
    if (system(cmd)) {}
}

/* Waits for pid up to timeout_s; kills it after that.  Returns the status. */
static int wait_for(pid_t pid, int timeout_s, const char *what) {
    time_t t0 = time(NULL);
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return st;
        if (r < 0) return -1;
        if (time(NULL) - t0 > timeout_s) {
            fprintf(stderr, "test_server: %s did not finish in %d s; killing it\n", what, timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(100 * 1000);
    }
}

int main(void) {
    test_current = "server";
    const char *tmp = test_tmpdir();
    char model[700], log[700], trace[700], tokjson[700], bin[PATH_MAX], clients[700], modules[700];
    snprintf(model, sizeof model, "%s/server-tiny.gguf", tmp);
    snprintf(log, sizeof log, "%s/server.log", tmp);
    snprintf(trace, sizeof trace, "%s/server.trace", tmp);
    snprintf(clients, sizeof clients, "%s/data/clients", test_shared_dir());
    struct stat sb;
    if (stat("data/tokenizer.json", &sb) == 0) snprintf(tokjson, sizeof tokjson, "data/tokenizer.json");
    else snprintf(tokjson, sizeof tokjson, "%s/data/tokenizer/tokenizer.json", test_shared_dir());

    if (!have_cmd("node") || !have_cmd("npm")) {
        fprintf(stderr, "test_server: FAIL: node and npm are required (node >= 20) to run tests/server\n");
        return 1;
    }
    snprintf(modules, sizeof modules, "tests/server/node_modules/openai/package.json");
    char mod2[700];
    snprintf(mod2, sizeof mod2, "tests/server/node_modules/@anthropic-ai/sdk/package.json");
    if (stat(modules, &sb) || stat(mod2, &sb)) {
        fprintf(stderr, "test_server: installing the SDKs (npm install in tests/server)\n");
        if (system("cd tests/server && npm install --no-audit --no-fund >&2")) {
            fprintf(stderr, "test_server: FAIL: npm install failed (offline? CI needs npm registry access)\n");
            return 1;
        }
    }

    ds4_hparams hp;
    ds4_err err = {{0}};
    ds4_mkmodel_opts mo = {.recipe = "q8_0", .seed = 3, .tokenizer_json = tokjson};
    if (ds4_mkmodel_preset("tiny", &hp, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    ds4_mkmodel_set_layers(&hp, 4);
    if (ds4_mkmodel(model, &hp, &mo, NULL, &err)) {
        fprintf(stderr, "test_server: cannot make the test model: %s\n", err.msg);
        return 1;
    }
    char rel[600];
    snprintf(rel, sizeof rel, "%s/ds4-server", test_bindir());
    if (!realpath(rel, bin)) {
        fprintf(stderr, "test_server: FAIL: %s not found (build it first)\n", rel);
        return 1;
    }

    int port = free_port();
    char port_s[16], base[64];
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    pid_t srv = fork();
    if (srv == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execl(bin, bin, "-m", model, "--host", "127.0.0.1", "--port", port_s, "--ctx", "16384", "-t", "2", "--api-key",
              API_KEY, "--test-hooks", "--max-body-mb", "1", "--trace", trace, (char *)NULL);
        _exit(127);
    }
    int up = 0;
    for (int i = 0; i < 600 && !up; i++) {
        int st;
        if (waitpid(srv, &st, WNOHANG) == srv) break;
        up = health_ok(port);
        if (!up) usleep(100 * 1000);
    }
    if (!up) {
        fprintf(stderr, "test_server: FAIL: ds4-server did not come up on %s\n", base);
        print_tail(log, 30);
        kill(srv, SIGKILL);
        waitpid(srv, NULL, 0);
        return 1;
    }

    /* node --test on every tests/server .test.mjs file, one file at a time. */
    char *argv[64];
    int argc = 0;
    argv[argc++] = "node";
    argv[argc++] = "--test";
    argv[argc++] = "--test-concurrency=1";
    DIR *d = opendir("tests/server");
    struct dirent *de;
    static char names[48][300];
    int nf = 0;
    while (d && (de = readdir(d)) && nf < 48) {
        size_t l = strlen(de->d_name);
        if (l > 9 && !strcmp(de->d_name + l - 9, ".test.mjs")) snprintf(names[nf++], 300, "tests/server/%s", de->d_name);
    }
    if (d) closedir(d);
    for (int i = 0; i < nf; i++) argv[argc++] = names[i];
    argv[argc] = NULL;
    char nodelog[700];
    snprintf(nodelog, sizeof nodelog, "%s/node.log", tmp);
    pid_t node = fork();
    if (node == 0) {
        /* TAP output to a file: tests/run.sh echoes indented lines. */
        int fd = open(nodelog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        setenv("DS4_BASE", base, 1);
        setenv("DS4_API_KEY", API_KEY, 1);
        setenv("DS4_SERVER_BIN", bin, 1);
        setenv("DS4_MODEL", model, 1);
        setenv("DS4_TMP", tmp, 1);
        setenv("DS4_CLIENTS", clients, 1);
        execvp("node", argv);
        _exit(127);
    }
    int nst = wait_for(node, NODE_TIMEOUT_S, "node --test");
    int node_ok = nst >= 0 && WIFEXITED(nst) && WEXITSTATUS(nst) == 0;

    kill(srv, SIGTERM);
    int sst = wait_for(srv, 120, "ds4-server shutdown");
    int srv_ok = sst >= 0 && WIFEXITED(sst) && WEXITSTATUS(sst) == 0;
    test_checks += 2;
    if (!node_ok) {
        test_failures++;
        fprintf(stderr, "  FAIL node --test (status %d); failing tests (full TAP in %s):\n", nst, nodelog);
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "grep -E '^not ok|^# (pass|fail)|error:|expected|actual' '%s' | head -40 >&2", nodelog);
        if (system(cmd)) {}
        fprintf(stderr, "  server log tail:\n");
        print_tail(log, 20);
    } else {
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "grep -E '^# (tests|pass|fail)' '%s' | tr '\\n' ' '; echo", nodelog);
        if (system(cmd)) {}
    }
    if (!srv_ok) {
        test_failures++;
        fprintf(stderr, "  FAIL ds4-server did not exit cleanly on SIGTERM (status %d)\n", sst);
        print_tail(log, 20);
    }
    printf("%s node suite\n%s server shutdown\n", node_ok ? "ok  " : "FAIL", srv_ok ? "ok  " : "FAIL");
    if (node_ok && srv_ok) {
        unlink(model);
        char cmd[800];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd)) {}
    }
    TEST_END();
}
