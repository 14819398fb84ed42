import Foundation
import NecroCore
import NecroDispatcher
import NecroDocker
import NecroRunners

/// The launchers a configuration's pools need, one per pool type: local processes always; Docker
/// when a pool is of type docker, its engine reached and its API version agreed on first.
enum Launchers {
    /// `leftRunning`: the pool types of the runners the last dispatcher left running, which need
    /// their launcher to be sorted out even if no pool of theirs is configured any more.
    static func make(_ configuration: DispatcherConfiguration, registry: String, leftRunning: Set<PoolType> = []) async throws -> [any RunnerLauncher] {
        var launchers: [any RunnerLauncher] = [LocalProcessLauncher()]
        let containerPools = configuration.pools.filter { $0.type == .docker }
        guard !containerPools.isEmpty || leftRunning.contains(.docker) else { return launchers }
        let environment = ProcessInfo.processInfo.environment
        for pool in containerPools {
            let missing = (pool.container?.environmentFromHost ?? []).filter { environment[$0] == nil }
            if !missing.isEmpty {
                printError("warning: pool \(pool.name): env_from_host names \(missing.joined(separator: ", ")), not set here: its containers go without")
            }
        }
        do {
            let engine = try await DockerEngine.connect(socketPath: try DockerEngine.socketPath())
            launchers.append(
                DockerLauncher(
                    engine: engine, pools: Dictionary(containerPools.compactMap { pool in pool.container.map { (pool.name, $0) } }) { a, _ in a },
                    registryLabel: Dispatcher<ContinuousClock>.runnerMarker(registry: registry),
                    necroBinary: DockerLauncher.portableExecutable()))
        } catch {
            for launcher in launchers { await launcher.shutdown() }
            let who = containerPools.isEmpty
                ? "the previous dispatcher left Docker containers running" : "pool \(containerPools.map(\.name).joined(separator: ", ")) runs Docker containers"
            printError("error: \(who), but \(error.message) (DOCKER_HOST=unix:///path names another socket)")
            throw ExitStatus.failure
        }
        return launchers
    }

    /// Whether runners of these pools need the API on the runners' socket (a container reaches
    /// the dispatcher through it, whatever its network).
    static func needSocket(_ configuration: DispatcherConfiguration) -> Bool {
        configuration.pools.contains { $0.type == .docker || $0.runsNecroRunner }
    }

    /// This executable's path (what `/proc/self/exe` names), read once.
    static let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]

    /// `necro runner` as this executable runs it: the command of a local pool that names none.
    static let runnerCommand = [executable, "runner"]
}
