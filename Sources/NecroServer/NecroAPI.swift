import Foundation
import NIOCore
public import Hummingbird
import NecroCore
public import NecroDispatcher
public import NecroRegistry

/// The HTTP API of a running dispatcher: REST under `/v1`, runner callbacks, the event stream,
/// `/metrics`, `/healthz` and the dashboard at `/`.
///
/// Reads go to the registry (the truth); commands go to the dispatcher, whose loop carries them out
/// and records them; a spec sent in is validated as the CLI does and imported, then run.
public final class NecroAPI: Sendable {
    public typealias Context = BasicRequestContext

    let registry: SQLiteRegistry
    let dispatcher: Dispatcher<ContinuousClock>
    let keys: AccessKeys
    let metrics: DispatcherMetrics
    /// Keep-alive comments on idle event streams, this often.
    let keepAlive: Duration
    /// Updates an event stream's subscriber may fall behind by before it is dropped.
    let streamBuffer: Int

    /// - Parameters:
    ///   - keepAlive: how often an idle event stream gets a keep-alive comment.
    ///   - streamBuffer: how many updates an event stream may fall behind by before it is closed
    ///     (its client resumes with `Last-Event-ID`).
    public init(
        registry: SQLiteRegistry, dispatcher: Dispatcher<ContinuousClock>, keys: AccessKeys, metrics: DispatcherMetrics,
        keepAlive: Duration = .seconds(15), streamBuffer: Int = 4096
    ) {
        self.registry = registry
        self.dispatcher = dispatcher
        self.keys = keys
        self.metrics = metrics
        self.keepAlive = keepAlive
        self.streamBuffer = streamBuffer
    }

