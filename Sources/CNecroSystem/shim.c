#define _GNU_SOURCE
#include "CNecroSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

int necro_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd, int output_fd,
                pid_t *pid) {
    return necro_spawn_split(path, argv, envp, cwd, output_fd, output_fd, pid);
}

int necro_spawn_split(const char *path, char *const argv[], char *const envp[], const char *cwd, int output_fd,
                      int error_fd, pid_t *pid) {
    return necro_spawn_input(path, argv, envp, cwd, -1, output_fd, error_fd, pid);
}

int necro_spawn_input(const char *path, char *const argv[], char *const envp[], const char *cwd, int input_fd,
                      int output_fd, int error_fd, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int error = posix_spawn_file_actions_init(&actions);
    if (error != 0) return error;
    error = posix_spawnattr_init(&attributes);
    if (error != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return error;
    }
    sigset_t none, defaults;
    sigemptyset(&none);
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    if (!error) error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                                 POSIX_SPAWN_SETSIGDEF);
    if (!error) error = posix_spawnattr_setpgroup(&attributes, 0);
    if (!error) error = posix_spawnattr_setsigmask(&attributes, &none);
    if (!error) error = posix_spawnattr_setsigdefault(&attributes, &defaults);
    if (!error && input_fd < 0) error = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (!error && input_fd >= 0) error = posix_spawn_file_actions_adddup2(&actions, input_fd, 0);
    if (!error) error = posix_spawn_file_actions_adddup2(&actions, output_fd, 1);
    if (!error) error = posix_spawn_file_actions_adddup2(&actions, error_fd, 2);
    // Nothing else of ours leaks into the runner: no registry file, socket or pipe of the dispatcher.
    if (!error) error = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (!error && cwd != NULL) error = posix_spawn_file_actions_addchdir_np(&actions, cwd);
    if (!error) error = posix_spawnp(pid, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return error;
}

// The supervisor: a process that shares the caller's memory (CLONE_VM, as posix_spawn's child
// does) but lives on after the caller, on a stack of its own, and runs only the code below. It
// calls no C library function after it starts (the library's errno and locks belong to the
// caller's threads): only system calls, made directly. No exec of a shell or helper program, no
// copy of the caller's memory: about the cost of the runner's own start.

#if defined(__x86_64__) || defined(__aarch64__)
#define NECRO_HAS_SUPERVISOR 1

static long raw_syscall(long number, long a, long b, long c, long d, long e) {
#if defined(__x86_64__)
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return result;
#else
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory");
    return x0;
#endif
}

struct kernel_sigaction {  // the kernel's layout, not the C library's
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

static void raw_signal(int signal, void (*handler)(int)) {
    struct kernel_sigaction action = {handler, 0, 0, 0};
    raw_syscall(SYS_rt_sigaction, signal, (long)&action, 0, sizeof action.mask, 0);
}

static void raw_write_all(int fd, const char *text, long length) {
    while (length > 0) {
        long written = raw_syscall(SYS_write, fd, (long)text, length, 0, 0);
        if (written == -EINTR) continue;
        if (written <= 0) return;
        text += written;
        length -= written;
    }
}

static _Noreturn void raw_exit(int code) {
    for (;;) raw_syscall(SYS_exit_group, code, 0, 0, 0, 0);
}

struct supervision {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    const char *status_path;
    const char *log_path;
    int input_fd, output_fd, pipe_read_fd;
    /// Holds the lock over the runner's record while the supervisor lives (-1: none).
    int status_lock_fd;
    pid_t caller;
    long status_offset;
    long log_limit;
    /// The runner's niceness, if `set_nice`.
    int nice, set_nice;
    char *runner_stack_top;
    /// Set by the runner's process if its exec fails (they share memory until it execs).
    int exec_error;
};

// Once the caller is gone, nobody reads the runner's pipe: the supervisor does, into the log, so
// that the runner neither dies of SIGPIPE nor blocks on a full pipe, and its output is kept.
struct log_writer {
    int fd;
    long size, limit, dropped;
};

static void keep_output(struct supervision *s, struct log_writer *log, int drain_all) {
    char buffer[16384];
    for (;;) {
        long got = raw_syscall(SYS_read, s->pipe_read_fd, (long)buffer, sizeof buffer, 0, 0);
        if (got == -EINTR) continue;
        if (got <= 0) {  // end of file, or nothing more for now (the pipe does not block)
            if (got == 0) {
                raw_syscall(SYS_close, s->pipe_read_fd, 0, 0, 0, 0);
                s->pipe_read_fd = -1;
            }
            return;
        }
        if (log->fd < 0) {
            log->fd = (int)raw_syscall(SYS_openat, AT_FDCWD, (long)s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600, 0);
            log->size = log->fd >= 0 ? raw_syscall(SYS_lseek, log->fd, 0, SEEK_END, 0, 0) : 0;
        }
        long keep = log->limit - log->size;
        if (keep > got) keep = got;
        if (keep < 0) keep = 0;
        if (log->fd >= 0 && keep > 0) raw_write_all(log->fd, buffer, keep);
        log->size += keep;
        log->dropped += got - keep;
        if (!drain_all) return;
    }
}

/// Writes `value` in decimal at `out` (at most 20 characters, no terminator): how many it wrote.
static int write_decimal(unsigned long value, char *out) {
    char digits[20];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0 && count < 20);
    for (int i = 0; i < count; i++) out[i] = digits[count - 1 - i];
    return count;
}

