import ArgumentParser
import Foundation
import NecroCore
import NecroRegistry

/// `necro bench runner`: what `necro runner` costs, and what runners' reports cost the dispatcher.
struct BenchRunner: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Time necro run with every runner wrapped (necro runner -- /bin/true) against the same unwrapped, and under a load of runners' events.",
        discussion: """
            Each measure is a whole `necro run` of a generated spec, as a user runs it (runners' API on \
            the private socket), timed from outside, the two variants in the same run:
            1. A chain of --chain tasks, then a layered DAG of --tasks tasks at --concurrency: /bin/true \
            as the pool's command, against `necro runner -- /bin/true` (one step, no gate; its \
            checkpoint and events included). The wrapper's cost per task, and its peak resident memory \
            (as each runner reports it in runner_exit).
            2. --reporters tasks whose runners each post --events events through the API, one call \
            each, while --noop no-op tasks are dispatched beside them (half of --concurrency each): \
            events per second recorded, and the no-op tasks' dispatch rate beside the same tasks \
            dispatched alone.
            """)

    @OptionGroup var shape: BenchShape

    var tasks: Int { shape.tasks }
    var width: Int { shape.width }
    var concurrency: Int { shape.concurrency }
    var chain: Int { shape.chain }

    @Option(help: "Tasks whose runners report events.")
    var reporters = 1_000

    @Option(help: "Events each reporting runner posts.")
    var events = 100

    @Option(help: "No-op tasks dispatched beside the reporting runners.")
    var noop = 2_000

    func run() throws {
        let necro = Launchers.executable
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB")
        let folder = NSTemporaryDirectory() + "necro-bench-runner-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }

        for (name, spec, count) in [("chain", Self.chainYAML(chain), chain), ("DAG", Self.dagYAML(tasks: tasks, width: width), tasks)] {
            let plain = try Self.timedRun(necro, in: "\(folder)/\(name)-plain", spec: spec, command: ["/bin/true"], concurrency: concurrency)
            let wrapped = try Self.timedRun(necro, in: "\(folder)/\(name)-wrapped", spec: spec, command: [necro, "runner", "--", "/bin/true"], concurrency: concurrency)
            let rss = try Self.runnerPeakMemoryKB(registry: "\(folder)/\(name)-wrapped/.necro/registry.sqlite")
            print(
                String(
                    format: "%@ of %d: unwrapped %.2f s (%.0f tasks/s), wrapped %.2f s (%.0f tasks/s): the wrapper adds %.1f ms per task (wall time over the run%@)",
                    name, count, plain, Double(count) / plain, wrapped, Double(count) / wrapped, (wrapped - plain) / Double(count) * 1000,
                    name == "chain" ? ", one task at a time" : ", \(concurrency) at a time on \(ProcessInfo.processInfo.activeProcessorCount) cores"))
            print(String(format: "  necro runner's peak resident memory: median %.1f MB, max %.1f MB (%d runners)", rss.median / 1024, rss.max / 1024, rss.count))
        }

        let half = max(1, concurrency / 2)
        let idleFolder = "\(folder)/idle"
        _ = try Self.timedRun(
            necro, in: idleFolder, spec: Self.independent(noop, prefix: "n", skill: "noop"),
            pools: [("noop", ["/bin/true"], half)], concurrency: concurrency)
        let loadedFolder = "\(folder)/loaded"
        _ = try Self.timedRun(
            necro, in: loadedFolder,
            spec: Self.independent(reporters, prefix: "r", skill: "report") + Self.independent(noop, prefix: "n", skill: "noop", header: false),
            pools: [("report", [necro, "bench", "report-events", "--count", String(events)], half), ("noop", ["/bin/true"], half)],
            concurrency: concurrency)
        let idle = try Self.span(of: "n", registry: "\(idleFolder)/.necro/registry.sqlite")
        let loaded = try Self.span(of: "n", registry: "\(loadedFolder)/.necro/registry.sqlite")
        let reporting = try Self.span(of: "r", registry: "\(loadedFolder)/.necro/registry.sqlite")
        let recorded = try SQLiteRegistry(path: "\(loadedFolder)/.necro/registry.sqlite").events(EventQuery(spec: "bench", type: .phaseEnter)).count
        print(
            String(
                format: "%d runners reporting %d events each, one API call per event, %d at a time: %d events recorded in %.2f s, %.0f events/s",
                reporters, events, half, recorded, reporting, Double(recorded) / reporting))
        print(
            String(
                format: "  %d no-op tasks dispatched beside them, %d at a time: %.0f tasks/s; the same tasks alone: %.0f tasks/s (under the load: %.0f%% of that)",
                noop, half, Double(noop) / loaded, Double(noop) / idle, 100 * idle / loaded))
    }

    /// The time from the first assignment to the last completion of the tasks whose ids start
    /// with `prefix`, as recorded.
    static func span(of prefix: String, registry path: String) throws -> Double {
        let registry = try SQLiteRegistry(path: path)
        let assigned = try registry.events(EventQuery(spec: "bench", type: .taskAssigned)).filter { $0.taskID?.rawValue.hasPrefix(prefix) == true }
        let completed = try registry.events(EventQuery(spec: "bench", type: .taskCompleted)).filter { $0.taskID?.rawValue.hasPrefix(prefix) == true }
        guard let first = assigned.map(\.timestamp).min(), let last = completed.map(\.timestamp).max() else { return .nan }
        return last.secondsSince1970 - first.secondsSince1970
    }

    static func chainYAML(_ length: Int) -> String {
        "spec_name: bench\ntasks:\n" + (0..<length).map { "  - {id: c\($0), title: c\($0)\($0 == 0 ? "" : ", dependencies: [c\($0 - 1)]")}\n" }.joined()
    }

    static func dagYAML(tasks: Int, width: Int) -> String {
        let dag = BenchRun.layeredDAG(tasks: tasks, width: width)
        return "spec_name: bench\ntasks:\n"
            + dag.tasks.map { task in
                let dependencies = task.dependencies.isEmpty ? "" : ", dependencies: [\(task.dependencies.map(\.rawValue).joined(separator: ", "))]"
                return "  - {id: \(task.id), title: \(task.id)\(dependencies)}\n"
            }.joined()
    }

    /// Independent tasks `<prefix>0`…, of `skill`.
    static func independent(_ count: Int, prefix: String, skill: String, header: Bool = true) -> String {
        (header ? "spec_name: bench\ntasks:\n" : "")
            + (0..<count).map { "  - {id: \(prefix)\($0), title: \(prefix)\($0), required_skill: \(skill)}\n" }.joined()
    }

    /// A whole `necro run` of `spec` with `command` as the local pool's: its wall time.
    static func timedRun(_ necro: String, in folder: String, spec: String, command: [String], concurrency: Int) throws -> Double {
        try timedRun(necro, in: folder, spec: spec, pools: [("local", command, concurrency)], concurrency: concurrency)
    }

    /// A whole `necro run` of `spec` with these local pools (each takes the skill of its name, and
    /// the first the rest): its wall time.
    static func timedRun(
        _ necro: String, in folder: String, spec: String, pools: [(name: String, command: [String], concurrency: Int)], concurrency: Int
    ) throws -> Double {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(spec.utf8).write(to: URL(fileURLWithPath: folder + "/tasks.yaml"))
        let configuration = """
            dispatcher: {heartbeat_timeout: 600, max_global_concurrency: \(concurrency)}
            agent_pools:
            \(pools.map { "  \($0.name): {max_concurrency: \($0.concurrency), config: {command: [\($0.command.map { "\"\($0)\"" }.joined(separator: ", "))]}}" }.joined(separator: "\n"))
            skill_mapping:
            \(pools.map { "  \($0.name): [\($0.name)]" }.joined(separator: "\n"))
              default: [\(pools[0].name)]
            """
        try Data(configuration.utf8).write(to: URL(fileURLWithPath: folder + "/necro.yaml"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: necro)
        process.arguments = ["run", "tasks.yaml", "--no-server", "--no-workspace"]
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.standardOutput = FileHandle.nullDevice
        let start = ContinuousClock.now
        try process.run()
        process.waitUntilExit()
        let elapsed = (ContinuousClock.now - start).seconds
        guard process.terminationStatus == 0 else { throw ValidationError("necro run in \(folder) exited \(process.terminationStatus)") }
        return elapsed
    }

    /// The peak resident memory each wrapped runner reported (`runner_exit.peak_rss_kb`).
    static func runnerPeakMemoryKB(registry path: String) throws -> (median: Double, max: Double, count: Int) {
        let sizes = try SQLiteRegistry(path: path).events(EventQuery(spec: "bench", type: .runnerExit))
            .compactMap { $0.payload["peak_rss_kb"]?.doubleValue }.sorted()
        guard !sizes.isEmpty else { return (0, 0, 0) }
        return (sizes[sizes.count / 2], sizes.last!, sizes.count)
    }
}

/// `necro bench report-events`: a runner that posts events through its API, one call each (the
/// load of `necro bench runner`).
struct BenchReportEvents: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report-events", abstract: "Post events as a runner (for necro bench runner).", shouldDisplay: false)

    @Option(help: "How many events.")
    var count = 100

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let call = RunnerCall(environment: environment), let runner = environment["RUNNER_ID"] else {
            throw ValidationError("not a runner: no NECRO_RUNNER_TOKEN, API or RUNNER_ID")
        }
        let path = RunnerCall.path(runner: runner, "events")
        for index in 1...max(1, count) {
            let body = #"{"event_type": "phase_enter", "phase": "executing", "runner_seq": \#(index), "payload": {"explanation": "bench"}}"#
            let (status, answer) = try call.post(path, json: Array(body.utf8))
            guard status == 200 else { throw ValidationError("the dispatcher answered \(status): \(answer)") }
        }
    }
}