    /// The routes, for an `Application` (the executable and the tests build it the same way).
    public func router() -> Router<Context> {
        let router = Router(context: Context.self)
        router.add(middleware: JSONErrorMiddleware())
        router.get("/") { _, _ in Dashboard.response() }
        router.get("/healthz") { [self] _, _ in
            // Records that cannot be written make the dispatcher unhealthy: it starts nothing.
            let failure = dispatcher.recordFailure
            var health: [String: JSONValue] = [
                "status": failure == nil ? "ok" : "records_failing", "running": .int(dispatcher.snapshot.running),
                "last_event_id": .int(Int((try? registry.lastEventID()) ?? 0)),
            ]
            if let failure { health["error"] = .string(failure) }
            return JSONResponse.make(.object(health), status: failure == nil ? .ok : .serviceUnavailable)
        }
        // Open, as /healthz is: counts and durations, no task's data.
        router.get("/metrics") { [self] _, _ in
            metrics.exposition(snapshot: dispatcher.snapshot, lastEventID: try? registry.lastEventID())
        }
        let v1 = router.group("v1")
        // Tasksets.
        v1.get("tasksets") { [self] request, _ in
            try authorizeRead(request)
            return try listTaskSets()
        }
        v1.get("tasksets/:spec") { [self] request, context in
            try authorizeRead(request)
            return try taskSet(try context.parameters.require("spec"))
        }
        v1.post("tasksets") { [self] request, context in
            try authorizeAdmin(request)
            return try await importTaskSet(request, context: context)
        }
        // Tasks.
        v1.get("tasks") { [self] request, _ in
            try authorizeRead(request)
            return try listTasks(request)
        }
        v1.get("tasks/:spec/:id") { [self] request, context in
            let (spec, id) = (try context.parameters.require("spec"), try context.parameters.require("id"))
            try authorizeRead(request, task: TaskKey(spec: spec, id: TaskID(id)))
            return try task(spec, id)
        }
        v1.post("tasks/:spec/:id/priority") { [self] request, context in
            try authorizeAdmin(request)
            let key = try existingTask(try context.parameters.require("spec"), try context.parameters.require("id"))
            let body = try await jsonBody(request, context: context)
            guard case .int(let priority)? = body["priority"] else {
                throw APIError.badRequest("priority must be an integer", field: "priority")
            }
            await dispatcher.apply(.setPriority(key, priority))
            return try task(key.spec, key.id.rawValue)
        }
        v1.post("tasks/:spec/:id/cancel") { [self] request, context in
            try authorizeAdmin(request)
            let key = try existingTask(try context.parameters.require("spec"), try context.parameters.require("id"))
            await dispatcher.apply(.cancel(key))
            return try task(key.spec, key.id.rawValue)
        }
        v1.post("tasks/:spec/:id/retry") { [self] request, context in
            try authorizeAdmin(request)
            let key = try existingTask(try context.parameters.require("spec"), try context.parameters.require("id"))
            let state = try registry.tasks(spec: key.spec).first { $0.task.id == key.id }?.state
            if let state, let refusal = TaskKey.retryRefusal(key, state) { throw APIError(.conflict, "conflict", refusal) }
            if dispatcher.snapshot.tasks[key.spec] != nil {
                await dispatcher.apply(.retry(key))
            } else if try registry.retryTask(key), let set = try registry.taskSetSpecs().first(where: { $0.name == key.spec }) {
                // A taskset the dispatcher does not run (yet): put back, then taken up.
                await dispatcher.apply(.load(set, try registry.tasks(spec: key.spec)))
            }
            return try task(key.spec, key.id.rawValue)
        }
        // Runners.
        v1.get("runners") { [self] request, _ in
            try authorizeRead(request)
            let running = request.uri.queryParameters.get("running").map { $0 == "true" || $0 == "1" } ?? false
            return JSONResponse.make(.array(try registry.runners(runningOnly: running).map(\.json)))
        }
        v1.get("runners/:id") { [self] request, context in
            try authorizeRead(request, runner: RunnerID(try context.parameters.require("id")))
            return JSONResponse.make(try runner(try context.parameters.require("id")).json)
        }
        v1.get("runners/:id/log") { [self] request, context in
            try authorizeRead(request, runner: RunnerID(try context.parameters.require("id")))
            return try logTail(try runner(try context.parameters.require("id")), request)
        }
        // Runner callbacks: each runner's own token, while it runs.
        v1.post("runners/:id/heartbeat") { [self] request, context in
            let id = try authorizeRunner(request, context)
            // While records cannot be written, a sign of life is taken without waiting for its
            // record: the runner keeps its lease, and its call does not hang.
            if dispatcher.recordFailure != nil {
                dispatcher.send(.heartbeat(id))
            } else {
                await dispatcher.apply(.heartbeat(id))
            }
            return Response(status: .noContent)
        }
        v1.post("runners/:id/events") { [self] request, context in
            let id = try authorizeRunner(request, context)
            try refuseWhileRecordsFail()
            let events = try RunnerReports.events(try await jsonBody(request, context: context))
            await dispatcher.apply(.runnerReported(id, events))
            return JSONResponse.make(.object(["recorded": .int(events.count)]))
        }
        v1.post("runners/:id/checkpoints") { [self] request, context in
            let id = try authorizeRunner(request, context)
            try refuseWhileRecordsFail()
            let checkpoint = try RunnerReports.checkpoint(try await jsonBody(request, context: context))
            await dispatcher.apply(.runnerReported(id, [checkpoint]))
            return JSONResponse.make(.object(["checkpoint_id": checkpoint.payload["checkpoint_id"] ?? .null]), status: .created)
        }
        // Pools.
        v1.get("pools") { [self] request, _ in
            try authorizeRead(request)
            return JSONResponse.make(.array(dispatcher.snapshot.pools.map { $0.json(type: poolType($0.limits.name)) }))
        }
        v1.post("pools/:name/enable") { [self] request, context in try await setPool(request, context, enabled: true) }
        v1.post("pools/:name/disable") { [self] request, context in try await setPool(request, context, enabled: false) }
        // Events.
        v1.get("events") { [self] request, _ in
            try authorizeRead(request)
            let query = try eventQuery(request, defaultLimit: 1000)
            return JSONResponse.make(.array(try registry.events(query).map(\.json)))
        }
        // The read-only token, for the admin (the dashboard puts it, not the admin token, in the
        // event stream's address).
        v1.get("tokens/read") { [self] request, _ in
            try authorizeAdmin(request)
            return JSONResponse.make(.object(["token": .string(keys.readToken)]))
        }
        v1.get("events/stream") { [self] request, _ in
            // A browser's EventSource sends no header: its token may come as ?token=.
            try authorizeRead(request, tokenInQuery: true)
            return try eventStream(request)
        }
        return router
    }

    // MARK: Handlers

    private func listTaskSets() throws -> Response {
        JSONResponse.make(
            .array(
                try registry.taskSets().map { set in
                    var object = set.jsonFields(tasks: try registry.tasks(spec: set.name))
                    object["agent_usage"] = .object(try agentUsage(set.name).taskset(set.name).json)
                    return .object(object)
                }))
    }

    /// What the agents of a taskset cost, from its `agent_usage` events.
    private func agentUsage(_ spec: String) throws -> AgentUsageTotals {
        try AgentUsageTotals(registry: registry, spec: spec)
    }

