import ArgumentParser
import Foundation
import Logging
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroServer
import ServiceLifecycle
import UnixSignals

/// `necro serve`: the dispatcher as a long-running service, fed through its API.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the dispatcher as a service: tasksets come in through the API and run as they arrive.",
        discussion: """
            Resumes every taskset the registry has (adopting the runners a stopped dispatcher left), then \
            runs what is sent to POST /v1/tasksets, until SIGINT or SIGTERM: the first stops starting tasks \
            and waits for running ones (graceful_shutdown_timeout), a second stops them at once. Reads the \
            configuration from --config, else ./necro.yaml.
            """
    )

    @Option(help: "The configuration file.")
    var config: String?

    @Option(help: "A git repository: each task runs in a worktree of it (short for repo_pool.repo).")
    var workspace: String?

    @OptionGroup var options: RegistryOptions

    @OptionGroup var server: ServerOptions

    func run() async throws {
        var configuration = try Run.loadConfiguration([config ?? "necro.yaml"], explicit: config != nil)
        try DispatcherLock.acquireOrExit(options.registry, command: "serve")
        let root = options.folder
        let paths = Run.paths(registry: options.registry, folder: root)
        let registry: SQLiteRegistry
        var tasksets: [(spec: TaskSetSpec, records: [TaskRecord])] = []
        do {
            registry = try SQLiteRegistry(path: options.registry)
            let specs = try registry.taskSetSpecs()
            let workspaces = try Run.openRepoPool(&configuration, workspace: workspace, specs: specs, registryFolder: root)
            let launchers = try await Launchers.make(configuration, registry: Run.absolute(options.registry))
            let recovered = try await Recovery.takeOver(
                specs.map(\.name), in: registry, paths: paths, configuration: configuration, workspaces: workspaces, launchers: launchers)
            for spec in specs { tasksets.append((spec, try registry.tasks(spec: spec.name))) }
            try await serve(
                configuration, registry: registry, paths: paths, root: root, workspaces: workspaces, tasksets: tasksets, recovered: recovered,
                launchers: launchers)
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
    }

    private func serve(
        _ configuration: DispatcherConfiguration, registry: SQLiteRegistry, paths: Dispatcher<ContinuousClock>.Paths, root: String,
        workspaces: (any Workspaces)?, tasksets: [(spec: TaskSetSpec, records: [TaskRecord])], recovered: RecoveredRunners,
        launchers: [any RunnerLauncher]
    ) async throws {
        var configuration = configuration
        Run.applyPoolSettings(&configuration, registry)
        let serving = try ServerSetup.prepare(server, registryFolder: root)
        let dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launchers: launchers, clock: ContinuousClock(), paths: paths,
            options: .init(finishWhenIdle: false, randomSeed: UInt64.random(in: 1...UInt64.max), runnerIDSuffix: Run.startToken()),
            workspaces: workspaces, runnerAPI: serving?.1)
        let served = try await serving.asyncMap { keys, runnerAPI in
            try await ServerSetup.start(
                dispatcher, registry: registry, keys: keys, runnerAPI: runnerAPI, options: server, runnersSocket: Launchers.needSocket(configuration))
        }
        defer { served?.stop() }
        if let served, served.isPublic {
            printError("necro serve: listening on \(served.address.url)")
            printError("dashboard: \(served.dashboardURL)")
        }
        let services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: DispatcherService(dispatcher, tasksets: tasksets, recovered: recovered))
        ]
        var logger = Logger(label: "necro.serve")
        logger.logLevel = .warning
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // The service group turns the first signal into a graceful shutdown; a second stops the
        // runners at once.
        let escalation = Task {
            var count = 0
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                count += 1
                if count >= 2 { dispatcher.shutdownNow() }
            }
        }
        defer { escalation.cancel() }
        let control = Run.followControlRequests(registry, dispatcher, defaultSpec: tasksets.count == 1 ? tasksets[0].spec.name : nil)
        defer { control.cancel() }
        DispatcherProcess.write(options.registry)
        defer { DispatcherProcess.remove(options.registry) }
        let statusFile = DispatcherStatus.keep(dispatcher, registry: options.registry, command: "serve", address: served?.shownAddress)
        defer { statusFile.stop() }
        try await group.run()
        for launcher in launchers { await launcher.shutdown() }
        Recovery.removeUnusedStatusTables(paths, registry: registry)
    }
}
