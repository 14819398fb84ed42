import Foundation
import NecroCore
import NecroDispatcher
import NecroRunners

/// What a running dispatcher says of itself for `necro status`: written beside the registry
/// (`<registry>.dispatcher.json`, 0600) when it starts and every second while it runs, removed
/// when it ends. Read only if its process is still the one that wrote it.
struct DispatcherStatus: Codable {
    struct Pool: Codable {
        var name: String
        var type: String
        var max_concurrency: Int
        var running: Int
        var enabled: Bool
    }

    struct Waiting: Codable {
        var pools: [String]
        /// `spec/id`, the first 20.
        var tasks: [String]
        var count: Int
    }

    var pid: Int32
    var process_start_time: UInt64?
    var command: String
    var started_at: String
    /// The API's address (`http://…`, or the runners' unix socket with --no-server).
    var address: String?
    var pools: [Pool]
    var queue_depth: Int
    var running: Int
    var waiting: [Waiting]
    /// Why records cannot be written now, if they cannot.
    var records_failing: String?
    var updated_at: String

    static func path(_ registry: String) -> String { registry + ".dispatcher.json" }

    /// The status of `dispatcher` now.
    init(_ dispatcher: Dispatcher<ContinuousClock>, command: String, startedAt: Date, address: String?) {
        let snapshot = dispatcher.snapshot
        pid = getpid()
        process_start_time = ProcessIdentity.startTime(of: pid)
        self.command = command
        started_at = Timestamp(secondsSince1970: startedAt.timeIntervalSince1970).iso8601
        self.address = address
        pools = snapshot.pools.map { pool in
            Pool(
                name: pool.limits.name, type: dispatcher.configuration.pool(named: pool.limits.name)?.type.name ?? "local-process",
                max_concurrency: pool.limits.maxConcurrency, running: pool.usage.running, enabled: pool.limits.enabled)
        }
        queue_depth = snapshot.queueDepth
        running = snapshot.running
        waiting = snapshot.waitingOnDisabledPools.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { pools, tasks in
            Waiting(pools: pools, tasks: tasks.prefix(20).map { "\($0.spec)/\($0.id)" }, count: tasks.count)
        }
        records_failing = dispatcher.recordFailure
        updated_at = Timestamp(secondsSince1970: Date().timeIntervalSince1970).iso8601
    }

    /// Writes it whole (a reader never sees half of it).
    func write(registry: String) {
        guard let data = try? JSONEncoder().encode(self) else { return }
        let target = Self.path(registry)
        let temporary = target + ".\(getpid()).tmp"
        let file = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, PrivateFiles.fileMode)
        guard file >= 0 else { return }
        let written = data.withUnsafeBytes { Glibc.write(file, $0.baseAddress, $0.count) }
        close(file)
        if written == data.count { rename(temporary, target) } else { unlink(temporary) }
    }

    /// The status of the dispatcher running on `registry`, if one is.
    static func read(registry: String) -> DispatcherStatus? {
        guard let data = FileManager.default.contents(atPath: path(registry)),
            let status = try? JSONDecoder().decode(DispatcherStatus.self, from: data),
            let start = status.process_start_time, ProcessIdentity.isAlive(pid: status.pid, startTime: start)
        else { return nil }
        return status
    }

    /// The file kept up to date, every second, until `stop()` removes it.
    struct Kept {
        let registry: String
        let writer: Task<Void, Never>

        func stop() {
            writer.cancel()
            unlink(DispatcherStatus.path(registry))
        }
    }

    /// Keeps the file of `dispatcher` up to date until the returned `Kept` is stopped.
    static func keep(_ dispatcher: Dispatcher<ContinuousClock>, registry: String, command: String, address: String?) -> Kept {
        let started = Date()
        let writer = Task {
            while !Task.isCancelled {
                DispatcherStatus(dispatcher, command: command, startedAt: started, address: address).write(registry: registry)
                try? await Task.sleep(for: .seconds(1))
            }
        }
        return Kept(registry: registry, writer: writer)
    }
}
