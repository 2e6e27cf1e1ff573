/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

static int parse(const char *s, VarlinkCall *c, char *why) {
        return varlink_call_parse(s, strlen(s), c, why, 160);
}

static void test_calls(void **state) {
        VarlinkCall c;
        char why[160];
        assert_int_equal(parse("{\"method\":\"io.pgtree.Tree\",\"parameters\":{\"text\":true}}", &c, why), 0);
        assert_string_equal(c.method, "io.pgtree.Tree");
        json_object *v;
        assert_true(json_object_object_get_ex(c.parameters, "text", &v) && json_object_get_boolean(v));
        assert_false(c.oneway);
        varlink_call_clear(&c);
        assert_int_equal(parse("{\"method\":\"io.pgtree.Status\",\"oneway\":true,\"more\":true}  \n", &c, why), 0);
        assert_true(c.oneway && c.more);
        assert_non_null(c.parameters); /* an empty object when absent */
        varlink_call_clear(&c);

        const struct {
                const char *msg, *why;
        } bad[] = {
                { "", "empty message" },
                { "hello", "not JSON" },
                { "[1,2]", "a message must be a JSON object" },
                { "{\"parameters\":{}}", "no \"method\" string" },
                { "{\"method\":42}", "no \"method\" string" },
                { "{\"method\":\"Status\"}", "invalid method name" },
                { "{\"method\":\"io.pgtree.Status\",\"parameters\":[1]}", "\"parameters\" must be an object" },
                { "{\"method\":\"io.pgtree.Status\"} trailing", "text after the JSON object" },
                { "{\"method\":\"io.pgtree.Sta", "not JSON" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                memset(&c, 0, sizeof c);
                if (parse(bad[i].msg, &c, why) != -EBADMSG)
                        fail_msg("accepted «%s»", bad[i].msg);
                if (!strstr(why, bad[i].why))
                        fail_msg("«%s»: said «%s», expected «%s»", bad[i].msg, why, bad[i].why);
        }
        char long_method[300];
        memset(long_method, 'a', sizeof long_method);
        memcpy(long_method, "{\"method\":\"x.", 13);
        strcpy(long_method + 250, "\"}");
        assert_int_equal(parse(long_method, &c, why), -EBADMSG);
        assert_int_equal(varlink_call_parse("{\"method\":\"a.b\"}\0x", 18, &c, why, sizeof why), -EBADMSG);
}

/* JSON's \u0000 puts a NUL inside a string: C would read only what stands before it. */
static void test_nul_in_strings(void **state) {
        VarlinkCall c;
        char why[160];
        assert_int_equal(parse("{\"method\":\"io.pgtree.Status\\u0000x\"}", &c, why), -EBADMSG);
        assert_non_null(strstr(why, "NUL"));
        const struct {
                const char *msg, *param;
        } cases[] = {
                { "{\"method\":\"io.pgtree.Signal\",\"parameters\":{\"action\":\"terminate\\u0000kill\",\"pid\":5}}", "action" },
                { "{\"method\":\"io.pgtree.Sessions\",\"parameters\":{\"user\":\"a\",\"sort\":\"cpu\\u0000\"}}", "sort" },
                { "{\"method\":\"io.pgtree.Sessions\",\"parameters\":{\"x\":[1,{\"y\":\"\\u0000\"}]}}", "x" },
                { "{\"method\":\"io.pgtree.Sessions\",\"parameters\":{\"us\\u0000er\":\"a\"}}", "(a parameter name)" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                assert_int_equal(parse(cases[i].msg, &c, why), 0);
                if (strcmp(c.invalid_parameter, cases[i].param) != 0)
                        fail_msg("«%s»: flagged «%s», expected «%s»", cases[i].msg, c.invalid_parameter, cases[i].param);
                varlink_call_clear(&c);
        }
        /* an escaped backslash followed by u0000 is text, not a NUL; other escapes are fine */
        assert_int_equal(parse("{\"method\":\"io.pgtree.Sessions\",\"parameters\":{\"user\":\"a\\\\u0000\\u00e9\\n\"}}", &c, why), 0);
        assert_string_equal(c.invalid_parameter, "");
        varlink_call_clear(&c);
}

static void test_replies_round_trip(void **state) {
        size_t len;
        json_object *p = json_object_new_object();
        json_object_object_add(p, "n", json_object_new_int(7));
        char *r = varlink_reply(p, &len);
        assert_int_equal(r[len - 1], 0);
        assert_int_equal(strlen(r) + 1, len);
        json_object *params;
        char *error;
        assert_int_equal(varlink_reply_parse(r, len - 1, &params, &error), 0);
        assert_null(error);
        json_object *n;
        assert_true(json_object_object_get_ex(params, "n", &n));
        assert_int_equal(json_object_get_int(n), 7);
        json_object_put(params);
        free(r);

        r = varlink_error("io.pgtree.SigkillRefused", NULL, &len);
        assert_int_equal(varlink_reply_parse(r, len - 1, &params, &error), 0);
        assert_string_equal(error, "io.pgtree.SigkillRefused");
        json_object_put(params);
        free(error);
        free(r);
        assert_int_equal(varlink_reply_parse("nope", 4, &params, &error), -EBADMSG);

        r = varlink_call("io.pgtree.Show", NULL, &len);
        VarlinkCall c;
        char why[160];
        assert_int_equal(varlink_call_parse(r, len - 1, &c, why, sizeof why), 0);
        assert_string_equal(c.method, "io.pgtree.Show");
        varlink_call_clear(&c);
        free(r);
}

static void test_framing(void **state) {
        VarlinkBuffer b = {};
        char *m;
        size_t len;
        /* two messages in one read, the second split across reads */
        const char a[] = "{\"method\":\"a.b\"}\0{\"method\":\"c";
        assert_int_equal(varlink_buffer_feed(&b, a, sizeof a - 1, 1024), 0);
        assert_int_equal(varlink_buffer_next(&b, &m, &len), 1);
        assert_string_equal(m, "{\"method\":\"a.b\"}");
        assert_int_equal(len, 16);
        free(m);
        assert_int_equal(varlink_buffer_next(&b, &m, &len), 0);
        assert_int_equal(varlink_buffer_feed(&b, ".d\"}\0", 5, 1024), 0);
        assert_int_equal(varlink_buffer_next(&b, &m, &len), 1);
        assert_string_equal(m, "{\"method\":\"c.d\"}");
        free(m);
        assert_int_equal(varlink_buffer_next(&b, &m, &len), 0);
        /* an unfinished message over the limit */
        char big[2000];
        memset(big, 'x', sizeof big);
        assert_int_equal(varlink_buffer_feed(&b, big, sizeof big, 1024), -EMSGSIZE);
        varlink_buffer_clear(&b);
        assert_int_equal(varlink_buffer_feed(&b, "\0\0", 2, 1024), 0);
        assert_int_equal(varlink_buffer_next(&b, &m, &len), 1);
        assert_int_equal(len, 0);
        free(m);
        varlink_buffer_clear(&b);
}

static void test_descriptions(void **state) {
        const char *d = varlink_pgtree_description();
        const char *methods[] = { "Status", "Tree", "Sessions", "Show", "Orphans", "LongRunners", "Signal", "Reload", "Metrics" };
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
                char want[64];
                snprintf(want, sizeof want, "method %s(", methods[i]);
                assert_non_null(strstr(d, want));
        }
        assert_non_null(strstr(d, "interface io.pgtree\n"));
        assert_non_null(strstr(varlink_service_description(), "method GetInfo()"));
}


/* A server child for one connection: how it answers is the case under test. */
enum { SERVE_SPLIT, SERVE_SILENT, SERVE_CLOSE, SERVE_HUGE, SERVE_LATE };

static pid_t serve(const char *path, int how) {
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(l >= 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        unlink(path);
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 1), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid > 0) {
                close(l);
                return pid;
        }
        int c = accept(l, NULL, NULL);
        char buf[4096];
        ssize_t k = read(c, buf, sizeof buf); /* the call */
        if (k <= 0 || !memmem(buf, (size_t) k, "io.pgtree.Status", 16))
                _exit(3);
        const char reply[] = "{\"parameters\":{\"cycles\":7}}";
        if (how == SERVE_LATE) { /* whole, after 300 ms */
                usleep(300 * 1000);
                if (write(c, reply, sizeof reply) != (ssize_t) sizeof reply)
                        _exit(4);
        } else if (how == SERVE_SPLIT) /* one byte at a time, the NUL last */
                for (size_t i = 0; i < sizeof reply; i++) {
                        if (write(c, reply + i, 1) != 1)
                                _exit(4);
                        usleep(200);
                }
        else if (how == SERVE_SILENT)
                pause(); /* until the test ends it */
        else if (how == SERVE_HUGE) {
                static char big[65536];
                memset(big, ' ', sizeof big);
                for (int i = 0; i < 4; i++)
                        if (write(c, big, sizeof big) != (ssize_t) sizeof big)
                                _exit(0);
        }
        _exit(0);
}