/// Writes the runner's status into its record of the status table: `prefix` (0 for none), the
/// number, a newline, zeros to NECRO_STATUS_SIZE bytes, in one write at the record's offset.
static void record_status(struct supervision *s, char prefix, int number) {
    char text[NECRO_STATUS_SIZE] = {0};
    int length = 0;
    if (prefix) text[length++] = prefix;
    char digits[20];
    int count = write_decimal(number < 0 ? 0 : (unsigned long)number, digits);
    for (int i = 0; i < count && length < NECRO_STATUS_SIZE - 1; i++) text[length++] = digits[i];
    text[length] = '\n';
    long file = raw_syscall(SYS_openat, AT_FDCWD, (long)s->status_path, O_WRONLY | O_CLOEXEC, 0, 0);
    if (file < 0) return;
    while (raw_syscall(SYS_pwrite64, file, (long)text, NECRO_STATUS_SIZE, s->status_offset, 0) == -EINTR) {}
    raw_syscall(SYS_close, file, 0, 0, 0, 0);
}

static long monotonic_ms(void) {
    struct timespec now = {0, 0};
    raw_syscall(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&now, 0, 0, 0);
    return now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/// Reaps the children that have ended other than the runner: what the runner left behind comes to
/// the supervisor (a subreaper) when its parent ends, and would stay a zombie until the end.
static void reap_orphans(long runner) {
    for (int i = 0; i < 1024; i++) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        long result = raw_syscall(SYS_waitid, P_ALL, 0, (long)&info, WEXITED | WNOHANG | WNOWAIT | __WALL, 0);
        if (result == -EINTR) continue;
        if (result != 0 || info.si_pid == 0 || info.si_pid == runner) return;
        while (raw_syscall(SYS_wait4, info.si_pid, 0, __WALL, 0, 0) == -EINTR) {}
    }
}

