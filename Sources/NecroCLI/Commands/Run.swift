import ArgumentParser
import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
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

    @OptionGroup var options: RegistryOptions

    @Flag(help: "Print each event as one JSON line.")
    var json = false

    func run() async throws {
        var configuration = try loadConfiguration()
        let loaded: LoadedSpec
        do {
            loaded = try SpecLoader.load(path: spec)
        } catch {
            report(error)
            throw ExitStatus.invalidInput
        }
        let registry: SQLiteRegistry
        let records: [TaskRecord]
        do {
            registry = try SQLiteRegistry(path: options.registry)
            try registry.importTaskSet(loaded.spec, source: loaded.path)
            try Recovery.stopOrphans(of: loaded.spec.name, in: registry)
            records = try registry.tasks(spec: loaded.spec.name)
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        Self.applyPoolSettings(&configuration, registry)
        let base = (options.registry as NSString).deletingLastPathComponent
        let root = base.isEmpty ? "." : base
        let launcher = LocalProcessLauncher()
        let dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launcher: launcher, clock: ContinuousClock(),
            paths: .init(logs: "\(root)/logs", work: absolute("\(root)/work"), registry: absolute(options.registry)))
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
        let display = RunDisplay(mode: json ? .json : (isatty(1) == 1 ? .terminal : .plain), spec: loaded.spec)
        let watcher = Task { await display.follow(dispatcher.updates) }
        let outcome = try await dispatcher.run([(loaded.spec, records)])
        await watcher.value
        launcher.shutdown()
        display.summary(outcome, registry: registry)
        if outcome.interrupted { throw ExitStatus.interrupted }
        if !outcome.succeeded { throw ExitStatus.failure }
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
    /// Runners recorded as running: a process still alive (same pid and start time) is stopped,
    /// SIGTERM then SIGKILL to its group; every such runner is marked ended. The engine then
    /// requeues their tasks.
    static func stopOrphans(of spec: String, in registry: SQLiteRegistry) throws {
        for var runner in try registry.runners(runningOnly: true) where runner.task.spec == spec {
            if let pid = runner.pid, let start = runner.processStartTime, ProcessIdentity.isAlive(pid: pid, startTime: start) {
                _ = kill(-pid, SIGTERM)
                var waited = 0
                while ProcessIdentity.isAlive(pid: pid, startTime: start), waited < 50 {
                    usleep(100_000)  // up to 5 s for it to end; a recovery step, once, at start-up
                    waited += 1
                }
                if ProcessIdentity.isAlive(pid: pid, startTime: start) { _ = kill(-pid, SIGKILL) }
            }
            runner.state = .exited
            runner.exit = "orphaned by a dispatcher that stopped; stopped on recovery"
            runner.endedAt = Timestamp(secondsSince1970: Date().timeIntervalSince1970)
            try registry.saveRunner(runner)
        }
    }
}
