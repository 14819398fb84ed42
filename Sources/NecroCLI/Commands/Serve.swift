import ArgumentParser
import Foundation
import Logging
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroServer
import NecroWorkspaces
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
        let host = try await DispatcherHost.open(command: "serve", configuration: configuration, options: options)
        let registry = host.registry
        var tasksets: [(spec: TaskSetSpec, records: [TaskRecord])] = []
        let recovered: RecoveredRunners
        let workspaces: RepoPool?
        do {
            let specs = try registry.taskSetSpecs()
            workspaces = try Run.openRepoPool(&configuration, workspace: workspace, specs: specs, registryFolder: options.folder)
            recovered = try await host.takeOver(specs.map(\.name), workspaces: workspaces)
            for spec in specs { tasksets.append((spec, try registry.tasks(spec: spec.name))) }
        } catch let error as RegistryError {
            await host.close(complete: false)
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        let started = try await host.start(
            configuration,
            options: .init(finishWhenIdle: false, randomSeed: UInt64.random(in: 1...UInt64.max), runnerIDSuffix: Run.startToken()),
            workspaces: workspaces, server: server)
        if let served = started.served, served.isPublic {
            printError("necro serve: listening on \(served.address.url)")
            printError("dashboard: \(served.dashboardURL)")
        }
        // The service group turns the first signal into a graceful shutdown; a second stops the
        // runners at once.
        let escalation = Task {
            var count = 0
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                count += 1
                if count >= 2 { started.dispatcher.shutdownNow() }
            }
        }
        defer { escalation.cancel() }
        do {
            _ = try await host.run(
                started, tasksets: tasksets, recovered: recovered, defaultSpec: tasksets.count == 1 ? tasksets[0].spec.name : nil,
                gracefulShutdownSignals: [.sigterm, .sigint])
        } catch let error as RegistryError {
            await host.close(complete: false)
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
        await host.close(complete: !started.dispatcher.hasUnreplayedRecords)
    }
}
