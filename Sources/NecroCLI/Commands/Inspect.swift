import ArgumentParser
import Foundation
import NecroCore
import NecroRegistry
import NecroRunners

/// Opens an existing registry, or explains there is none.
/// The spec a command about one task means: the one named, or the registry's only one; exit 2 if
/// the registry holds several and none is named.
func chooseSpec(_ spec: String?, in registry: SQLiteRegistry) throws -> String {
    if let spec { return spec }
    let sets = try registry.taskSets().map(\.name)
    guard sets.count == 1, let only = sets.first else {
        printError("error: the registry holds \(sets.count) specs (\(sets.joined(separator: ", "))): pass --spec")
        throw ExitStatus.invalidInput
    }
    return only
}

func openExisting(_ path: String) throws -> SQLiteRegistry {
    guard FileManager.default.fileExists(atPath: path) else {
        printError("error: no registry at \(path): run `necro run SPEC` or `necro import SPEC` first, or pass --registry")
        throw ExitStatus.failure
    }
    do {
        return try SQLiteRegistry(path: path)
    } catch let error as RegistryError {
        printError("error: \(error.message)")
        throw ExitStatus.failure
    }
}

/// `necro status`: where every taskset stands.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show the whole picture: the dispatcher running (pid, since, address), its pools, queue and what waits on a disabled pool; tasksets with counts per state; running runners; the last failures.")

    @OptionGroup var options: RegistryOptions

    @Flag(help: "Print the status as JSON.")
    var json = false

    struct Report: Encodable {
        struct TaskSet: Encodable {
            var name: String
            var version: Int
            var counts: [String: Int]
            /// What its agents reported they cost (`agent_usage` events), all tasks together.
            var agent_cost_usd: Double
            var agent_tokens: [String: Int]
        }

        /// A task whose agents reported a cost or tokens.
        struct AgentTask: Encodable {
            var spec: String
            var task_id: String
            var state: String
            var cost_usd: Double
            var tokens: [String: Int]
            var turns: Int
        }

        struct Runner: Encodable {
            var runner_id: String
            var spec: String
            var task_id: String
            var pool: String
            var pid: Int32?
            /// The pool's type, and for a container its id.
            var pool_type: String
            var container_id: String?
            var elapsed_seconds: Int
            var last_heartbeat: String?
            var slot_id: String?
            var branch: String?
        }

        struct Failure: Encodable {
            var spec: String
            var task_id: String
            var state: String
            var reason: String
        }

        /// The dispatcher running on the registry, as it last said (every second); nil if none runs.
        var dispatcher: DispatcherStatus?
        /// Pools disabled with `necro pool disable`, as the registry keeps them.
        var disabled_pools: [String]
        var tasksets: [TaskSet]
        var running: [Runner]
        var failures: [Failure]
        /// Tasks by what their agents cost, the costliest first.
        var agent_tasks: [AgentTask]
        /// Slots that could not be prepared, over the registry's whole history.
        var slot_allocation_failures: Int
    }

    func run() async throws {
        let registry = try openExisting(options.registry)
        let now = Date().timeIntervalSince1970
        var report = Report(
            dispatcher: DispatcherStatus.read(registry: options.registry),
            disabled_pools: try registry.poolSettings().filter { !$0.value }.map(\.key).sorted(), tasksets: [], running: [], failures: [],
            agent_tasks: [], slot_allocation_failures: try registry.count(of: .slotAllocationFailed))
        var slots: [TaskKey: TaskSlot] = [:]
        for set in try registry.taskSets() {
            let tasks = try registry.tasks(spec: set.name).filter { !$0.task.isGroup }
            for task in tasks { slots[task.key] = task.slot }
            var counts: [String: Int] = [:]
            for task in tasks { counts[task.state.rawValue, default: 0] += 1 }
            let usage = try AgentUsageTotals(registry: registry, spec: set.name)
            let total = usage.taskset(set.name)
            report.tasksets.append(
                .init(name: set.name, version: set.version, counts: counts, agent_cost_usd: AgentUsage.rounded(total.costUSD), agent_tokens: total.tokens))
            for task in tasks {
                let own = usage.task(task.key)
                guard !own.isEmpty else { continue }
                report.agent_tasks.append(
                    .init(
                        spec: set.name, task_id: task.task.id.rawValue, state: task.state.rawValue, cost_usd: AgentUsage.rounded(own.costUSD),
                        tokens: own.tokens, turns: own.turns))
            }
            for task in tasks.sorted(by: { $0.updatedAt > $1.updatedAt }) where task.state == .failed || (task.state == .blocked && task.reason != nil) {
                report.failures.append(.init(spec: set.name, task_id: task.task.id.rawValue, state: task.state.rawValue, reason: task.reason ?? ""))
            }
        }
        report.failures = Array(report.failures.prefix(10))
        report.agent_tasks.sort { ($0.cost_usd, $0.tokens.values.reduce(0, +)) > ($1.cost_usd, $1.tokens.values.reduce(0, +)) }
        for runner in try registry.runners(runningOnly: true) {
            report.running.append(
                .init(
                    runner_id: runner.id.rawValue, spec: runner.task.spec, task_id: runner.task.id.rawValue, pool: runner.pool,
                    pid: runner.pid, pool_type: runner.poolType.name,
                    container_id: runner.poolType == .docker ? runner.handle : nil, elapsed_seconds: Int(now - runner.startedAt.secondsSince1970),
                    last_heartbeat: runner.lastHeartbeat.map(\.iso8601), slot_id: slots[runner.task]?.id, branch: slots[runner.task]?.branch))
        }
        if json {
            print(jsonLine(report))
            return
        }
        if let d = report.dispatcher {
            print("dispatcher: pid \(d.pid), necro \(d.command) since \(d.started_at)\(d.address.map { ", API \($0)" } ?? "")")
            let pools = d.pools.map { p in
                "\(p.name) (\(p.type)) \(p.running)/\(p.max_concurrency) running" + (p.enabled ? "" : ", disabled: necro pool enable \(p.name)")
            }
            print("pools: \(pools.joined(separator: "; "))")
            print("queue: \(d.queue_depth) ready to start, \(d.running) running")
            for w in d.waiting {
                let shown = w.tasks.joined(separator: ", ") + (w.count > w.tasks.count ? ", …" : "")
                print("waiting: \(counted(w.count, "task")) (\(shown)) can only go to disabled \(w.pools.count == 1 ? "pool" : "pools") \(w.pools.joined(separator: ", ")): necro pool enable \(w.pools[0])")
            }
            if let failing = d.records_failing { print("records failing: \(failing)") }
        } else {
            print("dispatcher: none running on \(options.registry) (necro run SPEC, or necro serve)")
            if !report.disabled_pools.isEmpty {
                print("pools disabled: \(report.disabled_pools.joined(separator: ", ")) (necro pool enable NAME)")
            }
        }
        if report.tasksets.isEmpty { print("no tasksets: run `necro run SPEC` or `necro import SPEC`") }
        for set in report.tasksets {
            let counts = TaskState.allCases.compactMap { state in set.counts[state.rawValue].map { "\($0) \(state.rawValue)" } }
            print("\(set.name) v\(set.version): \(counts.joined(separator: ", "))")
            if set.agent_cost_usd > 0 || !set.agent_tokens.isEmpty {
                print("  agents: \(Self.usageText(set.agent_cost_usd, set.agent_tokens))")
            }
        }
        if !report.agent_tasks.isEmpty {
            print("agents' cost by task:")
            for task in report.agent_tasks.prefix(10) {
                print("  \(task.spec)/\(task.task_id)  \(task.state)  \(Self.usageText(task.cost_usd, task.tokens)), \(counted(task.turns, "turn"))")
            }
            if report.agent_tasks.count > 10 { print("  … \(report.agent_tasks.count - 10) more (necro status --json)") }
        }
        if !report.running.isEmpty {
            print("running:")
            for r in report.running {
                let slot = r.slot_id.map { "  \($0) on \(r.branch ?? "?")" } ?? ""
                let process = r.pool_type == PoolType.docker.name
                    ? "container \(r.container_id.map { String($0.prefix(12)) } ?? "-")" : "pid \(r.pid.map(String.init) ?? "-")"
                print("  \(r.spec)/\(r.task_id)  \(r.pool)  \(process)  \(r.elapsed_seconds) s  heartbeat \(r.last_heartbeat ?? "none")\(slot)")
            }
        }
        if !report.failures.isEmpty {
            print("last failures:")
            for f in report.failures { print("  \(f.spec)/\(f.task_id)  \(f.state): \(f.reason)") }
        }
        if report.slot_allocation_failures > 0 { print("slot allocation failures: \(report.slot_allocation_failures)") }
    }

    /// `$0.42, 12,345 tokens (input 10,000, output 2,345)`.
    static func usageText(_ cost: Double, _ tokens: [String: Int]) -> String {
        let total = tokens.values.reduce(0, +)
        let kinds = AgentUsage.tokenKinds.compactMap { kind in tokens[kind].flatMap { $0 > 0 ? "\(kind) \($0)" : nil } }
        return "\(BudgetConfiguration.dollars(cost)), \(total) tokens" + (kinds.isEmpty ? "" : " (\(kinds.joined(separator: ", ")))")
    }
}