static void reap(pid_t pid) {
        kill(pid, SIGTERM); /* a child of this test, not PostgreSQL */
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
}

static void test_call_once(void **state) {
        char dir[] = "/tmp/pgtree-test-protocol.XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof path, "%s/s", dir);
        json_object *ret;
        char *error;

        pid_t pid = serve(path, SERVE_SPLIT);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", NULL, 10000, 1024, &ret, &error), 0);
        json_object *v;
        assert_true(json_object_object_get_ex(ret, "cycles", &v) && json_object_get_int(v) == 7);
        assert_null(error);
        json_object_put(ret);
        reap(pid);

        /* silence: the deadline counts for the whole call */
        pid = serve(path, SERVE_SILENT);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", json_object_new_object(), 300, 1024, &ret, &error),
                         -ETIMEDOUT);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(t1.tv_sec - t0.tv_sec < 10);
        assert_null(ret);
        reap(pid);

        /* closed without a reply; a reply beyond max */
        pid = serve(path, SERVE_CLOSE);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", NULL, 10000, 1024, &ret, &error), -EIO);
        reap(pid);
        pid = serve(path, SERVE_HUGE);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", NULL, 10000, 1024, &ret, &error), -EIO);
        reap(pid);

        /* nobody there; a path sun_path cannot hold (never truncated to another socket) */
        unlink(path);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", NULL, 1000, 1024, &ret, &error), -ENOENT);
        char longpath[200];
        memset(longpath, 'x', sizeof longpath - 1);
        longpath[0] = '/';
        longpath[sizeof longpath - 1] = 0;
        assert_int_equal(varlink_connect_unix(longpath, 1000), -ENAMETOOLONG);
        assert_int_equal(varlink_call_once(longpath, "io.pgtree.Status", NULL, 1000, 1024, &ret, &error), -ENAMETOOLONG);
        rmdir(dir);
}