/// Stops whatever the runner left behind once it has ended: the supervisor is a subreaper, so every
/// descendant whose parent ended (a daemon double-forked with setsid, a job left in the
/// background) is its child now. Each is killed and reaped; their own children come to the
/// supervisor in turn, until none is left. The list of children is read to its end (a pid is never
/// cut in two). What cannot be killed (another user's, stuck in the kernel) is left after 5 s;
/// without /proc's list of children nothing is done.
static void stop_descendants(void) {
    char path[64] = "/proc/self/task/";
    int length = 16 + write_decimal((unsigned long)raw_syscall(SYS_getpid, 0, 0, 0, 0, 0), path + 16);
    memcpy(path + length, "/children", 10);
    long deadline = monotonic_ms() + 5000;
    for (;;) {
        long reaped = raw_syscall(SYS_wait4, -1, 0, WNOHANG | __WALL, 0, 0);
        if (reaped == -EINTR || reaped > 0) continue;
        if (reaped < 0) return;  // ECHILD: nothing left
        if (monotonic_ms() > deadline) return;
        long file = raw_syscall(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0);
        if (file < 0) return;
        char chunk[512];
        long pid = 0;
        int killed = 0;
        for (;;) {
            long got = raw_syscall(SYS_read, file, (long)chunk, sizeof chunk, 0, 0);
            if (got == -EINTR) continue;
            if (got <= 0) break;
            for (long i = 0; i < got; i++) {
                if (chunk[i] >= '0' && chunk[i] <= '9') {
                    pid = pid * 10 + (chunk[i] - '0');
                } else {
                    if (pid > 0 && raw_syscall(SYS_kill, pid, SIGKILL, 0, 0, 0) == 0) killed++;
                    pid = 0;
                }
            }
        }
        if (pid > 0 && raw_syscall(SYS_kill, pid, SIGKILL, 0, 0, 0) == 0) killed++;
        raw_syscall(SYS_close, file, 0, 0, 0, 0);
        if (killed == 0) return;  // children none of which can be killed: left
        struct timespec pause = {0, 10 * 1000 * 1000};
        raw_syscall(SYS_nanosleep, (long)&pause, 0, 0, 0, 0);
    }
}

/// Writes `S<pid>` (no newline: not a status) into the runner's status field: the supervisor's
/// pid, for a dispatcher that finds the record locked and the runner not recorded as started.
static void record_start(struct supervision *s) {
    char text[NECRO_STATUS_SIZE] = {0};
    text[0] = 'S';
    char digits[20];
    int count = write_decimal((unsigned long)raw_syscall(SYS_getpid, 0, 0, 0, 0, 0), digits);
    if (count > NECRO_STATUS_SIZE - 1) return;  // a pid this long does not fit: found by its lock alone
    memcpy(text + 1, digits, (size_t)count);
    long file = raw_syscall(SYS_openat, AT_FDCWD, (long)s->status_path, O_WRONLY | O_CLOEXEC, 0, 0);
    if (file < 0) return;
    while (raw_syscall(SYS_pwrite64, file, (long)text, NECRO_STATUS_SIZE, s->status_offset, 0) == -EINTR) {}
    raw_syscall(SYS_close, file, 0, 0, 0, 0);
}

static int run_runner(void *context) {  // in the runner's process, until execve
    struct supervision *s = context;
    raw_signal(SIGTERM, SIG_DFL);
    raw_signal(SIGINT, SIG_DFL);
    raw_signal(SIGHUP, SIG_DFL);
    if (s->set_nice) raw_syscall(SYS_setpriority, PRIO_PROCESS, 0, s->nice, 0, 0);
    long error = raw_syscall(SYS_execve, (long)s->path, (long)s->argv, (long)s->envp, 0, 0);
    s->exec_error = (int)-error;  // seen by the supervisor, which waits for this process to exec or end
    raw_exit(127);
}