/// `necro events`: the event log.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the event log, optionally of one task, optionally following it.")

    @OptionGroup var options: RegistryOptions

    @Option(help: "Only this task's events.")
    var task: String?

    @Option(help: "Only this spec's events.")
    var spec: String?

    @Option(help: "Only events of this type (as in the log: TaskFailed, RunnerTimedOut, checkpoint_commit, …).")
    var type: String?

    @Flag(help: "Keep printing new events as they are recorded.")
    var follow = false

    @Flag(help: "One JSON object per line.")
    var json = false

    func run() async throws {
        let registry = try openExisting(options.registry)
        // Watching from before the first read: nothing recorded after it is missed. Woken by the
        // kernel when the registry's files change, not on a timer.
        let watch = follow ? try RegistryWatch(path: registry.path) : nil
        defer { watch?.stop() }
        var changes = watch?.changes.makeAsyncIterator()
        var after: Int64 = 0
        while true {
            let events = try registry.events(EventQuery(after: after, spec: spec, task: task.map { TaskID($0) }, type: type.map { EventType($0) }, limit: 10_000))
            for event in events { print(json ? event.json.jsonText : Self.text(event)) }
            after = events.last?.id ?? after
            if events.count == 10_000 { continue }
            guard follow else { return }
            fflush(nil)
            guard await changes?.next() != nil else { return }
        }
    }

    static func text(_ e: EventRecord) -> String {
        let payload = e.payload.isEmpty ? "" : " " + jsonLine(e.payload)
        // Who, in which span and phase, when the event says (a runner's own reports do).
        var context: [String] = []
        if e.actor != "dispatcher" { context.append("actor \(e.actor)") }
        if let span = e.spanID { context.append("span \(span)" + (e.parentSpanID.map { " < \($0)" } ?? "")) }
        if let phase = e.phase { context.append("phase \(phase)") }
        let said = context.isEmpty ? "" : "  [" + context.joined(separator: ", ") + "]"
        return "\(e.timestamp.iso8601)  #\(e.id)  \(e.spec)/\(e.taskID?.rawValue ?? "-")  seq \(e.seq)  \(e.type)\(said)\(payload)"
    }
}

