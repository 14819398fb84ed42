import CNecroSystem
import Foundation

/// A short-lived helper program run to completion (git, for instance), its output collected.
public enum Subprocess {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public var succeeded: Bool { status == 0 }
    }

    public struct LaunchError: Error, CustomStringConvertible, Sendable {
        public var program: String
        public var message: String
        public var description: String { "cannot run \(program): \(message)" }
    }

    /// Runs `argv` (found on PATH) in `directory` with `environment`, stdin from /dev/null, and
    /// waits for it. The exit status is 128 + N when it was killed by signal N.
    public static func run(_ argv: [String], in directory: String?, environment: [String: String]) throws(LaunchError) -> Result {
        var out: [Int32] = [0, 0]
        var err: [Int32] = [0, 0]
        guard pipe(&out) == 0 else { throw LaunchError(program: argv[0], message: errnoText()) }
        guard pipe(&err) == 0 else {
            close(out[0]); close(out[1])
            throw LaunchError(program: argv[0], message: errnoText())
        }
        var pid: pid_t = 0
        let error = withCStrings(argv) { argvPointer in
            withCEnvironment(environment) { envp in
                necro_spawn_split(argv[0], argvPointer, envp, directory, out[1], err[1], &pid)
            }
        }
        close(out[1])
        close(err[1])
        guard error == 0 else {
            close(out[0]); close(err[0])
            throw LaunchError(program: argv[0], message: String(cString: strerror(error)))
        }
        let (stdout, stderr) = readBoth(out[0], err[0])
        close(out[0])
        close(err[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// Reads two pipes to their ends at once, so that neither can fill up and stall the child.
    private static func readBoth(_ first: Int32, _ second: Int32) -> ([UInt8], [UInt8]) {
        var data: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0)]
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while fds.contains(where: { $0.fd >= 0 }) {
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let count = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    data[index] += buffer[0..<count]
                } else if count == 0 || errno != EINTR {
                    fds[index].fd = -1
                }
            }
        }
        return (data[0], data[1])
    }
}
