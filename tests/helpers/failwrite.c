/* A full-disk shim for tests/attack/test_vector_attacks.py, loaded with LD_PRELOAD.
 *
 * While the file named by $ENGRAM_FAIL_WRITE_TRIGGER exists, opening a file for writing
 * under the directory $ENGRAM_FAIL_WRITE_UNDER fails with ENOSPC, as it does on a full
 * disk: open/open64/openat/openat64/creat (Python's open) and fopen/fopen64 (faiss'
 * write_index). Reads and everything elsewhere (the LMDB files) go to the real functions,
 * found with dlsym(RTLD_NEXT). engram_failwrite_refusals() counts the refused calls, so a
 * test can tell that the writes it meant to fail really went through the shim.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long refusals;

long engram_failwrite_refusals(void) { return __atomic_load_n(&refusals, __ATOMIC_SEQ_CST); }

static void *real(const char *name) {
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL)
        abort();
    return fn;
}

static int refuse(const char *path, int writing) {
    if (!writing || path == NULL)
        return 0;
    const char *under = getenv("ENGRAM_FAIL_WRITE_UNDER");
    const char *trigger = getenv("ENGRAM_FAIL_WRITE_TRIGGER");
    if (under == NULL || trigger == NULL || strncmp(path, under, strlen(under)) != 0)
        return 0;
    if (access(trigger, F_OK) != 0)
        return 0;
    __atomic_add_fetch(&refusals, 1, __ATOMIC_SEQ_CST);
    errno = ENOSPC;
    return 1;
}

static int writes(int flags) { return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0; }

static int mode_writes(const char *mode) { return mode != NULL && strpbrk(mode, "wa+") != NULL; }

#define MODE_ARG(flags, mode)                                                                 \
    mode_t mode = 0;                                                                          \
    if ((flags) & (O_CREAT | O_TMPFILE)) {                                                    \
        va_list args;                                                                         \
        va_start(args, flags);                                                                \
        mode = (mode_t)va_arg(args, int);                                                     \
        va_end(args);                                                                         \
    }

int open(const char *path, int flags, ...) {
    static int (*next)(const char *, int, ...);
    MODE_ARG(flags, mode)
    if (refuse(path, writes(flags)))
        return -1;
    if (next == NULL)
        next = (int (*)(const char *, int, ...))real("open");
    return next(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    static int (*next)(const char *, int, ...);
    MODE_ARG(flags, mode)
    if (refuse(path, writes(flags)))
        return -1;
    if (next == NULL)
        next = (int (*)(const char *, int, ...))real("open64");
    return next(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    static int (*next)(int, const char *, int, ...);
    MODE_ARG(flags, mode)
    if (refuse(path, writes(flags)))
        return -1;
    if (next == NULL)
        next = (int (*)(int, const char *, int, ...))real("openat");
    return next(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    static int (*next)(int, const char *, int, ...);
    MODE_ARG(flags, mode)
    if (refuse(path, writes(flags)))
        return -1;
    if (next == NULL)
        next = (int (*)(int, const char *, int, ...))real("openat64");
    return next(dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode) {
    static int (*next)(const char *, mode_t);
    if (refuse(path, 1))
        return -1;
    if (next == NULL)
        next = (int (*)(const char *, mode_t))real("creat");
    return next(path, mode);
}

FILE *fopen(const char *path, const char *mode) {
    static FILE *(*next)(const char *, const char *);
    if (refuse(path, mode_writes(mode)))
        return NULL;
    if (next == NULL)
        next = (FILE * (*)(const char *, const char *)) real("fopen");
    return next(path, mode);
}

FILE *fopen64(const char *path, const char *mode) {
    static FILE *(*next)(const char *, const char *);
    if (refuse(path, mode_writes(mode)))
        return NULL;
    if (next == NULL)
        next = (FILE * (*)(const char *, const char *)) real("fopen64");
    return next(path, mode);
}
