/* SPDX-License-Identifier: MIT */
/* Replays a fuzz corpus through a target without libFuzzer: every file of the given directories
 * is one input. Built with the ordinary compiler so that `meson test` runs it everywhere. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
        size_t n = 0;
        for (int i = 1; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                if (!d) {
                        fprintf(stderr, "replay: cannot open %s\n", argv[i]);
                        return 1;
                }
                struct dirent *e;
                while ((e = readdir(d))) {
                        if (e->d_name[0] == '.')
                                continue;
                        char path[4096];
                        snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                        FILE *f = fopen(path, "rb");
                        if (!f)
                                continue;
                        uint8_t *buf = malloc(1 << 20);
                        size_t k = buf ? fread(buf, 1, 1 << 20, f) : 0;
                        fclose(f);
                        /* an exact-size copy, so that sanitizers see reads past the end */
                        uint8_t *exact = malloc(k ? k : 1);
                        if (exact && buf)
                                memcpy(exact, buf, k);
                        LLVMFuzzerTestOneInput(exact, k);
                        free(exact);
                        free(buf);
                        n++;
                }
                closedir(d);
        }
        printf("replayed %zu inputs\n", n);
        return n > 0 ? 0 : 1;
}