/// `necro heartbeat`: a runner says it is alive, to its dispatcher's API.
struct Heartbeat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Renew the calling runner's lease, through the API it was given (RUNNER_ID, NECRO_RUNNER_TOKEN, and NECRO_API_SOCKET or NECRO_API_URL from its environment).")

    @Option(help: "The runner (default: $RUNNER_ID).")
    var runner: String?

    @Option(help: "Renew it in this registry directly, instead of through the API (for use by hand).")
    var registry: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        guard let id = runner ?? environment["RUNNER_ID"] else {
            printError("error: no runner: pass --runner or set RUNNER_ID")
            throw ExitStatus.invalidInput
        }
        if let registry {
            let store = try openExisting(registry)
            guard try store.heartbeat(runner: RunnerID(id)) else {
                printError("error: runner \(id) is not running")
                throw ExitStatus.failure
            }
            return
        }
        guard let call = RunnerCall(environment: environment) else {
            printError("error: no API to call: a runner gets NECRO_RUNNER_TOKEN and NECRO_API_SOCKET or NECRO_API_URL from its dispatcher (or pass --registry)")
            throw ExitStatus.invalidInput
        }
        let path = RunnerCall.path(runner: id, "heartbeat")
        do {
            let (status, body) = try call.post(path)
            guard (200..<300).contains(status) else {
                printError("error: the dispatcher refused the heartbeat of \(id) (\(status)): \(body.trimmingCharacters(in: .whitespacesAndNewlines))")
                throw ExitStatus.failure
            }
        } catch let failure as RunnerCall.Failure {
            printError("error: \(failure)")
            throw ExitStatus.failure
        }
    }
}

