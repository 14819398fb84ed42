import Foundation

/// A runner's call to its dispatcher's API, as `necro heartbeat` makes it: one HTTP/1.1 request,
/// over the unix socket (`NECRO_API_SOCKET`) or to the address (`NECRO_API_URL`) the runner was
/// given, with its own token (`NECRO_RUNNER_TOKEN`).
struct RunnerCall {
    enum Endpoint: Equatable {
        case socket(String)
        case tcp(host: String, port: Int)
    }

    var endpoint: Endpoint
    var token: String

    /// The endpoint and token from a runner's environment; nil if it names none.
    init?(environment: [String: String]) {
        guard let token = environment["NECRO_RUNNER_TOKEN"], !token.isEmpty else { return nil }
        if let socket = environment["NECRO_API_SOCKET"], !socket.isEmpty {
            endpoint = .socket(socket)
        } else if let url = environment["NECRO_API_URL"].flatMap(URLComponents.init(string:)), url.scheme == "http",
            let host = url.host, let port = url.port
        {
            endpoint = .tcp(host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port)
        } else {
            return nil
        }
        self.token = token
    }

    /// The path of a runner's callback (`heartbeat`, `events`), its id percent-encoded.
    static func path(runner: String, _ endpoint: String) -> String {
        "/v1/runners/\(runner.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? runner)/\(endpoint)"
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// POSTs to `path` (already percent-encoded), with a JSON body if one is given: the
    /// response's status and body.
    func post(_ path: String, json body: [UInt8] = [], timeoutSeconds: Int = 30) throws -> (status: Int, body: String) {
        let fd = try connect()
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let type = body.isEmpty ? "" : "Content-Type: application/json\r\n"
        let request = Array(
            "POST \(path) HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(token)\r\n\(type)Content-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8) + body
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw Failure(description: "cannot send to the dispatcher: \(String(cString: strerror(errno)))") }
            sent += count
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while response.count < 1 << 20 {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            response += buffer[..<count]
        }
        // The status line, up to its CR LF, as bytes: `HTTP/1.1 204` may come without a reason.
        let lineEnd = response.firstIndex(of: 13) ?? response.firstIndex(of: 10) ?? response.endIndex
        let statusLine = response[..<lineEnd].split(separator: 32)
        guard statusLine.count >= 2, statusLine[0].starts(with: Array("HTTP/".utf8)),
            let status = Int(String(decoding: statusLine[1], as: UTF8.self))
        else {
            throw Failure(description: "the dispatcher did not answer (\(response.isEmpty ? "no response" : "not HTTP"))")
        }
        let text = String(decoding: response, as: UTF8.self)
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }

    private func connect() throws -> Int32 {
        switch endpoint {
        case .socket(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Failure(description: "cannot make a socket: \(String(cString: strerror(errno)))") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                throw Failure(description: "the socket path \(path) is too long")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard connected == 0 else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw Failure(description: "cannot reach the dispatcher at \(path): \(why)")
            }
            return fd
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var found: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &found) == 0, let first = found else {
                throw Failure(description: "cannot resolve \(host)")
            }
            defer { freeaddrinfo(found) }
            var candidate: UnsafeMutablePointer<addrinfo>? = first
            var why = "no address"
            while let info = candidate {
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
                if fd >= 0 {
                    if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
                    why = String(cString: strerror(errno))
                    close(fd)
                }
                candidate = info.pointee.ai_next
            }
            throw Failure(description: "cannot reach the dispatcher at \(host):\(port): \(why)")
        }
    }
}
