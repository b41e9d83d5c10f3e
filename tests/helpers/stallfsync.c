/* A stalling-disk shim for tests/server_faults/test_durable_commits.py, loaded with LD_PRELOAD.
 *
 * fsync and fdatasync wait while the file named by $ENGRAM_STALL_FSYNC_TRIGGER exists (as a
 * disk does that stops answering), then call the real functions (dlsym(RTLD_NEXT)).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *real(const char *name) {
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL)
        abort();
    return fn;
}

static void stall(void) {
    const char *trigger = getenv("ENGRAM_STALL_FSYNC_TRIGGER");
    struct timespec pause = {0, 1000000};
    while (trigger != NULL && access(trigger, F_OK) == 0)
        nanosleep(&pause, NULL);
}

int fsync(int fd) {
    static int (*next)(int);
    stall();
    if (next == NULL)
        next = (int (*)(int))real("fsync");
    return next(fd);
}

int fdatasync(int fd) {
    static int (*next)(int);
    stall();
    if (next == NULL)
        next = (int (*)(int))real("fdatasync");
    return next(fd);
}
