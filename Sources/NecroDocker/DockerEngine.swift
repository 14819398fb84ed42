public import AsyncHTTPClient
public import Foundation
import NIOFoundationCompat
import NIOCore
import NIOHTTP1

/// An error from the Docker engine, with its own message, or from reaching it.
public struct DockerError: Error, CustomStringConvertible, Sendable {
    /// The HTTP status, 0 when the engine could not be reached.
    public var status: Int
    public var message: String
    public var description: String { message }

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }
}

/// The Docker Engine API over its unix socket: the few calls a pool needs, in the API version
/// the engine and this client both speak.
public final class DockerEngine: Sendable {
    /// The newest API version this client is written for; an older engine (Debian's speaks 1.41)
    /// is spoken to in its own.
    static let newestVersion = (1, 43)
    static let oldestVersion = (1, 41)

    public let socketPath: String
    let client: HTTPClient
    /// `/v1.41`-style, once negotiated.
    let prefix: String
    /// The engine's version, as `/version` gives it: for messages.
    public let engineVersion: String

    /// The engine's socket: `DOCKER_HOST` if it names a unix socket, else `/var/run/docker.sock`.
    public static func socketPath(environment: [String: String] = ProcessInfo.processInfo.environment) throws(DockerError) -> String {
        guard let host = environment["DOCKER_HOST"], !host.isEmpty else { return "/var/run/docker.sock" }
        guard host.hasPrefix("unix://") else {
            throw DockerError(status: 0, message: "DOCKER_HOST=\(host): only a unix socket (unix:///path) is supported")
        }
        return String(host.dropFirst("unix://".count))
    }

    /// Connects to the engine at `socketPath` and agrees on an API version with it.
    public static func connect(socketPath: String) async throws(DockerError) -> DockerEngine {
        do {
            let probe = DockerEngine(socketPath: socketPath, prefix: "", engineVersion: "")
            let (status, body) = try await probe.call(.GET, "/version")
            guard status == 200, let version = try? JSONDecoder().decode(Version.self, from: body) else {
                throw DockerError(status: status, message: "the Docker engine at \(socketPath) did not answer /version (\(status))")
            }
            let api = version.ApiVersion.split(separator: ".").compactMap { Int($0) }
            guard api.count == 2 else { throw DockerError(status: 0, message: "the Docker engine gave an API version not understood: \(version.ApiVersion)") }
            let engine = (api[0], api[1])
            if engine < oldestVersion {
                throw DockerError(
                    status: 0, message: "the Docker engine at \(socketPath) speaks API \(version.ApiVersion); necro needs \(oldestVersion.0).\(oldestVersion.1) or later (Docker 20.10)")
            }
            let chosen = engine < newestVersion ? engine : newestVersion
            return DockerEngine(socketPath: socketPath, prefix: "/v\(chosen.0).\(chosen.1)", engineVersion: version.Version ?? version.ApiVersion)
        } catch let error as DockerError {
            throw error
        } catch {
            throw DockerError(status: 0, message: "cannot reach the Docker engine at \(socketPath): \(error)")
        }
    }

