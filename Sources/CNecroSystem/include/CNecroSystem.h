// Linux calls Swift cannot reach directly: variadic syscall(), glibc's _np spawn extension, epoll.
#ifndef C_NECRO_SYSTEM_H
#define C_NECRO_SYSTEM_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/// Starts `argv` with `envp` in `cwd`, in a process group of its own, with default signal
/// dispositions and an empty signal mask; stdin from /dev/null, stdout and stderr to `output_fd`,
/// and no other file descriptor of the caller.
/// Returns 0 and sets *pid, or an errno value (ENOENT: command not found).
int necro_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd, int output_fd,
                pid_t *pid);

/// As necro_spawn, with stderr to `error_fd`.
int necro_spawn_split(const char *path, char *const argv[], char *const envp[], const char *cwd, int output_fd,
                      int error_fd, pid_t *pid);
/// As necro_spawn_split, with stdin from `input_fd` (-1: /dev/null).
int necro_spawn_input(const char *path, char *const argv[], char *const envp[], const char *cwd, int input_fd,
                      int output_fd, int error_fd, pid_t *pid);

/// The runner status table: one record of NECRO_STATUS_RECORD_SIZE bytes per runner; its first
/// NECRO_STATUS_SIZE bytes are the status the supervisor writes (below), the rest the runner's
/// identity, written by the caller before the start.
#define NECRO_STATUS_RECORD_SIZE 256
#define NECRO_STATUS_SIZE 8

/// As necro_spawn, under a supervisor: a process of its own, leader of the new process group, that
/// runs `path` (an absolute path: no PATH search) with stdin from `input_fd`, waits for it, writes
/// how it ended into its record of the status table `status_path` at `status_offset` (the exit
/// code, or 128 + the signal; `E` and the errno if the exec failed, `C` and the errno if `cwd`
/// could not be made or entered; then a newline), and ends the same way (127 for a failed start). It
/// ignores SIGTERM, SIGINT and SIGHUP, so a stop of the group ends the runner and lets the
/// supervisor record it; it outlives the caller. Should the caller end first, the supervisor
/// reads the runner's output from `output_read_fd` (the read end of the pipe `output_fd` writes
/// to) into `log_path`, up to `log_limit` bytes in all, so that the runner neither dies of SIGPIPE
/// nor blocks. It shares the caller's memory and runs on `block` (at least
/// necro_supervisor_block_size bytes, from necro_supervisor_block_allocate), where everything it
/// reads is copied: the call does not wait for the runner's exec. The block is the supervisor's
/// until the caller has reaped it (`*pid`, watched through `*pidfd`); then it may serve another.
/// The supervisor makes `cwd` if it is missing (not its parents): the caller does not spend its
/// time on the file system. The runner runs at niceness `nice` (NECRO_NICE_UNCHANGED: the caller's).
/// Returns 0, or an errno
/// value if no supervisor could be started (E2BIG: the block is too small); ENOSYS where there is
/// no supervisor for this processor.
/// `status_lock_fd`: a descriptor of the status table on which the caller holds an open-file-
/// description lock over the runner's record (`necro_lock_status_record`): the supervisor keeps it
/// until it ends, so that the lock says, to anyone, whether the runner's supervisor lives — from
/// before it starts (the caller may die at any moment after this call) to after its status is
/// written. The supervisor also writes `S<pid>` into the status field when it starts: its pid.
int necro_spawn_supervised(const char *path, char *const argv[], char *const envp[], const char *cwd, int input_fd,
                           int output_fd, int output_read_fd, const char *status_path, long status_offset,
                           int status_lock_fd, const char *log_path, long log_limit, int nice, void *block,
                           size_t block_size, pid_t *pid, int *pidfd);
/// Opens the status table at `path` and takes a lock over the record at `offset` (an open-file-
/// description write lock): the descriptor, or -1 with errno.
int necro_lock_status_record(const char *path, long offset);
/// Whether a lock is held over the record at `offset` of the status table at `path`: 1 held (its
/// supervisor lives), 0 not, -1 unknown (errno).
int necro_status_record_locked(const char *path, long offset);
#define NECRO_NICE_UNCHANGED (-100)
/// The size of block a supervised start of these needs.
size_t necro_supervisor_block_size(const char *path, char *const argv[], char *const envp[], const char *cwd,
                                   const char *status_path, const char *log_path);
/// A block for supervisors (stacks and data), or NULL.
void *necro_supervisor_block_allocate(size_t size);
void necro_supervisor_block_free(void *block, size_t size);

/// A pipe whose ends close on exec, made in one call (no window for a concurrent spawn to inherit them).
int necro_pipe(int fds[2]);

/// A file descriptor that becomes readable when the process exits, or -1 with errno.
int necro_pidfd_open(pid_t pid);

int necro_epoll_create(void);
/// Watches `fd` for input (and hang-up); `token` comes back with its events.
int necro_epoll_add(int epfd, int fd, uint64_t token);
int necro_epoll_remove(int epfd, int fd);
/// Waits up to `timeout_ms` (-1: forever); fills `tokens`, returns how many, or -1 with errno.
int necro_epoll_wait(int epfd, uint64_t *tokens, int capacity, int timeout_ms);

/// HMAC-SHA256 of `data` under `key` (the system's libcrypto) into `out`; 0, or -1 on failure.
int necro_hmac_sha256(const void *key, size_t key_length, const void *data, size_t length, unsigned char out[32]);
/// Whether the two buffers are equal, in a time that does not depend on where they differ.
int necro_equal_in_constant_time(const void *a, const void *b, size_t length);
/// Fills `buffer` from the kernel's random source; 0, or -1.
int necro_random_bytes(void *buffer, size_t length);

/// Tunes the C library's allocator for a long-running process with a steady working set.
void necro_steady_heap(void);

#endif
