/* A failing-filesystem shim for tests/test_fsync_failure.py, loaded with LD_PRELOAD.
 *
 * fsync, fdatasync and msync call the real functions (found with dlsym(RTLD_NEXT)) unless
 * the file named by $ENGRAM_FAIL_FSYNC_TRIGGER exists; then they fail with EIO, as a disk
 * does when it loses a write. engram_failfsync_calls() counts every call made through the
 * shim, so a test can tell that the library under test really flushes through it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static long calls;

long engram_failfsync_calls(void) { return __atomic_load_n(&calls, __ATOMIC_SEQ_CST); }

static int should_fail(void) {
    __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    const char *trigger = getenv("ENGRAM_FAIL_FSYNC_TRIGGER");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

static void *real(const char *name) {
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL)
        abort();
    return fn;
}

int fsync(int fd) {
    static int (*next)(int);
    if (should_fail()) {
        errno = EIO;
        return -1;
    }
    if (next == NULL)
        next = (int (*)(int))real("fsync");
    return next(fd);
}

int fdatasync(int fd) {
    static int (*next)(int);
    if (should_fail()) {
        errno = EIO;
        return -1;
    }
    if (next == NULL)
        next = (int (*)(int))real("fdatasync");
    return next(fd);
}

int msync(void *addr, size_t length, int flags) {
    static int (*next)(void *, size_t, int);
    if (should_fail()) {
        errno = EIO;
        return -1;
    }
    if (next == NULL)
        next = (int (*)(void *, size_t, int))real("msync");
    return next(addr, length, flags);
}
