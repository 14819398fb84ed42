import Foundation
import Hummingbird
public import ServiceLifecycle
import Logging

/// Where the server listens: `HOST:PORT`.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:7777`, `[::1]:7777`, `localhost:0`; nil if it is not one.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether only this machine can connect.
    public var isLoopback: Bool { host == "localhost" || host == "::1" || host.hasPrefix("127.") }

    /// The base URL clients on this machine use.
    public var url: String { "http://\(self)" }
}

/// Serves a `NecroAPI` over HTTP/1.1 with Hummingbird.
public enum HTTPServer {
    /// Finds the port to listen on: `address.port` if free, else (with `fallBack`) one the kernel
    /// picks; port 0 always means the kernel's pick. The port is free when this returns; the
    /// server binds it next.
    public static func reserve(_ address: ListenAddress, fallBack: Bool) throws -> ListenAddress {
        if let port = bindProbe(address) { return ListenAddress(host: address.host, port: port) }
        let cause = String(cString: strerror(errno))
        if fallBack, address.port != 0, let port = bindProbe(ListenAddress(host: address.host, port: 0)) {
            return ListenAddress(host: address.host, port: port)
        }
        throw ServerError("cannot listen on \(address): \(cause)")
    }

    /// Binds a socket to the address and returns the port it got; nil (errno set) if it cannot.
    private static func bindProbe(_ address: ListenAddress) -> Int? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &found) == 0, let info = found else {
            errno = EADDRNOTAVAIL
            return nil
        }
        defer { freeaddrinfo(found) }
        let socket = Glibc.socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard socket >= 0 else { return nil }
        defer { close(socket) }
        var yes: Int32 = 1
        setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        guard bind(socket, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        let family = storage.ss_family
        let port = withUnsafePointer(to: &storage) { pointer -> UInt16 in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port }
        }
        return Int(UInt16(bigEndian: port))
    }

    /// Serves `api` at `address` until the calling task is cancelled. `onListening` is called once
    /// the server accepts connections.
    public static func run(_ api: NecroAPI, at address: ListenAddress, onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        async throws
    {
        var logger = Logger(label: "necro.http")
        logger.logLevel = .warning
        let app = Application(
            router: api.router(),
            configuration: ApplicationConfiguration(address: .hostname(address.host, port: address.port), serverName: "necro"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? address.port) },
            logger: logger)
        try await app.run()
    }

    /// The server as a service, for a `ServiceGroup`.
    public static func service(_ api: NecroAPI, at address: ListenAddress) -> any Service {
        var logger = Logger(label: "necro.http")
        logger.logLevel = .warning
        return Application(
            router: api.router(),
            configuration: ApplicationConfiguration(address: .hostname(address.host, port: address.port), serverName: "necro"),
            logger: logger)
    }

    /// Starts serving `api` in a task of its own and waits until it listens: the port it listens
    /// on, and the task (cancel it to stop). Throws what kept it from listening.
    public static func start(_ api: NecroAPI, at address: ListenAddress) async throws -> (port: Int, task: Task<Void, Never>) {
        let (started, continuation) = AsyncStream.makeStream(of: Result<Int, ServerError>.self)
        let task = Task {
            do {
                try await run(api, at: address) { port in continuation.yield(.success(port)) }
            } catch {
                continuation.yield(.failure(ServerError("the server at \(address) stopped: \(error)")))
            }
            continuation.finish()
        }
        for await result in started {
            switch result {
            case .success(let port): return (port, task)
            case .failure(let error): throw error
            }
        }
        throw ServerError("the server at \(address) did not start")
    }
}