    private func taskSet(_ name: String) throws -> Response {
        guard let set = try registry.taskSets().first(where: { $0.name == name }) else { throw APIError.notFound("no taskset \(name)") }
        let tasks = try registry.tasks(spec: name)
        var object = set.jsonFields(tasks: tasks)
        let usage = try agentUsage(name)
        object["agent_usage"] = .object(usage.taskset(name).json)
        // One taskset: its tasks themselves beside their counts (named as in the list).
        object["tasks"] = .array(tasks.map { $0.json(usage: usage.task($0.key)) })
        return JSONResponse.make(.object(object))
    }

    /// Validates a spec sent as the body (markdown, YAML or JSON), imports it and has it run.
    private func importTaskSet(_ request: Request, context: Context) async throws -> Response {
        let data = Data(buffer: try await body(of: request, upTo: dispatcher.configuration.maxRequestBodyMB << 20))
        let query = request.uri.queryParameters
        let format = try Self.specFormat(query.get("format"), contentType: request.headers[.contentType], data: data)
        // The name comes from ?name= or the spec's spec_name: Kiro's markdown carries none (every
        // file starts "# Implementation Plan").
        let name = query.get("name")
        if name == nil, format == .kiroMarkdown {
            throw APIError.badRequest("a markdown spec needs its taskset's name: ?name=NAME", field: "name")
        }
        let replace = try Self.boolean(query.get("replace"), "replace") ?? false
        let file = "request body (\(format))"
        var order: SpecOrder.Mode?
        if let text = query.get("order") {
            guard let mode = SpecOrder.Mode(rawValue: text) else {
                throw APIError.badRequest("order must be written or declared, found \"\(text)\"", field: "order")
            }
            order = mode
        }
        let runOptional = try Self.boolean(query.get("with_optional"), "with_optional") ?? dispatcher.configuration.runOptionalTasks
        var loaded: LoadedSpec
        do throws(SpecValidationError) {
            loaded = try SpecLoader.load(data: data, format: format, file: file, defaultName: name ?? "", order: order)
        } catch {
            throw APIError.invalidSpec(error)
        }
        loaded.validated.spec.runOptional = runOptional
        if let name { loaded.validated.spec.name = name }
        let spec = loaded.spec
        // Another taskset of this name is replaced only when asked: never silently.
        if !replace, let existing = try registry.taskSets().first(where: { $0.name == spec.name }) {
            throw APIError(
                .conflict, "taskset_exists",
                "taskset \(spec.name) exists (version \(existing.version)\(existing.source.map { ", from \($0)" } ?? "")): send ?replace=true to replace it, or choose another ?name=",
                field: "name")
        }
        // A taskset whose runners are running keeps its definition until they are done.
        if let existing = try? registry.tasks(spec: spec.name), existing.contains(where: { $0.state == .running }) {
            throw APIError(.conflict, "taskset_running", "taskset \(spec.name) has tasks running: send it again once they are done")
        }
        let report = try registry.importTaskSet(spec, source: file)
        if let workspaces = dispatcher.workspaces { try registry.markApplied(workspaces.applyRenames(try registry.pendingTaskRenames())) }
        dispatcher.load(spec, records: try registry.tasks(spec: spec.name))
        return JSONResponse.make(report.json, status: report.created ? .created : .ok)
    }

    /// A true/false query parameter (`1`/`0` too); nil when absent.
    static func boolean(_ text: String?, _ field: String) throws -> Bool? {
        guard let text else { return nil }
        guard let value = ["true": true, "1": true, "false": false, "0": false][text.lowercased()] else {
            throw APIError.badRequest("\(field) must be true or false, found \"\(text)\"", field: field)
        }
        return value
    }

    static func specFormat(_ name: String?, contentType: String?, data: Data) throws -> SpecFormat {
        switch name?.lowercased() {
        case "md", "markdown": return .kiroMarkdown
        case "yaml", "yml": return .yaml
        case "json": return .json
        case nil: break
        default: throw APIError.badRequest("unknown format \(name!): use md, yaml or json", field: "format")
        }
        let type = contentType?.lowercased() ?? ""
        if type.contains("markdown") { return .kiroMarkdown }
        if type.contains("yaml") { return .yaml }
        if type.contains("json") { return .json }
        // Told by its first characters.
        let start = String(decoding: data.prefix(256), as: UTF8.self).drop { $0.isWhitespace }
        if start.hasPrefix("{") { return .json }
        if start.hasPrefix("- [") || start.hasPrefix("#") { return .kiroMarkdown }
        return .yaml
    }

