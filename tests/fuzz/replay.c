/* SPDX-License-Identifier: MIT */
/* Replays a fuzz corpus through a target without libFuzzer: every file of the given directories
 * is one input. Built with the ordinary compiler so that `meson test` runs it everywhere; the
 * test command (scripts/test) also runs it in an ASan+UBSan build, where the exact-size copy
 * below makes a read past the end of an input an error. An input that cannot be read fails the
 * replay: a corpus that is silently not replayed tests nothing. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT (1 << 20)

/* 0 when the file was replayed, -1 (with a message) when it could not be read */
static int replay_file(const char *path) {
        FILE *f = fopen(path, "rb");
        if (!f) {
                fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
                return -1;
        }
        uint8_t *buf = malloc(REPLAY_MAX_INPUT + 1);
        if (!buf) {
                fclose(f);
                fprintf(stderr, "replay: out of memory for %s\n", path);
                return -1;
        }
        size_t k = fread(buf, 1, REPLAY_MAX_INPUT + 1, f);
        int err = ferror(f);
        fclose(f);
        if (err || k > REPLAY_MAX_INPUT) {
                fprintf(stderr, "replay: %s: %s\n", path, err ? "read error" : "larger than 1 MiB");
                free(buf);
                return -1;
        }
        /* an exact-size copy, so that sanitizers see reads past the end */
        uint8_t *exact = malloc(k ? k : 1);
        if (!exact) {
                free(buf);
                fprintf(stderr, "replay: out of memory for %s\n", path);
                return -1;
        }
        memcpy(exact, buf, k);
        free(buf);
        LLVMFuzzerTestOneInput(exact, k);
        free(exact);
        return 0;
}

int main(int argc, char **argv) {
        size_t n = 0, bad = 0;
        for (int i = 1; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                if (!d) {
                        fprintf(stderr, "replay: cannot open %s: %s\n", argv[i], strerror(errno));
                        return 1;
                }
                struct dirent *e;
                while ((e = readdir(d))) {
                        if (e->d_name[0] == '.')
                                continue;
                        char path[4096];
                        if ((size_t) snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name) >= sizeof path) {
                                fprintf(stderr, "replay: path too long: %s/%s\n", argv[i], e->d_name);
                                bad++;
                                continue;
                        }
                        if (replay_file(path) < 0)
                                bad++;
                        else
                                n++;
                }
                closedir(d);
        }
        printf("replayed %zu inputs, %zu unreadable\n", n, bad);
        return n > 0 && bad == 0 ? 0 : 1;
}
