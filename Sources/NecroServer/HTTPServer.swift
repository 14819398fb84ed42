import Foundation
import Hummingbird
import Logging

/// Where the server listens: `HOST:PORT`.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// A unix socket's path instead of a host and port.
    public var socket: String?

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// A unix socket: only processes that can reach its folder connect.
    public init(socket: String) {
        self.host = "localhost"
        self.port = 0
        self.socket = socket
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

    public var description: String { socket ?? (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)") }

    /// Whether only this machine can connect.
    public var isLoopback: Bool { socket != nil || host == "localhost" || host == "::1" || host.hasPrefix("127.") }

    /// The base URL clients on this machine use.
    public var url: String { "http://\(self)" }
}

/// Serves a `NecroAPI` over HTTP/1.1 with Hummingbird.
public enum HTTPServer {
    /// Serves `api` at `address` until the calling task is cancelled. `onListening` is called once
    /// the server accepts connections.
    public static func run(_ api: NecroAPI, at address: ListenAddress, onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        async throws
    {
        var logger = Logger(label: "necro.http")
        // Its errors reach us otherwise: a failure to listen is thrown from `run`, a request's is
        // its answer. What it would log besides is noise, such as the cancellation that stops it
        // at the end of every run.
        logger.logLevel = .critical
        let app = Application(
            router: api.router(),
            configuration: ApplicationConfiguration(
                address: address.socket.map { .unixDomainSocket(path: $0) } ?? .hostname(address.host, port: address.port), serverName: "necro"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? address.port) },
            logger: logger)
        try await app.run()
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