    private func listTasks(_ request: Request) throws -> Response {
        let query = request.uri.queryParameters
        let states = try query.get("state").map { text -> Set<TaskState> in
            let states = text.split(separator: ",").map { TaskState(rawValue: String($0)) }
            guard states.allSatisfy({ $0 != nil }) else {
                throw APIError.badRequest(
                    "unknown state in \(text) (known: \(TaskState.allCases.map(\.rawValue).joined(separator: ", ")))", field: "state")
            }
            return Set(states.compactMap { $0 })
        }
        let limit = try Self.positiveInteger(request, "limit")
        let tasks = try registry.tasks(TaskFilter(spec: query.get("spec"), states: states, skill: query.get("skill"), limit: limit))
        return JSONResponse.make(.array(tasks.map(\.json)))
    }

    private func task(_ spec: String, _ id: String) throws -> Response {
        guard let record = try registry.tasks(spec: spec).first(where: { $0.task.id.rawValue == id }) else {
            throw APIError.notFound("no task \(id) in taskset \(spec)")
        }
        let runners = try registry.runners(runningOnly: false).filter { $0.task == record.key }
        let events = try registry.events(EventQuery(spec: spec, task: record.task.id))
        var json = record.json(usage: try agentUsage(spec).task(record.key))
        if case .object(var object) = json {
            object["runners"] = .array(runners.map(\.json))
            object["events"] = .array(events.suffix(200).map(\.json))
            json = .object(object)
        }
        return JSONResponse.make(json)
    }

    private func existingTask(_ spec: String, _ id: String) throws -> TaskKey {
        guard try registry.tasks(spec: spec).contains(where: { $0.task.id.rawValue == id }) else {
            throw APIError.notFound("no task \(id) in taskset \(spec)")
        }
        return TaskKey(spec: spec, id: TaskID(id))
    }

    private func runner(_ id: String) throws -> RunnerRecord {
        guard let runner = try registry.runners(runningOnly: false).first(where: { $0.id.rawValue == id }) else {
            throw APIError.notFound("no runner \(id)")
        }
        return runner
    }

