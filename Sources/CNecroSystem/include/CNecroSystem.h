// Linux calls Swift cannot reach directly: variadic syscall(), glibc's _np spawn extension, epoll.
#ifndef C_NECRO_SYSTEM_H
#define C_NECRO_SYSTEM_H

#include <stdint.h>
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

/// As necro_spawn, under a supervisor: a process of its own, leader of the new process group, that
/// runs `path` (an absolute path: no PATH search), waits for it, writes its exit status (the code,
/// or 128 + the signal, and a newline) to `status_path`, and ends the same way. It ignores
/// SIGTERM, SIGINT and SIGHUP, so a stop of the group ends the runner and lets the supervisor
/// record it; it outlives the caller. Should the caller end first, the supervisor reads the
/// runner's output from `output_read_fd` (the read end of the pipe `output_fd` writes to) into
/// `log_path`, up to `log_limit` bytes in all, so that the runner neither dies of SIGPIPE nor
/// blocks. It shares the caller's memory and runs on `*block`, which the caller releases with
/// necro_supervisor_release once it has reaped the supervisor (*pid). Errors (chdir, exec) come
/// back as their errno, as with posix_spawn; ENOSYS where there is no supervisor for this processor.
int necro_spawn_supervised(const char *path, char *const argv[], char *const envp[], const char *cwd, int output_fd,
                           int output_read_fd, const char *status_path, const char *log_path, long log_limit, pid_t *pid,
                           void **block);
void necro_supervisor_release(void *block);

/// A file descriptor that becomes readable when the process exits, or -1 with errno.
int necro_pidfd_open(pid_t pid);

int necro_epoll_create(void);
/// Watches `fd` for input (and hang-up); `token` comes back with its events.
int necro_epoll_add(int epfd, int fd, uint64_t token);
int necro_epoll_remove(int epfd, int fd);
/// Waits up to `timeout_ms` (-1: forever); fills `tokens`, returns how many, or -1 with errno.
int necro_epoll_wait(int epfd, uint64_t *tokens, int capacity, int timeout_ms);

#endif
