import Foundation
import Logging
import NecroCore
import NecroDispatcher
import NecroDocker
import NecroRegistry
import NecroRunners
import NecroWorkspaces
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The composition root of `necro run` and `necro serve`: what a dispatcher is made of — a
/// launcher per pool type, the registry with what the last dispatcher left taken over, the
/// dispatcher, its API — built here, in this order, and run as the services of one
/// `ServiceGroup`: the API, the control requests, the status file and the dispatcher.
final class DispatcherHost: Sendable {
    let command: String
    /// The registry as given (the lock, pid and status files are named after it).
    let registryPath: String
    let paths: Dispatcher<ContinuousClock>.Paths
    let registry: SQLiteRegistry
    let launchers: [any RunnerLauncher]

    private init(
        command: String, registryPath: String, paths: Dispatcher<ContinuousClock>.Paths, registry: SQLiteRegistry,
        launchers: [any RunnerLauncher]
    ) {
        self.command = command
        self.registryPath = registryPath
        self.paths = paths
        self.registry = registry
        self.launchers = launchers
    }

    /// Opens the registry for a dispatcher: the launchers the pools need made (the Docker engine
    /// reached), what the last dispatcher left in the journal replayed, under the ids it was
    /// written for. The caller holds the registry's lock.
    static func open(command: String, configuration: DispatcherConfiguration, options: RegistryOptions) async throws -> DispatcherHost {
        let paths = Run.paths(registry: options.registry, folder: options.folder)
        let registry: SQLiteRegistry
        let leftRunning: Set<PoolType>
        do {
            registry = try SQLiteRegistry(path: options.registry)
            // What a dispatcher that stopped left in its journal goes in first: under the ids it
            // was written for, before an import may renumber tasks.
            try Dispatcher<ContinuousClock>.replayFallbackJournal(registryPath: paths.registry, configuration: configuration, into: registry)
            leftRunning = Set(try registry.runners(runningOnly: true).map(\.poolType))
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        let launchers = try await Launchers.make(configuration, registry: paths.registry, leftRunning: leftRunning)
        return DispatcherHost(command: command, registryPath: options.registry, paths: paths, registry: registry, launchers: launchers)
    }

    /// Sorts out what the last dispatcher left of `specs`: its runners, each by its pool type's
    /// launcher (adopted, or taken at how they ended), and its slots.
    func takeOver(_ specs: [String], workspaces: RepoPool?) async throws -> RecoveredRunners {
        do {
            return try await Recovery.takeOver(specs, in: registry, workspaces: workspaces, launchers: launchers)
        } catch let error as RecoveryError {
            await close(complete: false)
            printError("error: recovery: \(error.message); nothing was started")
            throw ExitStatus.failure
        } catch let error as DockerError {
            await close(complete: false)
            printError("error: recovery: \(error.message); nothing was started")
            throw ExitStatus.failure
        }
    }

    /// A dispatcher ready to run, with its API served.
    struct Started: Sendable {
        let dispatcher: Dispatcher<ContinuousClock>
        let served: ServedAPI?
    }

    /// The dispatcher, with the pools enabled or disabled from the command line, and its API
    /// served beside it (on the runners' socket too when a pool's runners need it).
    func start(
        _ configuration: DispatcherConfiguration, options: DispatchEngine<ContinuousClock.Instant>.Options, workspaces: (any Workspaces)?,
        server: ServerOptions
    ) async throws -> Started {
        var configuration = configuration
        Run.applyPoolSettings(&configuration, registry)
        let serving = try ServerSetup.prepare(server, registryFolder: (paths.registry as NSString).deletingLastPathComponent)
        let dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launchers: launchers, clock: ContinuousClock(), paths: paths, options: options,
            workspaces: workspaces, runnerAPI: serving?.1, runnerCommand: Launchers.runnerCommand)
        let served = try await serving.asyncMap { keys, runnerAPI in
            try await ServerSetup.start(
                dispatcher, registry: registry, keys: keys, runnerAPI: runnerAPI, options: server, runnersSocket: Launchers.needSocket(configuration))
        }
        return Started(dispatcher: dispatcher, served: served)
    }

