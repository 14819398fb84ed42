import Foundation

/// The unix socket on which `necro runner` takes its agent's reports (`necro step`, `necro
/// checkpoint`): one line asked, one line answered (`ok …` or `error …`) per connection. Its path
/// is given to the agent as `NECRO_RUNNER_CONTROL`.
final class RunnerControl: Sendable {
    let path: String
    private let fd: Int32

    /// Listens at `path`; each request is answered by `handle`, one at a time.
    init(path: String, handle: @escaping @Sendable (String) -> String) throws {
        self.path = path
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RunnerCall.Failure(description: "cannot make a socket: \(String(cString: strerror(errno)))") }
        guard Self.withAddress(path, { bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw RunnerCall.Failure(description: "cannot listen on \(path): \(why)")
        }
        chmod(path, 0o600)
        self.fd = fd
        let thread = Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                var timeout = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let line = Self.readLine(client)
                let answer = Array((handle(line) + "\n").utf8)
                _ = answer.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(client)
            }
        }
        thread.name = "necro-runner-control"
        thread.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }

    /// Sends one request to the runner at `path`: its answer.
    static func ask(_ path: String, _ request: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RunnerCall.Failure(description: "cannot make a socket") }
        defer { close(fd) }
        guard withAddress(path, { connect(fd, $0, $1) }) == 0 else {
            throw RunnerCall.Failure(description: "cannot reach necro runner at \(path): \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 120, tv_usec: 0)  // a checkpoint of a large folder takes a while
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array((request.replacingOccurrences(of: "\n", with: " ") + "\n").utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        return readLine(fd)
    }

    private static func readLine(_ fd: Int32) -> String {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 65_536, recv(fd, &byte, 1, 0) == 1, byte != 10 { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            errno = ENAMETOOLONG
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}