static void on_tick(int sig) {
}

/* A signal that interrupts the wait (pgtree top's SIGWINCH when the terminal is resized) is not
 * a timeout: the reply that comes within the deadline is read. */
static void test_call_once_interrupted(void **state) {
        char dir[] = "/tmp/pgtree-test-protocol.XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof path, "%s/s", dir);
        struct sigaction sa = { .sa_handler = on_tick }, old;
        sigemptyset(&sa.sa_mask);
        assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
        pid_t pid = serve(path, SERVE_LATE);
        struct itimerval it = { .it_interval = { .tv_usec = 20000 }, .it_value = { .tv_usec = 20000 } };
        assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
        json_object *ret;
        char *error;
        int r = varlink_call_once(path, "io.pgtree.Status", NULL, 20000, 1024, &ret, &error);
        it = (struct itimerval){};
        setitimer(ITIMER_REAL, &it, NULL);
        sigaction(SIGALRM, &old, NULL);
        assert_int_equal(r, 0);
        json_object *v;
        assert_true(json_object_object_get_ex(ret, "cycles", &v) && json_object_get_int(v) == 7);
        json_object_put(ret);
        reap(pid);
        unlink(path);
        rmdir(dir);
}

static void on_hung(int sig) {
        static const char m[] = "connect() to a socket whose backlog is full blocked beyond the call's deadline\n";
        (void) !write(STDERR_FILENO, m, sizeof m - 1);
        _exit(1);
}

/* A daemon that accepts nothing (hung, stopped with SIGSTOP, or a hostile socket): once its
 * listen backlog is full, a blocking connect() waits for ever; the deadline of the call must
 * hold for the connect too (pgtree status in a health check, pgtree top's reconnect). */
static void test_call_once_backlog_full(void **state) {
        char dir[] = "/tmp/pgtree-test-protocol.XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof path, "%s/s", dir);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(l >= 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        memcpy(a.sun_path, path, strlen(path) + 1);
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 0), 0);
        int fill[64], n = 0;
        for (; n < 64; n++) {
                fill[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                assert_true(fill[n] >= 0);
                if (connect(fill[n], (struct sockaddr *) &a, sizeof a) < 0) {
                        assert_int_equal(errno, EAGAIN);
                        close(fill[n]);
                        break;
                }
        }
        assert_true(n < 64); /* the backlog is full now */
        signal(SIGALRM, on_hung);
        alarm(30);
        json_object *ret;
        char *error;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(varlink_call_once(path, "io.pgtree.Status", NULL, 300, 1024, &ret, &error), -ETIMEDOUT);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(t1.tv_sec - t0.tv_sec < 10);
        assert_null(ret);
        /* a connection by itself (top) is bounded too */
        assert_int_equal(varlink_connect_unix(path, 300), -ETIMEDOUT);
        alarm(0);
        signal(SIGALRM, SIG_DFL);
        for (int i = 0; i < n; i++)
                close(fill[i]);
        close(l);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_calls),
                cmocka_unit_test(test_nul_in_strings),
                cmocka_unit_test(test_replies_round_trip),
                cmocka_unit_test(test_framing),
                cmocka_unit_test(test_descriptions),
                cmocka_unit_test(test_call_once),
                cmocka_unit_test(test_call_once_backlog_full),
                cmocka_unit_test(test_call_once_interrupted),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
