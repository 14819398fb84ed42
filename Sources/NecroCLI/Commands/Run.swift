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
            stops them at once. Without --config, necro.yaml beside the spec is read, then ./necro.yaml. \
            While it runs, it serves the API and the dashboard (--listen, --no-server) and prints the \
            dashboard's address.
            """
    )

    @Argument(help: "The spec file.")
    var spec: String

    @OptionGroup var order: SpecOrderOption

    @OptionGroup var importing: SpecImportOptions

    @Option(help: "The configuration file.")
    var config: String?

    @Option(
        help: "A git repository: each task runs in a worktree of it, on a branch of its own (short for repo_pool.repo). Default: the repository the spec is in, if any."
    )
    var workspace: String?

    @Flag(help: "Run each task in a plain folder of its own, even when the spec is inside a git repository.")
    var noWorkspace = false

    @OptionGroup var options: RegistryOptions

    @OptionGroup var server: ServerOptions

    @Flag(help: "Print each event as one JSON line.")
    var json = false

    @Flag(help: "Run the optional tasks (- [ ]*) too, also those a previous run skipped; by default they are skipped.")
    var withOptional = false

    @Flag(help: "Tick the tasks of a tasks.md as they go: [-] running, [x] done; nothing else of the file changes.")
    var updateSpec = false

    func run() async throws {
        let besideSpec = ((spec as NSString).deletingLastPathComponent as NSString).appendingPathComponent("necro.yaml")
        var configuration = try Self.loadConfiguration(config.map { [$0] } ?? [besideSpec, "necro.yaml"], explicit: config != nil)
        var loaded = try importing.named(try loadSpecOrExit(spec, order: order.mode))
        let origin = SpecImportOptions.origin(of: spec)
        loaded.validated.spec.runOptional = withOptional || configuration.runOptionalTasks
        if importing.dryRun {
            do { return try SpecImportOptions.preview(loaded.spec, registry: options.registry) } catch let error as RegistryError {
                printError("error: \(error.message)")
                throw ExitStatus.failure
            }
        }
        try DispatcherLock.acquireOrExit(options.registry, command: "run")
        let root = options.folder
        // A spec inside a git repository works in that repository, unless told otherwise.
        var workspace = self.workspace
        if workspace == nil, configuration.repoPool == nil, !noWorkspace, let top = RepoPool.repository(containing: spec) {
            workspace = top
            printError("workspace: \(top), the spec's repository (--no-workspace: plain folders)")
        }
        let workspaces = try Self.openRepoPool(
            &configuration, workspace: noWorkspace ? nil : workspace, specs: [loaded.spec], registryFolder: root,
            specFiles: [origin])
        let host = try await DispatcherHost.open(command: "run", configuration: configuration, options: options)
        let registry = host.registry
        let records: [TaskRecord]
        let recovered: RecoveredRunners
        do {
            try registry.importTaskSet(loaded.spec, source: loaded.path, origin: origin)
            recovered = try await host.takeOver([loaded.spec.name], workspaces: workspaces)
            records = try registry.tasks(spec: loaded.spec.name)
        } catch let error as RegistryError {
            await host.close(complete: false)
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        let started = try await host.start(
            configuration, options: .init(randomSeed: UInt64.random(in: 1...UInt64.max), runnerIDSuffix: Self.startToken()),
            workspaces: workspaces, server: server)
        let dispatcher = started.dispatcher
        if let served = started.served, served.isPublic { printError("dashboard: \(served.dashboardURL)") }
        let display = RunDisplay(mode: json ? .json : (isatty(1) == 1 ? .terminal : .plain), spec: loaded.spec, records: records)
        let grace = configuration.gracefulShutdownTimeout
        let signals = Task {
            var count = 0
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                count += 1
                if count == 1 {
                    display.say(Self.stoppingNotice(running: dispatcher.snapshot.running, grace: grace))
                    dispatcher.shutdown()
                } else {
                    display.say("stopping now: runners get SIGTERM, then SIGKILL after 1 s")
                    dispatcher.shutdownNow()
                }
            }
        }
        defer { signals.cancel() }
        let updates = dispatcher.updates()
        let watcher = Task { await display.follow(updates) }
        let writeBack = updateSpec && loaded.format == .kiroMarkdown ? SpecWriteBack(path: spec, spec: loaded.spec.name) : nil
        let ticking = writeBack.map { writeBack in
            let updates = dispatcher.updates()
            return Task { await writeBack.follow(updates) }
        }
        let outcome = try await host.run(started, tasksets: [(loaded.spec, records)], recovered: recovered, defaultSpec: loaded.spec.name)
        await watcher.value
        await ticking?.value
        // Records not in the registry yet: the status tables say how their runners ended.
        let incomplete = outcome.unrecorded != nil || dispatcher.hasUnreplayedRecords
        await host.close(complete: !incomplete)
        let paths = host.paths
        display.summary(outcome, registry: registry, fromRegistry: incomplete)
        if let failure = outcome.unrecorded {
            printError(
                "error: gave up: no record could be written for \(Int(configuration.recordFailureTimeout.seconds)) s, and nothing runs: \(failure). Nothing more was started; the summary above is what the registry holds. Free space (or move the journal: dispatcher.journal_path) and run necro run again: how the runners that finished meanwhile ended is kept beside the registry, and nothing done runs again."
            )
            throw ExitStatus.failure
        } else if dispatcher.hasUnreplayedRecords {
            printError(
                "warning: the registry \(paths.registry) did not take the last records; they are kept in \(Dispatcher<ContinuousClock>.journalPath(registry: paths.registry, configuration: configuration)) and go in at the next start (necro run or serve); the summary above is what the registry holds now"
            )
        }
        if let workspaces {
            display.branches(workspaces.branches(spec: loaded.spec.name, tasks: loaded.spec.tasks.filter { !$0.isGroup }.map(\.id)), base: workspaces.baseRef)
            display.result(Self.assembleResult(loaded, workspaces, registry: registry, template: configuration.repoPool?.branchTemplate ?? .standard))
        }
        if outcome.interrupted { throw ExitStatus.interrupted }
        if !outcome.succeeded { throw ExitStatus.failure }
    }

    /// The branch that holds the run's result: `necro/<spec>/result`, every done task's branch
    /// merged in, dependencies first.
    static func assembleResult(
        _ loaded: LoadedSpec, _ workspaces: RepoPool, registry: SQLiteRegistry, template: BranchTemplate
    ) -> (branch: String, assembly: RepoPool.Assembly, total: Int) {
        let graph = loaded.validated.graph
        let done = Set(((try? registry.tasks(spec: loaded.spec.name)) ?? []).filter { $0.state == .done }.map(\.task.id))
        let order = graph.topologicalOrder() ?? Array(0..<graph.count)
        let tasks = order.filter { !graph.isGroup[$0] && done.contains(graph.ids[$0]) }.map { index in
            DependencyBranch(task: graph.ids[index], branch: template.render(spec: loaded.spec.name, task: graph.ids[index]))
        }
        let branch = resultBranch(loaded.spec, template: template)
        return (branch, workspaces.assemble(branch, from: tasks), tasks.count)
    }

    /// The branch template's name for a task called `result` (`necro/<spec>/result`): beside the
    /// tasks' branches, since a branch `necro/<spec>` cannot be (git keeps branches as files and
    /// folders); `result-2`… if a task is called `result`.
    static func resultBranch(_ spec: TaskSetSpec, template: BranchTemplate) -> String {
        let ids = Set(spec.tasks.map(\.id.rawValue))
        var name = "result"
        var n = 1
        while ids.contains(name) {
            n += 1
            name = "result-\(n)"
        }
        return template.render(spec: spec.name, task: TaskID(name))
    }

    /// `necro pool` and `necro retry` leave requests in the registry and send SIGUSR1: carried out
    /// by the dispatcher. Requests left for a dispatcher that is gone are dropped first (settled by
    /// the registry's state, which this dispatcher starts from).
    /// `signals`: SIGUSR1, already trapped (before the pid file says where to send it: its
    /// default action would end the process).
    static func followControlRequests(
        _ registry: SQLiteRegistry, _ dispatcher: Dispatcher<ContinuousClock>, defaultSpec: String?, signals: UnixSignalsSequence
    ) -> Task<Void, Never> {
        _ = try? registry.takeControlRequests()
        return Task {
            for await _ in signals {
                for request in (try? registry.takeControlRequests()) ?? [] {
                    switch request.kind {
                    case .enablePool: dispatcher.send(.setPoolEnabled(request.target, true))
                    case .disablePool: dispatcher.send(.setPoolEnabled(request.target, false))
                    case .retry:
                        guard let spec = request.spec ?? defaultSpec else { continue }
                        let key = TaskKey(spec: spec, id: TaskID(request.target))
                        if dispatcher.snapshot.tasks[spec] != nil {
                            dispatcher.send(.retry(key))
                        } else if (try? registry.retryTask(key)) == true,
                            let set = try? registry.taskSetSpecs().first(where: { $0.name == spec }), let records = try? registry.tasks(spec: spec)
                        {
                            // A taskset this dispatcher does not run: put back, then taken up.
                            dispatcher.load(set, records: records)
                        }
                    case .load:
                        guard let spec = try? registry.taskSetSpecs().first(where: { $0.name == request.target }),
                            let records = try? registry.tasks(spec: spec.name)
                        else { continue }
                        dispatcher.load(spec, records: records)
                    }
                }
            }
        }
    }

    /// What the first SIGINT or SIGTERM does, said as it happens.
    static func stoppingNotice(running: Int, grace: Duration) -> String {
        guard running > 0 else { return "stopping: nothing new starts" }
        let seconds = Int(grace.components.seconds)
        return "stopping: nothing new starts; waiting up to \(seconds) s for \(counted(running, "runner")) to finish; a second Ctrl-C (or SIGTERM) stops them now"
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

    static func absolute(_ path: String) -> String {
        // Standardized: no `/./` nor `a/../` in what is printed and recorded.
        URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/")).standardizedFileURL.path
    }

    /// Where runners of the registry at `registry` (in `folder`) log, work and leave their statuses.
    static func paths(registry: String, folder: String) -> Dispatcher<ContinuousClock>.Paths {
        Dispatcher<ContinuousClock>.Paths(
            logs: absolute("\(folder)/logs"), work: absolute("\(folder)/work"), registry: absolute(registry),
            status: absolute("\(folder)/status"))
    }

    /// The repo pool, if `repo_pool:` or --workspace asks for one; every problem with it is exit 2,
    /// found before the registry is touched.
    static func openRepoPool(
        _ configuration: inout DispatcherConfiguration, workspace: String?, specs: [TaskSetSpec], registryFolder: String,
        specFiles: Set<String> = []
    ) throws -> RepoPool? {
        if let workspace {
            var repoPool = configuration.repoPool ?? RepoPoolConfiguration(repository: workspace)
            repoPool.repository = absolute(workspace)
            configuration.repoPool = repoPool
        }
        guard var repoPool = configuration.repoPool, let slotCount = configuration.slotCount else { return nil }
        let problems = specs.flatMap { repoPool.branchProblems(in: $0) }
        guard problems.isEmpty else {
            printError("error: repo_pool.branch_template \(repoPool.branchTemplate):")
            for problem in problems.prefix(20) { printError("  \(problem)") }
            throw ExitStatus.invalidInput
        }
        do {
            let pool = try RepoPool(
                repoPool, slotCount: slotCount, defaultSlotsDirectory: absolute("\(registryFolder)/slots"), specs: specFiles)
            repoPool.slotsDirectory = pool.slotsDirectory  // the engine names slot paths from it
            configuration.repoPool = repoPool
            return pool
        } catch {
            printError("error: \(error.message)")
            throw ExitStatus.invalidInput
        }
    }

    /// The first of `candidates` that exists (the only one, if `explicit`), read; exit 2 if none
    /// does or it is not valid.
    static func loadConfiguration(_ candidates: [String], explicit: Bool) throws -> DispatcherConfiguration {
        guard let path = candidates.first(where: { explicit || FileManager.default.fileExists(atPath: $0) }) else {
            printError("error: no configuration: write necro.yaml beside the spec or here (see docs/reference.md, Configuration), or pass --config")
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

/// What `necro run` and `necro serve` do with the runners a dispatcher that stopped left behind.
enum Recovery {
    /// Before a dispatcher starts on `specs`, once what the last one left in the journal is in the
    /// registry (`DispatcherHost.open`): its runners are sorted out (adopted or taken at how they
    /// ended), and, with a repo pool, the slots it left busy are cleaned.
    static func takeOver(
        _ specs: [String], in registry: SQLiteRegistry, workspaces: RepoPool?, launchers: [any RunnerLauncher]
    ) async throws -> RecoveredRunners {
        let recovered = try await Dispatcher<ContinuousClock>.sortOut(specs, in: registry, launchers: launchers)
        if !recovered.adopted.isEmpty {
            printError("recovery: adopting \(counted(recovered.adopted.count, "runner")) still running from the previous dispatcher")
        }
        if let workspaces {
            try recoverSlots(workspaces, registry: registry, recovered: recovered)
            // Branches and attempt refs follow the tasks an import renumbered.
            try registry.markApplied(workspaces.applyRenames(try registry.pendingTaskRenames()))
        }
        return recovered
    }

    /// Once a dispatcher is done: the status tables of earlier ones whose runners are all
    /// accounted for go.
    static func removeUnusedStatusTables(_ paths: Dispatcher<ContinuousClock>.Paths, registry: SQLiteRegistry) {
        guard let folder = paths.status else { return }
        let referenced = Set(((try? registry.runners(runningOnly: true)) ?? []).compactMap(\.status?.path))
        RunnerStatusTable.removeUnused(in: folder, referenced: referenced)
    }

    /// Cleans the slots a dead dispatcher left busy: what a finished task's agent left is committed
    /// on its branch, anything else saved under its attempt's ref. Adopted runners' slots are left
    /// to them.
    static func recoverSlots(_ pool: RepoPool, registry: SQLiteRegistry, recovered: RecoveredRunners) throws {
        var states: [String: [TaskID: TaskState]] = [:]
        let succeeded = Set(recovered.ended.filter { $0.exit?.succeeded == true }.map(\.runner.task))
        let slots = pool.recover(keeping: Set(recovered.adopted.map(\.id))) { key in
            if succeeded.contains(key) { return true }
            if states[key.spec] == nil {
                states[key.spec] = Dictionary(((try? registry.tasks(spec: key.spec)) ?? []).map { ($0.task.id, $0.state) }) { a, _ in a }
            }
            return states[key.spec]?[key.id] == .done
        }
        var transitions: [Transition] = []
        for slot in slots {
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
}
