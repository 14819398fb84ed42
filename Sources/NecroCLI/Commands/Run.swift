import ArgumentParser
import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroWorkspaces
import UnixSignals

/// `necro run SPEC`: runs every task of a spec to the end.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every task of a spec to the end, in dependency order, in parallel.",
        discussion: """
            Imports the spec (or resumes it, if the registry has it), dispatches its tasks to the configured \
            pools, and exits 0 when every required task is done, 1 if some failed or can no longer run, 2 if \
            the spec or the configuration is invalid, 130 when stopped by a signal. The first SIGINT or \
            SIGTERM stops starting tasks and waits for running ones (graceful_shutdown_timeout); a second \
            stops them at once. Without --config, necro.yaml beside the spec is read, then ./necro.yaml.
            """
    )

    @Argument(help: "The spec file.")
    var spec: String

    @Option(help: "The configuration file.")
    var config: String?

    @Option(help: "A git repository: each task runs in a worktree of it, on a branch of its own (short for repo_pool.repo).")
    var workspace: String?

    @OptionGroup var options: RegistryOptions

    @Flag(help: "Print each event as one JSON line.")
    var json = false

    func run() async throws {
        var configuration = try loadConfiguration()
        let loaded = try loadSpecOrExit(spec)
        let base = (options.registry as NSString).deletingLastPathComponent
        let root = base.isEmpty ? "." : base
        let paths = Dispatcher<ContinuousClock>.Paths(
            logs: absolute("\(root)/logs"), work: absolute("\(root)/work"), registry: absolute(options.registry),
            status: absolute("\(root)/status"))
        let workspaces = try openRepoPool(&configuration, spec: loaded.spec, registryFolder: root)
        let registry: SQLiteRegistry
        let records: [TaskRecord]
        let adopted: [RunnerRecord]
        do {
            registry = try SQLiteRegistry(path: options.registry)
            try registry.importTaskSet(loaded.spec, source: loaded.path)
            try Dispatcher<ContinuousClock>.replayFallbackJournal(registryPath: paths.registry, into: registry)
            adopted = try Recovery.adoptOrStopOrphans(
                of: loaded.spec.name, in: registry, runnersSee: paths.registry, letFinishFor: configuration.heartbeatTimeout)
            try Recovery.collectStatuses(of: loaded.spec.name, in: registry, paths: paths, except: adopted)
            if let workspaces { try Recovery.recoverSlots(workspaces, registry: registry, except: adopted) }
            records = try registry.tasks(spec: loaded.spec.name)
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        Self.applyPoolSettings(&configuration, registry)
        let launcher = LocalProcessLauncher()
        let dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launcher: launcher, clock: ContinuousClock(),
            paths: paths,
            options: .init(randomSeed: UInt64.random(in: 1...UInt64.max), runnerIDSuffix: Self.startToken()),
            workspaces: workspaces)
        let signals = Task {
            var count = 0
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                count += 1
                if count == 1 { dispatcher.shutdown() } else { dispatcher.shutdownNow() }
            }
        }
        defer { signals.cancel() }
        // `necro pool` and `necro retry` leave requests in the registry and send SIGUSR1.
        let control = Task {
            for await _ in await UnixSignalsSequence(trapping: .sigusr1) {
                for request in (try? registry.takeControlRequests()) ?? [] {
                    switch request.kind {
                    case .enablePool: dispatcher.send(.setPoolEnabled(request.target, true))
                    case .disablePool: dispatcher.send(.setPoolEnabled(request.target, false))
                    case .retry: dispatcher.send(.retry(TaskKey(spec: request.spec ?? loaded.spec.name, id: TaskID(request.target))))
                    }
                }
            }
        }
        defer { control.cancel() }
        _ = try? registry.takeControlRequests()  // requests left for a dispatcher that is gone are settled below
        DispatcherProcess.write(options.registry)
        defer { DispatcherProcess.remove(options.registry) }
        let display = RunDisplay(mode: json ? .json : (isatty(1) == 1 ? .terminal : .plain), spec: loaded.spec, records: records)
        let watcher = Task { await display.follow(dispatcher.updates) }
        let outcome = try await dispatcher.run([(loaded.spec, records)], adopting: adopted)
        await watcher.value
        launcher.shutdown()
        display.summary(outcome, registry: registry)
        if let workspaces { display.branches(workspaces.branches(spec: loaded.spec.name, tasks: loaded.spec.tasks.filter { !$0.isGroup }.map(\.id)), base: workspaces.baseRef) }
        if outcome.interrupted { throw ExitStatus.interrupted }
        if !outcome.succeeded { throw ExitStatus.failure }
    }

    /// Four base-36 characters, new at each start.
    static func startToken() -> String {
        let digits = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        return String((0..<4).map { _ in digits.randomElement()! })
    }

    /// The configuration with the pools enabled or disabled from the command line.
    static func applyPoolSettings(_ configuration: inout DispatcherConfiguration, _ registry: SQLiteRegistry) {
        let settings = (try? registry.poolSettings()) ?? [:]
        for index in configuration.pools.indices {
            if let enabled = settings[configuration.pools[index].name] { configuration.pools[index].limits.enabled = enabled }
        }
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// The repo pool, if `repo_pool:` or --workspace asks for one; every problem with it is exit 2,
    /// found before the registry is touched.
    private func openRepoPool(
        _ configuration: inout DispatcherConfiguration, spec: TaskSetSpec, registryFolder: String
    ) throws -> RepoPool? {
        if let workspace {
            var repoPool = configuration.repoPool ?? RepoPoolConfiguration(repository: workspace)
            repoPool.repository = absolute(workspace)
            configuration.repoPool = repoPool
        }
        guard var repoPool = configuration.repoPool, let slotCount = configuration.slotCount else { return nil }
        let problems = repoPool.branchProblems(in: spec)
        guard problems.isEmpty else {
            printError("error: repo_pool.branch_template \(repoPool.branchTemplate):")
            for problem in problems.prefix(20) { printError("  \(problem)") }
            throw ExitStatus.invalidInput
        }
        do {
            let pool = try RepoPool(repoPool, slotCount: slotCount, defaultSlotsDirectory: absolute("\(registryFolder)/slots"))
            repoPool.slotsDirectory = pool.slotsDirectory  // the engine names slot paths from it
            configuration.repoPool = repoPool
            return pool
        } catch {
            printError("error: \(error.message)")
            throw ExitStatus.invalidInput
        }
    }

    /// --config, or necro.yaml beside the spec, or ./necro.yaml.
    private func loadConfiguration() throws -> DispatcherConfiguration {
        let besideSpec = ((spec as NSString).deletingLastPathComponent as NSString).appendingPathComponent("necro.yaml")
        let candidates = config.map { [$0] } ?? [besideSpec, "necro.yaml"]
        guard let path = candidates.first(where: { config != nil || FileManager.default.fileExists(atPath: $0) }) else {
            printError("error: no configuration: write necro.yaml beside the spec or here (see README), or pass --config")
            throw ExitStatus.invalidInput
        }
        do {
            return try ConfigurationLoader.load(path: path)
        } catch {
            report(error)
            throw ExitStatus.invalidInput
        }
    }
}