    /// Runs the dispatcher on `tasksets` until it finishes, with its API, its control requests
    /// and its status file, as the services of one group. With `gracefulShutdownSignals`, the
    /// group takes those signals as a graceful shutdown (`necro serve`); without, the caller
    /// handles them (`necro run`, which says what it does).
    func run(
        _ started: Started, tasksets: [(spec: TaskSetSpec, records: [TaskRecord])], recovered: RecoveredRunners,
        defaultSpec: String?, gracefulShutdownSignals: [UnixSignal] = []
    ) async throws -> RunOutcome {
        let dispatcher = started.dispatcher
        let outcome = Mutex<RunOutcome?>(nil)
        // SIGUSR1 is trapped (the sequence made and registered) before the pid file tells `necro
        // pool`, `retry` and `import` where to send it.
        let usr1 = await UnixSignalsSequence(trapping: .sigusr1)
        let control = Run.followControlRequests(registry, dispatcher, defaultSpec: defaultSpec, signals: usr1)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // Should one of these end early, the dispatcher goes on without it.
        if let served = started.served { services.append(.init(service: SideService.api(served), successTerminationBehavior: .ignore)) }
        services.append(.init(service: SideService.control(control), successTerminationBehavior: .ignore))
        let kept = DispatcherStatus.keep(dispatcher, registry: registryPath, command: command, address: started.served?.shownAddress)
        services.append(.init(service: SideService.statusFile(kept), successTerminationBehavior: .ignore))
        // Its end ends the group; the others stop in the reverse order (the API last).
        services.append(
            .init(
                service: DispatcherService(dispatcher, tasksets: tasksets, recovered: recovered) { result in outcome.withLock { $0 = result } },
                successTerminationBehavior: .gracefullyShutdownGroup))
        var logger = Logger(label: "necro.\(command)")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: services, gracefulShutdownSignals: gracefulShutdownSignals, logger: logger))
        DispatcherProcess.write(registryPath)
        defer { DispatcherProcess.remove(registryPath) }
        try await group.run()
        guard let result = outcome.withLock({ $0 }) else { throw ExitStatus.failure }
        return result
    }

    /// Lets go of the launchers; once every runner's end is in the registry (`complete`), the
    /// status tables no runner needs go.
    func close(complete: Bool) async {
        for launcher in launchers { await launcher.shutdown() }
        if complete { Recovery.removeUnusedStatusTables(paths, registry: registry) }
    }
}

/// What runs beside the dispatcher — the API, the control requests, the status file — as a
/// service: its work runs until `stop`, which the group's graceful shutdown (or cancellation) calls.
struct SideService: Service {
    let work: @Sendable () async -> Void
    let stop: @Sendable () -> Void

    func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler { await work() } onGracefulShutdown: { stop() }
        } onCancel: {
            stop()
        }
    }

    /// The API, on the network, the runners' socket, or both.
    static func api(_ served: ServedAPI) -> SideService {
        SideService(work: { for server in served.servers { await server.value } }, stop: { served.stop() })
    }

    /// `necro pool`, `retry` and `import` leave requests in the registry and send SIGUSR1:
    /// carried out by the dispatcher while it runs (`following`: already taking SIGUSR1).
    static func control(_ following: Task<Void, Never>) -> SideService {
        SideService(work: { await following.value }, stop: { following.cancel() })
    }

    /// `<registry>.dispatcher.json`, kept up to date every second for `necro status`, removed at the end.
    static func statusFile(_ kept: DispatcherStatus.Kept) -> SideService {
        SideService(work: { await kept.writer.value; kept.stop() }, stop: { kept.stop() })
    }
}