/// The dispatcher running on a registry, if any: its pid is kept beside the registry.
enum DispatcherProcess {
    static func pidFile(_ registry: String) -> String { registry + ".dispatcher.pid" }

    static func write(_ registry: String) {
        let pid = getpid()
        let start = ProcessIdentity.startTime(of: pid).map(String.init) ?? ""
        let file = open(pidFile(registry), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, PrivateFiles.fileMode)
        guard file >= 0 else { return }
        let text = Array("\(pid) \(start)\n".utf8)
        _ = Glibc.write(file, text, text.count)
        close(file)
    }

    static func remove(_ registry: String) { try? FileManager.default.removeItem(atPath: pidFile(registry)) }

    /// The pid of the dispatcher running on the registry, if one is.
    static func running(_ registry: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile(registry), encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard let pid = parts.first.flatMap({ Int32($0) }), let start = parts.dropFirst().first.flatMap({ UInt64($0) }),
            ProcessIdentity.isAlive(pid: pid, startTime: start)
        else { return nil }
        return pid
    }

    /// Tells the running dispatcher, if there is one, to read its control requests.
    @discardableResult
    static func notify(_ registry: String) -> Bool {
        guard let pid = running(registry) else { return false }
        return kill(pid, SIGUSR1) == 0
    }
}

/// `necro retry ID`: puts a failed task back.
struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a failed or cancelled task back, with fresh attempts; the tasks it blocked wait on it again.")

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "The spec (needed when the registry holds several).")
    var spec: String?

    @OptionGroup var options: RegistryOptions

    func run() async throws {
        let registry = try openExisting(options.registry)
        let name = try chooseSpec(spec, in: registry)
        let key = TaskKey(spec: name, id: TaskID(task))
        guard let record = try registry.tasks(spec: name).first(where: { $0.task.id == key.id }) else {
            printError("error: no task \(task) in spec \(name)")
            throw ExitStatus.failure
        }
        if let refusal = TaskKey.retryRefusal(key, record.state) {
            printError("error: \(refusal)")
            throw ExitStatus.failure
        }
        if FileManager.default.fileExists(atPath: DispatcherProcess.pidFile(options.registry)) {
            try registry.addControlRequest(.retry, spec: name, target: task)
            if DispatcherProcess.notify(options.registry) {
                print("\(name)/\(task): retry requested from the running dispatcher")
                return
            }
        }
        do {
            guard try registry.retryTask(key) else {
                printError("error: \(name)/\(task) is neither failed nor cancelled")
                throw ExitStatus.failure
            }
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        print("\(name)/\(task): back in the queue; run `necro run` to carry on")
    }
}

/// `necro pool enable|disable NAME`.
struct Pool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enable or disable a pool, also while a dispatcher runs.", subcommands: [Enable.self, Disable.self])

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a pool take tasks again.")
        @Argument var name: String
        @OptionGroup var options: RegistryOptions
        func run() async throws { try Pool.set(name, enabled: true, options.registry) }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop giving a pool new tasks; running ones finish.")
        @Argument var name: String
        @OptionGroup var options: RegistryOptions
        func run() async throws { try Pool.set(name, enabled: false, options.registry) }
    }

    static func set(_ name: String, enabled: Bool, _ path: String) throws {
        let registry = try openExisting(path)
        try registry.addControlRequest(enabled ? .enablePool : .disablePool, spec: nil, target: name)
        let live = DispatcherProcess.notify(path)
        print("pool \(name) \(enabled ? "enabled" : "disabled")\(live ? " (the running dispatcher was told)" : "")")
    }
}