/// What `necro run` does with runners a dead dispatcher left behind.
enum Recovery {
    /// Sorts out the runners a dead dispatcher left: those recorded with their pid and start time
    /// and still alive are adopted (returned: the new dispatcher watches them to their end). The
    /// others — found by the `NECRO_REGISTRY` in their environment, because a kill -9 can land
    /// between a spawn and its record — are given up to `patience` to finish, and then stopped
    /// (SIGTERM, then SIGKILL to their process group). Every recorded runner not adopted is marked
    /// ended; `collectStatuses` then takes the results of those that finished.
    static func adoptOrStopOrphans(
        of spec: String, in registry: SQLiteRegistry, runnersSee path: String, letFinishFor patience: Duration
    ) throws -> [RunnerRecord] {
        let recorded = try registry.runners(runningOnly: true).filter { $0.task.spec == spec }
        let adopted = recorded.filter { runner in
            guard let pid = runner.pid, let start = runner.processStartTime else { return false }
            return ProcessIdentity.isAlive(pid: pid, startTime: start)
        }
        let adoptedGroups = Set(adopted.compactMap(\.pid))
        var groups = runnerGroups(registry: path).subtracting(adoptedGroups)
        if !adopted.isEmpty {
            printError("recovery: adopting \(adopted.count) runner(s) still running from the previous dispatcher")
        }
        // Let them finish on their own first: a runner stopped at the instant its work is done, but
        // before it exits, would be run again. Their supervisors record how they end. A once-only
        // step at start-up, so a plain bounded wait.
        if !groups.isEmpty {
            printError("recovery: waiting up to \(Int(patience.seconds)) s for \(groups.count) unrecorded runner(s) left by the previous dispatcher")
        }
        let deadline = ContinuousClock.now + patience
        while groups.contains(where: { kill(-$0, 0) == 0 }), ContinuousClock.now < deadline {
            usleep(20_000)
            // Look again each time: a runner whose spawn was under way when the dispatcher died shows
            // the registry in its environment only once it has exec'd.
            groups.formUnion(runnerGroups(registry: path).subtracting(adoptedGroups))
        }
        let stubborn = groups.filter { kill(-$0, 0) == 0 }
        for group in stubborn { _ = kill(-group, SIGTERM) }
        var waited = 0
        while stubborn.contains(where: { kill(-$0, 0) == 0 }), waited < 50 {
            usleep(100_000)  // up to 5 s for them to end after SIGTERM
            waited += 1
        }
        for group in stubborn where kill(-group, 0) == 0 { _ = kill(-group, SIGKILL) }
        let adoptedIDs = Set(adopted.map(\.id))
        for var runner in recorded where !adoptedIDs.contains(runner.id) {
            runner.state = .exited
            runner.exit = "orphaned by a dispatcher that stopped; stopped on recovery"
            runner.endedAt = Timestamp(secondsSince1970: Date().timeIntervalSince1970)
            try registry.saveRunner(runner)
        }
        return adopted
    }