    /// One HTTP client for the process, never shut down (it lives as long as the process).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        // Each running container holds a connection (its output) as long as it runs.
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 1_024)
        configuration.timeout = .init(connect: .seconds(5))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    private init(socketPath: String, prefix: String, engineVersion: String) {
        self.socketPath = socketPath
        self.client = Self.client
        self.prefix = prefix
        self.engineVersion = engineVersion
    }

    /// Nothing to let go of: connections are pooled for the process, closed when idle.
    public func shutdown() async {}

    private struct Version: Decodable {
        var ApiVersion: String
        var Version: String?
    }

    // MARK: Calls

    func request(_ method: HTTPMethod, _ path: String, json: Data? = nil) throws(DockerError) -> HTTPClientRequest {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: prefix + path) else {
            throw DockerError(status: 0, message: "not a usable socket path: \(socketPath)")
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        request.headers.add(name: "Host", value: "docker")
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: json))
        }
        return request
    }

    /// One call, its whole answer read (at most 16 MB).
    func call(_ method: HTTPMethod, _ path: String, json: Data? = nil, timeout: TimeAmount = .seconds(60)) async throws(DockerError) -> (Int, Data) {
        let request = try request(method, path, json: json)
        do {
            let response = try await client.execute(request, timeout: timeout)
            let body = try await response.body.collect(upTo: 16 << 20)
            return (Int(response.status.code), Data(buffer: body))
        } catch {
            throw DockerError(status: 0, message: "the Docker engine at \(socketPath) did not answer \(method) \(path): \(error)")
        }
    }

    /// A call that must succeed (a 2xx); otherwise the engine's own message.
    @discardableResult
    func expect(_ method: HTTPMethod, _ path: String, json: Data? = nil, timeout: TimeAmount = .seconds(60)) async throws(DockerError) -> Data {
        let (status, body) = try await call(method, path, json: json, timeout: timeout)
        guard (200..<300).contains(status) else { throw DockerError(status: status, message: Self.message(body, status: status)) }
        return body
    }

    /// The engine's `{"message": …}`, or the body as text.
    static func message(_ body: Data, status: Int) -> String {
        struct Message: Decodable { var message: String }
        if let decoded = try? JSONDecoder().decode(Message.self, from: body) { return decoded.message }
        let text = String(decoding: body.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "the Docker engine answered \(status)" : text
    }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }

    // MARK: Containers

    /// Creates a container; its id.
    public func createContainer(_ body: [String: Any], name: String? = nil) async throws(DockerError) -> String {
        let json: Data
        do { json = try JSONSerialization.data(withJSONObject: body) } catch {
            throw DockerError(status: 0, message: "cannot encode the container's configuration: \(error)")
        }
        let answer = try await expect(.POST, "/containers/create" + (name.map { "?name=\(Self.escape($0))" } ?? ""), json: json)
        struct Created: Decodable { var Id: String }
        guard let created = try? JSONDecoder().decode(Created.self, from: answer) else {
            throw DockerError(status: 0, message: "the Docker engine's answer to create had no container id")
        }
        return created.Id
    }

    public func start(_ id: String) async throws(DockerError) {
        let (status, body) = try await call(.POST, "/containers/\(id)/start")
        guard (200..<300).contains(status) || status == 304 else { throw DockerError(status: status, message: Self.message(body, status: status)) }
    }

    /// Sends a signal (`SIGTERM`, `SIGKILL`) to the container's first process; a container not
    /// running is no error.
    public func kill(_ id: String, signal: String) async throws(DockerError) {
        let (status, body) = try await call(.POST, "/containers/\(id)/kill?signal=\(signal)")
        guard (200..<300).contains(status) || status == 409 || status == 404 else {
            throw DockerError(status: status, message: Self.message(body, status: status))
        }
    }

    /// Waits until the container is not running; its exit code.
    public func wait(_ id: String) async throws(DockerError) -> Int32 {
        let body = try await expect(.POST, "/containers/\(id)/wait?condition=not-running", timeout: .hours(24 * 365))
        struct Waited: Decodable { var StatusCode: Int64 }
        guard let waited = try? JSONDecoder().decode(Waited.self, from: body) else {
            throw DockerError(status: 0, message: "the Docker engine's answer to wait had no status code")
        }
        return Int32(truncatingIfNeeded: waited.StatusCode)
    }

    /// What the engine knows of a container's state.
    public struct State: Sendable, Decodable {
        /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
        public var Status: String
        public var Running: Bool
        public var ExitCode: Int32
        public var OOMKilled: Bool
        public var Error: String?
    }

    /// The container's state; nil if there is no such container.
    public func state(_ id: String) async throws(DockerError) -> State? {
        let (status, body) = try await call(.GET, "/containers/\(id)/json")
        if status == 404 { return nil }
        guard status == 200 else { throw DockerError(status: status, message: Self.message(body, status: status)) }
        struct Inspected: Decodable { var State: DockerEngine.State }
        guard let inspected = try? JSONDecoder().decode(Inspected.self, from: body) else {
            throw DockerError(status: 0, message: "the Docker engine's answer to inspect had no state")
        }
        return inspected.State
    }

    /// Removes the container (stopped or not); one already gone is no error.
    public func remove(_ id: String) async throws(DockerError) {
        let (status, body) = try await call(.DELETE, "/containers/\(id)?force=1&v=1")
        guard (200..<300).contains(status) || status == 404 else { throw DockerError(status: status, message: Self.message(body, status: status)) }
    }

    /// A container as a listing shows it.
    public struct Listed: Sendable, Decodable {
        public var Id: String
        public var Labels: [String: String]?
        public var State: String
    }

    /// Every container (running or not) with the label `key=value`.
    public func containers(label key: String, value: String) async throws(DockerError) -> [Listed] {
        let filters = "{\"label\":[\"\(key)=\(value)\"]}"
        let body = try await expect(.GET, "/containers/json?all=1&filters=\(Self.escape(filters))")
        do { return try JSONDecoder().decode([Listed].self, from: body) } catch {
            throw DockerError(status: 0, message: "the Docker engine's container list was not understood: \(error)")
        }
    }

    /// The container's output (stdout and stderr) from now until it ends: call it before `start`
    /// to miss nothing.
    public func attach(_ id: String) async throws(DockerError) -> HTTPClientResponse.Body {
        try await stream(.POST, "/containers/\(id)/attach?stream=1&stdout=1&stderr=1", of: id)
    }

    /// The container's whole output so far from the engine's log, then followed until it ends
    /// (at once, for a container that has ended): for a container adopted after a restart.
    public func logs(_ id: String) async throws(DockerError) -> HTTPClientResponse.Body {
        try await stream(.GET, "/containers/\(id)/logs?follow=1&stdout=1&stderr=1", of: id)
    }

    private func stream(_ method: HTTPMethod, _ path: String, of id: String) async throws(DockerError) -> HTTPClientResponse.Body {
        let request = try request(method, path)
        do {
            let response = try await client.execute(request, timeout: .hours(24 * 365))
            guard response.status == .ok else {
                let body = try await response.body.collect(upTo: 1 << 20)
                throw DockerError(status: Int(response.status.code), message: Self.message(Data(buffer: body), status: Int(response.status.code)))
            }
            return response.body
        } catch let error as DockerError {
            throw error
        } catch {
            throw DockerError(status: 0, message: "cannot follow the output of container \(id.prefix(12)): \(error)")
        }
    }

    // MARK: Images

    /// Whether the engine has the image.
    public func hasImage(_ name: String) async throws(DockerError) -> Bool {
        let (status, body) = try await call(.GET, "/images/\(Self.escape(name))/json")
        if status == 404 { return false }
        guard status == 200 else { throw DockerError(status: status, message: Self.message(body, status: status)) }
        return true
    }

    /// Pulls the image from its registry.
    public func pull(_ name: String) async throws(DockerError) {
        // A name without a tag means its latest (else the engine pulls every tag of it).
        let lastPart = name.split(separator: "/").last ?? ""
        let tagged = lastPart.contains(":") || name.contains("@")
        let body: Data
        do {
            body = try await expect(.POST, "/images/create?fromImage=\(Self.escape(name))" + (tagged ? "" : "&tag=latest"), timeout: .minutes(30))
        } catch {
            throw DockerError(status: error.status, message: "pulling \(name): \(error.message)")
        }
        // A pull that fails midway says so in its progress stream, with 200.
        for line in body.split(separator: UInt8(ascii: "\n")) {
            struct Progress: Decodable { var error: String? }
            if let error = (try? JSONDecoder().decode(Progress.self, from: Data(line)))?.error {
                // (The engine's message may not name the image.)
                throw DockerError(status: 0, message: "pulling \(name): \(error)")
            }
        }
    }
}

/// Splits the engine's multiplexed output stream (each frame: the stream, three zero bytes, the
/// payload's size, the payload) into payload bytes: a container without a TTY, as necro makes them.
struct FrameReader {
    private var buffer: [UInt8] = []

    /// Takes in bytes; returns the payload bytes they complete.
    mutating func take(_ bytes: some Collection<UInt8>) -> [UInt8] {
        buffer.append(contentsOf: bytes)
        var payload: [UInt8] = []
        var offset = 0
        while buffer.count - offset >= 8 {
            let size = buffer[(offset + 4)..<(offset + 8)].reduce(0) { $0 << 8 | Int($1) }
            guard buffer.count - offset - 8 >= size else { break }
            payload.append(contentsOf: buffer[(offset + 8)..<(offset + 8 + size)])
            offset += 8 + size
        }
        buffer.removeFirst(offset)
        return payload
    }
}
