/* SPDX-License-Identifier: MIT */
/* Requests per second and latency of io.pgtree.Tree: CLIENTS concurrent connections, each sending
 * REQUESTS requests one after another.   usage: bench-socket SOCKET CLIENTS REQUESTS */
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int requests;
static double *lat;
static size_t reply_bytes;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void *client(void *arg) {
        long id = (long) arg;
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        if (connect(fd, (struct sockaddr *) &a, sizeof a) < 0) {
                perror("connect");
                exit(1);
        }
        static const char req[] = "{\"method\":\"io.pgtree.Tree\"}";
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap);
        for (int i = 0; i < requests; i++) {
                double t0 = now();
                if (send(fd, req, sizeof req, 0) != (ssize_t) sizeof req) /* with its NUL */
                        exit(1);
                for (;;) {
                        char *nul = memchr(buf, 0, len);
                        if (nul) {
                                size_t m = (size_t) (nul - buf) + 1;
                                if (id == 0 && i == 0)
                                        reply_bytes = m;
                                memmove(buf, nul + 1, len - m);
                                len -= m;
                                break;
                        }
                        if (len == cap)
                                buf = realloc(buf, cap *= 2);
                        ssize_t k = read(fd, buf + len, cap - len);
                        if (k <= 0)
                                exit(1);
                        len += (size_t) k;
                }
                lat[id * requests + i] = now() - t0;
        }
        free(buf);
        close(fd);
        return NULL;
}

static int cmp(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

int main(int argc, char **argv) {
        if (argc != 4)
                return 2;
        path = argv[1];
        int clients = atoi(argv[2]);
        requests = atoi(argv[3]);
        lat = calloc((size_t) clients * (size_t) requests, sizeof(double));
        pthread_t *t = calloc((size_t) clients, sizeof(pthread_t));
        double t0 = now();
        for (long i = 0; i < clients; i++)
                pthread_create(&t[i], NULL, client, (void *) i);
        for (int i = 0; i < clients; i++)
                pthread_join(t[i], NULL);
        double el = now() - t0;
        size_t n = (size_t) clients * (size_t) requests;
        qsort(lat, n, sizeof *lat, cmp);
        printf("{\"clients\": %d, \"requests\": %zu, \"seconds\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"reply_bytes\": %zu}\n",
               clients, n, el, (double) n / el, lat[n / 2] * 1e3, lat[(size_t) ((double) n * 0.99)] * 1e3, reply_bytes);
        return 0;
}