    /// Tasks left `running` whose runner finished while no dispatcher was there: its supervisor
    /// wrote the exit status. Exit 0 makes the task done — it is not run again; any other status,
    /// or none, leaves it to be requeued. Runs after `stopOrphans`, so no runner is still going.
    static func collectStatuses(
        of spec: String, in registry: SQLiteRegistry, paths: Dispatcher<ContinuousClock>.Paths, except adopted: [RunnerRecord]
    ) throws {
        var finished: [Transition] = []
        var read: [String] = []
        let watched = Set(adopted.map(\.task))
        for record in try registry.tasks(spec: spec) where record.state == .running && !watched.contains(record.key) {
            guard let file = paths.statusFile(for: record.key),
                let text = try? String(contentsOfFile: file, encoding: .utf8), text.hasSuffix("\n")
            else { continue }
            read.append(file)
            guard Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) == 0 else { continue }
            finished.append(
                Transition(
                    spec: spec, task: record.task.id, expected: [.running], to: .done, reason: .some(nil),
                    events: [
                        NewEvent(
                            .recoveryDetected, actor: "recovery_sweep", spanID: "recovery_sweep", phase: "recovery",
                            payload: ["explanation": "its runner finished while no dispatcher was running; its supervisor recorded exit 0"]),
                        NewEvent(.taskCompleted, payload: ["recovered": true]),
                    ]))
        }
        // One transaction for all; the statuses are removed once it is committed.
        if !finished.isEmpty { try registry.apply(finished) }
        for file in read { unlink(file) }
    }

    /// Cleans the slots a dead dispatcher left busy: what a finished task's agent left is committed
    /// on its branch, anything else saved under its attempt's ref. Runs after `collectStatuses`.
    static func recoverSlots(_ pool: RepoPool, registry: SQLiteRegistry, except adopted: [RunnerRecord]) throws {
        var states: [String: [TaskID: TaskState]] = [:]
        let recovered = pool.recover(keeping: Set(adopted.map(\.id))) { key in
            if states[key.spec] == nil {
                states[key.spec] = Dictionary(((try? registry.tasks(spec: key.spec)) ?? []).map { ($0.task.id, $0.state) }) { a, _ in a }
            }
            return states[key.spec]?[key.id] == .done
        }
        var transitions: [Transition] = []
        for slot in recovered {
            printError("recovery: \(slot.slot): \(slot.note)")
            guard let user = slot.user else { continue }
            let events = slot.reports.compactMap { report -> NewEvent? in
                var payload: [String: JSONValue] = ["slot_id": .string(slot.slot), "runner_id": .string(user.runner.rawValue)]
                switch report {
                case .workCommitted(let commit, let message):
                    payload["commit"] = .string(commit)
                    payload["message"] = .string(message)
                    return NewEvent(.taskWorkCommitted, actor: "recovery_sweep", phase: "recovery", payload: payload)
                case .attemptSaved(let ref, let commit):
                    payload["ref"] = .string(ref)
                    payload["commit"] = .string(commit)
                    return NewEvent(.attemptSaved, actor: "recovery_sweep", phase: "recovery", payload: payload)
                case .released:
                    return NewEvent(.slotReleased, actor: "recovery_sweep", phase: "recovery", payload: payload)
                case .prepared, .allocationFailed:
                    return nil
                }
            }
            if !events.isEmpty { transitions.append(Transition(spec: user.task.spec, task: user.task.id, events: events)) }
        }
        if !transitions.isEmpty { try registry.apply(transitions) }
    }

    /// The process groups of the live processes whose environment names this registry.
    static func runnerGroups(registry: String) -> Set<Int32> {
        Set(runnerProcesses(registry: registry).map { getpgid($0) }.filter { $0 > 0 })
    }

    /// Live processes whose environment names this registry: runners and what they started.
    static func runnerProcesses(registry: String) -> [Int32] {
        let marker = Array("NECRO_REGISTRY=\(registry)".utf8)
        let me = getpid()
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { entry -> Int32? in
            guard let pid = Int32(entry), pid != me,
                let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ")
            else { return nil }
            let found = environment.split(separator: 0).contains { Array($0) == marker }
            return found ? pid : nil
        }
    }
}