static int supervise(void *context) {
    struct supervision *s = context;
    raw_syscall(SYS_setpgid, 0, 0, 0, 0, 0);
    // Default dispositions, an empty mask; stops of the group are for the runner: the supervisor
    // outlives them to record how it ended.
    for (int signal = 1; signal < 65; signal++) {
        if (signal != SIGKILL && signal != SIGSTOP) raw_signal(signal, SIG_DFL);
    }
    raw_signal(SIGTERM, SIG_IGN);
    raw_signal(SIGINT, SIG_IGN);
    raw_signal(SIGHUP, SIG_IGN);
    unsigned long none = 0;
    raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, sizeof none, 0);
    // What the runner leaves behind when its parent ends comes here, not to init: stopped at its end.
    raw_syscall(SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    // The read end of the output pipe stays (above the standard three, closed on the runner's exec);
    // nothing else of the caller: no registry file, socket or pipe.
    // (Each is first moved above 2, should the caller have run without a standard descriptor.)
    int keep = (int)raw_syscall(SYS_fcntl, s->pipe_read_fd, F_DUPFD_CLOEXEC, 3, 0, 0);
    int input = (int)raw_syscall(SYS_fcntl, s->input_fd, F_DUPFD_CLOEXEC, 3, 0, 0);
    int output = (int)raw_syscall(SYS_fcntl, s->output_fd, F_DUPFD_CLOEXEC, 3, 0, 0);
    raw_syscall(SYS_dup3, input, 0, 0, 0, 0);
    raw_syscall(SYS_dup3, output, 1, 0, 0, 0);
    raw_syscall(SYS_dup3, output, 2, 0, 0, 0);
    // The lock over the runner's record goes right above the pipe (whatever was there is no longer
    // needed: the standard three are in place), and stays with the supervisor.
    int lock = -1;
    if (s->status_lock_fd >= 0) {
        lock = s->status_lock_fd == keep + 1 ? keep + 1 : (int)raw_syscall(SYS_dup3, s->status_lock_fd, keep + 1, O_CLOEXEC, 0, 0);
    }
    if (keep > 3) raw_syscall(SYS_close_range, 3, keep - 1, 0, 0, 0);
    raw_syscall(SYS_close_range, lock == keep + 1 ? keep + 2 : keep + 1, ~0U, 0, 0, 0);
    s->pipe_read_fd = keep;
    record_start(s);
    if (s->cwd != NULL) {
        // Made here, on the runner's time, not by the caller.
        long error = raw_syscall(SYS_mkdirat, AT_FDCWD, (long)s->cwd, 0700, 0, 0);
        if (error == -EEXIST) error = 0;
        if (error == 0) error = raw_syscall(SYS_chdir, (long)s->cwd, 0, 0, 0, 0);
        if (error != 0) {
            record_status(s, 'C', (int)-error);
            raw_exit(127);
        }
    }
    // As vfork: the supervisor waits until the runner has exec'd (or failed to).
    long runner = clone(run_runner, s->runner_stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, s);
    if (runner < 0 || s->exec_error != 0) {
        if (runner > 0) while (raw_syscall(SYS_wait4, runner, 0, 0, 0, 0) == -EINTR) {}
        record_status(s, 'E', runner < 0 ? EAGAIN : s->exec_error);
        raw_exit(127);
    }
    for (int fd = 0; fd < 3; fd++) raw_syscall(SYS_close, fd, 0, 0, 0, 0);
    // Wait for the runner; should the caller go first, keep the runner's output from then on.
    // (Its parent is the caller until the caller ends; then it is adopted by another process.)
    int keeping = raw_syscall(SYS_getppid, 0, 0, 0, 0, 0) != s->caller;
    long caller = keeping ? -1 : raw_syscall(SYS_pidfd_open, s->caller, 0, 0, 0, 0);
    long ended = raw_syscall(SYS_pidfd_open, runner, 0, 0, 0, 0);
    struct log_writer log = {-1, 0, s->log_limit, 0};
    while (ended >= 0) {
        int first = keeping ? s->pipe_read_fd : (caller >= 0 ? (int)caller : -1);  // -1: not watched
        struct pollfd watch[2] = {{first, POLLIN, 0}, {(int)ended, POLLIN, 0}};
        // Woken once a second besides: what the runner left behind and has ended is reaped.
        struct timespec second = {1, 0};
        long ready = raw_syscall(SYS_ppoll, (long)watch, 2, (long)&second, 0, 8);
        if (ready == -EINTR) continue;
        if (ready == 0) {
            reap_orphans(runner);
            continue;
        }
        if (ready < 0 || watch[1].revents != 0) break;
        if (!keeping && watch[0].revents != 0) {
            keeping = 1;
        } else if (keeping && watch[0].revents != 0) {
            keep_output(s, &log, 0);
        }
    }
    if (keeping && s->pipe_read_fd >= 0) keep_output(s, &log, 1);
    if (log.fd >= 0 && log.dropped > 0) {
        static const char note[] = "\n[necro: output after the dispatcher stopped was cut: the log is capped]\n";
        raw_write_all(log.fd, note, sizeof note - 1);
    }
    int status = 0;
    while (raw_syscall(SYS_wait4, runner, (long)&status, 0, 0, 0) == -EINTR) {}
    int signalled = (status & 0x7f) != 0;
    int code = signalled ? 128 + (status & 0x7f) : (status >> 8) & 0xff;
    record_status(s, 0, code);
    stop_descendants();
    if (signalled) {
        // End the same way, so that the caller sees the signal itself; never dump core for it.
        struct rlimit no_core = {0, 0};
        raw_syscall(SYS_prlimit64, 0, RLIMIT_CORE, (long)&no_core, 0, 0);
        raw_signal(status & 0x7f, SIG_DFL);
        raw_syscall(SYS_kill, raw_syscall(SYS_getpid, 0, 0, 0, 0, 0), status & 0x7f, 0, 0, 0);
    }
    raw_exit(code);
}

