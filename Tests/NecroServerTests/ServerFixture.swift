import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroServer
import NecroTesting
import Synchronization

/// A dispatcher with real runners and a real registry, its API served on a free port of this
/// machine, and an HTTP client: as `necro serve` runs it.
final class ServerFixture: Sendable {
    let dir: TemporaryDirectory
    let registry: SQLiteRegistry
    let launcher = LocalProcessLauncher(outputInterval: .zero)
    let dispatcher: Dispatcher<ContinuousClock>
    let keys = AccessKeys(adminToken: "admin-secret", runnerKey: Array(repeating: 7, count: 32))
    let api: NecroAPI
    let url: String
    private let server: Task<Void, Never>
    private let tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]
    private let running = Mutex<Task<RunOutcome, any Error>?>(nil)

    /// The dispatcher's run, once started.
    var run: Task<RunOutcome, any Error> { running.withLock { $0! } }

    /// Runs `spec` (and what is sent in later) with `script` as every runner's command.
    init(
        _ spec: TaskSetSpec?, script: String = "true", concurrency: Int = 2, keepRunning: Bool = true,
        streamBuffer: Int = 4096, keepAlive: Duration = .seconds(15), retries: Int = 1, startRun: Bool = true, bodyLimitMB: Int = 64, poolEnabled: Bool = true
    ) async throws {
        dir = try TemporaryDirectory("server")
        registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        var configuration = DispatcherConfiguration(
            retry: RetryPolicy(maxAttempts: retries, initialDelay: .milliseconds(10), base: 2, maxDelay: .milliseconds(50)),
            pools: [
                PoolConfiguration(
                    name: "local", limits: PoolLimits(name: "local", maxConcurrency: concurrency, enabled: poolEnabled),
                    command: CommandTemplate(["/bin/sh", "-c", script]), environment: ["ROOT": dir.path])
            ])
        configuration.maxRequestBodyMB = bodyLimitMB
        let keys = self.keys
        let runnerAPI = RunnerAPI(token: { keys.token(for: $0) })
        dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launchers: [launcher], clock: ContinuousClock(),
            paths: .init(logs: dir.file(".necro/logs"), work: dir.file(".necro/work"), registry: registry.path, status: dir.file(".necro/status")),
            options: .init(finishWhenIdle: !keepRunning), environment: ["PATH": "/usr/bin:/bin"], runnerAPI: runnerAPI)
        let metrics = DispatcherMetrics(pools: ["local"])
        let updates = dispatcher.updates()
        Task { await metrics.follow(updates) }
        api = NecroAPI(
            registry: registry, dispatcher: dispatcher, keys: keys, metrics: metrics, keepAlive: keepAlive,
            streamBuffer: streamBuffer)
        let port: Int
        (port, server) = try await HTTPServer.start(api, at: ListenAddress(host: "127.0.0.1", port: 0))
        url = "http://127.0.0.1:\(port)"
        runnerAPI.url = url
        if let spec {
            try registry.importTaskSet(spec, source: nil)
            tasksets = [(spec, try registry.tasks(spec: spec.name))]
        } else {
            tasksets = []
        }
        if startRun { self.startRun() }
    }

    /// Starts the dispatcher on the spec given.
    func startRun() {
        let (dispatcher, tasksets) = (self.dispatcher, self.tasksets)
        running.withLock { $0 = Task { try await dispatcher.run(tasksets) } }
    }

    /// Stops the dispatcher (its runners) and the server.
    func finish() async {
        dispatcher.shutdownNow()
        _ = try? await run.value
        server.cancel()
        launcher.shutdown()
        dir.remove()
    }

    struct Reply: Sendable {
        var status: Int
        var text: String
        var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }
        /// The error's code, for an error reply.
        var code: String? { json?["error"]?["code"]?.stringValue }
    }

    /// One request, its whole reply.
    func call(
        _ method: HTTPMethod, _ path: String, token: String? = nil, body: String? = nil, contentType: String? = nil,
        headers: [(String, String)] = []
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let buffer = try await response.body.collect(upTo: 16 << 20)
        return Reply(status: Int(response.status.code), text: String(buffer: buffer))
    }

    /// A read, with the admin token unless told otherwise.
    func get(_ path: String, token: String? = "admin-secret") async throws -> Reply { try await call(.GET, path, token: token) }

    func post(_ path: String, token: String? = "admin-secret", json: String? = nil) async throws -> Reply {
        try await call(.POST, path, token: token, body: json, contentType: json == nil ? nil : "application/json")
    }

    /// Waits until an update brings an event that `matches`, or the stream ends; returns it.
    func awaitEvent(
        _ updates: inout AsyncStream<Dispatcher<ContinuousClock>.Update>.Iterator, where matches: (EventRecord) -> Bool
    ) async -> EventRecord? {
        while let update = await next(&updates, within: .seconds(30)) {
            if case .events(let batch) = update, let found = batch.first(where: matches) { return found }
        }
        return nil
    }
}

func task(_ id: TaskID, _ deps: [TaskID] = [], skill: String? = nil) -> TaskSpec {
    TaskSpec(id: id, title: "Task \(id)", dependencies: deps, requiredSkill: skill)
}