    /// The end of a runner's log: `?bytes=N` (default 16 KiB), as text.
    private func logTail(_ runner: RunnerRecord, _ request: Request) throws -> Response {
        let bytes = try Self.positiveInteger(request, "bytes") ?? 16_384
        var text = Data()
        if let path = runner.logPath, let file = FileHandle(forReadingAtPath: path) {
            defer { try? file.close() }
            let size = (try? file.seekToEnd()) ?? 0
            try? file.seek(toOffset: size > UInt64(bytes) ? size - UInt64(bytes) : 0)
            text = (try? file.readToEnd()) ?? Data()
        }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: text)))
    }

    private func setPool(_ request: Request, _ context: Context, enabled: Bool) async throws -> Response {
        try authorizeAdmin(request)
        let name = try context.parameters.require("name")
        guard dispatcher.configuration.pool(named: name) != nil else { throw APIError.notFound("no pool \(name)") }
        try registry.setPoolEnabled(name, enabled)
        await dispatcher.apply(.setPoolEnabled(name, enabled))
        let pool = dispatcher.snapshot.pools.first { $0.limits.name == name }
        return JSONResponse.make(pool?.json(type: poolType(name)) ?? .object(["name": .string(name), "enabled": .bool(enabled)]))
    }

    private func poolType(_ name: String) -> String { dispatcher.configuration.pool(named: name)?.type.name ?? "local-process" }

    /// `?after=ID&spec=…&task=…&type=…&limit=N` (the task's spec is needed to tell tasks of different
    /// specs with one id apart; without it, every spec's).
    func eventQuery(_ request: Request, defaultLimit: Int?) throws -> EventQuery {
        let query = request.uri.queryParameters
        let after = try query.get("after").map { text -> Int64 in
            guard let value = Int64(text), value >= 0 else { throw APIError.badRequest("after must be an event id (0 or more)", field: "after") }
            return value
        } ?? 0
        let limit = try Self.positiveInteger(request, "limit").map { min($0, 100_000) } ?? defaultLimit
        return EventQuery(
            after: after, spec: query.get("spec"), task: query.get("task").map { TaskID($0) },
            type: query.get("type").map { EventType($0) }, limit: limit)
    }

    /// The query parameter `name` as a positive integer, nil if absent; anything else is a 400.
    static func positiveInteger(_ request: Request, _ name: String) throws -> Int? {
        try request.uri.queryParameters.get(name).map { text in
            guard let value = Int(text), value > 0 else { throw APIError.badRequest("\(name) must be a positive integer", field: name) }
            return value
        }
    }

    // MARK: Access

    /// Reads need a token, wherever the server listens: the admin token, the read-only token
    /// (`necro token --read`), or a runner's own token for its own task and its own runner while
    /// it runs.
    func authorizeRead(_ request: Request, task: TaskKey? = nil, runner: RunnerID? = nil, tokenInQuery: Bool = false) throws {
        let inAddress = tokenInQuery ? request.uri.queryParameters.get("token").map { String($0) } : nil
        guard let token = Self.bearer(request) ?? inAddress else {
            throw APIError(
                .unauthorized, "unauthorized",
                "reading needs a token: Authorization: Bearer <token>, the admin token or the read-only one (necro token --read)")
        }
        if Self.bearer(request) == nil, keys.isAdmin(token) {
            throw APIError(
                .forbidden, "forbidden", "the admin token is not taken in an address (logs and histories keep addresses): send the read-only token (necro token --read)")
        }
        if keys.isAdmin(token) || keys.isReadToken(token) { return }
        if let runner, keys.isToken(token, of: runner), dispatcher.task(ofRunner: runner) != nil { return }
        if let task {
            let running = (try? registry.runners(runningOnly: true)) ?? []
            if running.contains(where: { $0.task == task && keys.isToken(token, of: $0.id) }) { return }
        }
        throw APIError(.forbidden, "forbidden", "this token may not read this: a runner's token reads its own task only")
    }

    /// Changes need the admin token as a bearer token.
    func authorizeAdmin(_ request: Request) throws {
        guard let token = Self.bearer(request) else {
            throw APIError(.unauthorized, "unauthorized", "this call needs the admin token: Authorization: Bearer <token> (admin.token beside the registry, or NECRO_ADMIN_TOKEN)")
        }
        guard keys.isAdmin(token) else { throw APIError(.forbidden, "forbidden", "the bearer token is not the admin token") }
    }

    /// What a runner reports is answered once recorded: while records cannot be written, at once,
    /// with 503, for it to send again.
    func refuseWhileRecordsFail() throws {
        if let failure = dispatcher.recordFailure {
            throw APIError(.serviceUnavailable, "records_failing", "\(failure): send it again later")
        }
    }

    /// A runner's callback: its own token, and only while it runs here.
    func authorizeRunner(_ request: Request, _ context: Context) throws -> RunnerID {
        let id = RunnerID(try context.parameters.require("id"))
        guard let token = Self.bearer(request) else {
            throw APIError(.unauthorized, "unauthorized", "a runner calls with its token: Authorization: Bearer $NECRO_RUNNER_TOKEN")
        }
        guard keys.isToken(token, of: id) else {
            throw APIError(.forbidden, "forbidden", "this token is not runner \(id.rawValue)'s: a runner may report only on itself")
        }
        guard dispatcher.task(ofRunner: id) != nil else {
            throw APIError(.forbidden, "runner_not_running", "runner \(id.rawValue) is not running: its token works only while it runs")
        }
        return id
    }

    static func bearer(_ request: Request) -> String? {
        guard let header = request.headers[.authorization] else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    /// The request's body, up to `limit` bytes: a larger one is a 413, before any of it is read if
    /// its Content-Length says so.
    func body(of request: Request, upTo limit: Int) async throws -> ByteBuffer {
        let refusal = APIError(
            .contentTooLarge, "too_large",
            "the body is larger than \(limit >> 20) MB (dispatcher.max_request_body_mb, at most 4 MB for a runner's reports)")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw refusal }
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw refusal
        }
    }

    /// The request's JSON object body; a body that is not one is a 400 that says so.
    func jsonBody(_ request: Request, context: Context) async throws -> [String: JSONValue] {
        let body = try await body(of: request, upTo: min(4, dispatcher.configuration.maxRequestBodyMB) << 20)
        guard body.readableBytes > 0 else { return [:] }
        let data = Data(buffer: body)
        // A key given twice is refused, as in a spec: which of the two was meant is not known.
        if let issue = StrictJSON.problem(in: data, named: "body") {
            throw APIError.badRequest("the body must be a JSON object: \(issue.message) (line \(issue.location.line ?? 1))")
        }
        do {
            return try JSONDecoder().decode([String: JSONValue].self, from: data)
        } catch {
            throw APIError.badRequest("the body must be a JSON object: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context): return context.underlyingError.map { "\($0)" } ?? context.debugDescription
        case DecodingError.typeMismatch(_, let context): return context.debugDescription
        default: return "\(error)"
        }
    }
}