enum { SUPERVISOR_STACK = 64 << 10, RUNNER_STACK = 32 << 10 };

/// Copies `text` to `*cursor` and moves the cursor past it.
static char *place(char **cursor, const char *text) {
    size_t length = strlen(text) + 1;
    char *copy = *cursor;
    memcpy(copy, text, length);
    *cursor += length;
    return copy;
}

static size_t strings_size(char *const list[], size_t *count) {
    size_t size = 0, n = 0;
    for (; list[n] != NULL; n++) size += strlen(list[n]) + 1;
    *count = n;
    return size;
}

size_t necro_supervisor_block_size(const char *path, char *const argv[], char *const envp[], const char *cwd,
                                   const char *status_path, const char *log_path) {
    size_t argc = 0, envc = 0;
    size_t strings = strings_size(argv, &argc) + strings_size(envp, &envc) + strlen(path) + strlen(status_path) +
                     strlen(log_path) + (cwd ? strlen(cwd) : 0) + 4;
    size_t size = SUPERVISOR_STACK + RUNNER_STACK + sizeof(struct supervision) + (argc + envc + 2) * sizeof(char *) + strings;
    return (size + 4095) & ~(size_t)4095;
}

void *necro_supervisor_block_allocate(size_t size) {
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

void necro_supervisor_block_free(void *block, size_t size) {
    if (block != NULL) munmap(block, size);
}

int necro_lock_status_record(const char *path, long offset) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = NECRO_STATUS_RECORD_SIZE};
    if (fcntl(fd, F_OFD_SETLK, &lock) != 0) {
        int error = errno;
        close(fd);
        errno = error;
        return -1;
    }
    return fd;
}

int necro_status_record_locked(const char *path, long offset) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = offset, .l_len = NECRO_STATUS_RECORD_SIZE};
    int result = fcntl(fd, F_OFD_GETLK, &lock);
    int error = errno;
    close(fd);
    if (result != 0) {
        errno = error;
        return -1;
    }
    return lock.l_type != F_UNLCK;
}

int necro_spawn_supervised(const char *path, char *const argv[], char *const envp[], const char *cwd, int input_fd,
                           int output_fd, int output_read_fd, const char *status_path, long status_offset,
                           int status_lock_fd, const char *log_path, long log_limit, int nice, void *block,
                           size_t block_size, pid_t *pid, int *pidfd) {
    // The block holds the supervisor's stacks and everything it reads: the caller need not wait
    // for it, and may free its own copies at once.
    if (necro_supervisor_block_size(path, argv, envp, cwd, status_path, log_path) > block_size) return E2BIG;
    char *memory = block;
    size_t argc = 0, envc = 0;
    strings_size(argv, &argc);
    strings_size(envp, &envc);
    struct supervision *s = (struct supervision *)(memory + SUPERVISOR_STACK + RUNNER_STACK);
    char **argv_copy = (char **)(s + 1);
    char **envp_copy = argv_copy + argc + 1;
    char *cursor = (char *)(envp_copy + envc + 1);
    for (size_t i = 0; i < argc; i++) argv_copy[i] = place(&cursor, argv[i]);
    argv_copy[argc] = NULL;
    for (size_t i = 0; i < envc; i++) envp_copy[i] = place(&cursor, envp[i]);
    envp_copy[envc] = NULL;
    *s = (struct supervision){
        .path = place(&cursor, path),
        .argv = argv_copy,
        .envp = envp_copy,
        .cwd = cwd ? place(&cursor, cwd) : NULL,
        .status_path = place(&cursor, status_path),
        .log_path = place(&cursor, log_path),
        .input_fd = input_fd,
        .output_fd = output_fd,
        .pipe_read_fd = output_read_fd,
        .status_lock_fd = status_lock_fd,
        .caller = getpid(),
        .status_offset = status_offset,
        .log_limit = log_limit,
        .nice = nice,
        .set_nice = nice != NECRO_NICE_UNCHANGED,
        .runner_stack_top = memory + SUPERVISOR_STACK + RUNNER_STACK,
    };
    // Not CLONE_VFORK: the supervisor lives on; CLONE_VM: nothing of this process is copied.
    int descriptor = -1;
    pid_t child = clone(supervise, memory + SUPERVISOR_STACK, CLONE_VM | CLONE_PIDFD | SIGCHLD, s, &descriptor);
    if (child < 0) return errno;
    setpgid(child, child);  // also here: a signal to the group right after this call must reach it
    *pid = child;
    *pidfd = descriptor;
    return 0;
}

#else
size_t necro_supervisor_block_size(const char *path, char *const argv[], char *const envp[], const char *cwd,
                                   const char *status_path, const char *log_path) {
    return 0;
}
void *necro_supervisor_block_allocate(size_t size) { return NULL; }
void necro_supervisor_block_free(void *block, size_t size) {}
int necro_spawn_supervised(const char *path, char *const argv[], char *const envp[], const char *cwd, int input_fd,
                           int output_fd, int output_read_fd, const char *status_path, long status_offset,
                           int status_lock_fd, const char *log_path, long log_limit, int nice, void *block,
                           size_t block_size, pid_t *pid, int *pidfd) {
    return ENOSYS;
}
int necro_lock_status_record(const char *path, long offset) { errno = ENOSYS; return -1; }
int necro_status_record_locked(const char *path, long offset) { errno = ENOSYS; return -1; }
#endif

int necro_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int necro_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int necro_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int necro_epoll_add(int epfd, int fd, uint64_t token) {
    struct epoll_event event = {.events = EPOLLIN | EPOLLHUP | EPOLLRDHUP, .data.u64 = token};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int necro_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int necro_epoll_wait(int epfd, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event events[256];
    if (capacity > 256) capacity = 256;
    int count;
    do {
        count = epoll_wait(epfd, events, capacity, timeout_ms);
    } while (count < 0 && errno == EINTR);
    for (int i = 0; i < count; i++) tokens[i] = events[i].data.u64;
    return count;
}

void necro_steady_heap(void) {
    // A long-running loop that allocates and frees the same working set each turn: keep it. By
    // default glibc hands memory above a moving threshold back after each turn and maps it again
    // on the next (page faults, mmap/munmap and the TLB flushes that go with them).
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
}

int necro_hmac_sha256(const void *key, size_t key_length, const void *data, size_t length, unsigned char out[32]) {
    unsigned int written = 0;
    return HMAC(EVP_sha256(), key, (int)key_length, data, length, out, &written) != NULL && written == 32 ? 0 : -1;
}

int necro_equal_in_constant_time(const void *a, const void *b, size_t length) { return CRYPTO_memcmp(a, b, length) == 0; }

int necro_random_bytes(void *buffer, size_t length) {
    unsigned char *bytes = buffer;
    while (length > 0) {
        ssize_t got = getrandom(bytes, length, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        bytes += got;
        length -= (size_t)got;
    }
    return 0;
}
