import ArgumentParser
import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners

/// `necro bench run`: the dispatcher's throughput and latency against raw process spawning.
struct BenchRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Dispatch no-op tasks (/bin/true) through the whole dispatcher and compare with raw spawning.",
        discussion: """
            1. Baseline: posix_spawn and reap of /bin/true, `--concurrency` at a time, no registry.
            2. A layered DAG of `--tasks` no-op tasks (each depends on two of the layer before), one local \
            pool of `--concurrency`, the registry durable on disk (SQLite WAL): throughput, exit-to-start \
            latency (from a runner's exit, as it is reaped, to the spawn of each runner it let start; the \
            baseline's from a reap to the next spawn's return), peak memory.
            3. A chain of `--chain` sequential no-op tasks, end to end.
            4. The exit-to-start latency along a chain of `--latency-chain` tasks: one runner at a time, \
            the machine not saturated.
            """
    )

    @OptionGroup var shape: BenchShape

    var tasks: Int { shape.tasks }
    var width: Int { shape.width }
    var concurrency: Int { shape.concurrency }
    var chain: Int { shape.chain }

    @Option(help: "Length of the chain the unsaturated latency is measured along.")
    var latencyChain = 500

    @Flag(help: "Start runners without their supervisor (no exit status that outlives the dispatcher).")
    var unsupervised = false

    @Option(help: "The pool's config.nice: runners' niceness above the dispatcher's (0 to 19).")
    var nice = 0

    func run() async throws {
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB")
        let (baseline, rawLatencies) = try Self.rawSpawn(count: tasks, concurrency: concurrency)
        print(String(format: "baseline: posix_spawn+reap of /bin/true ×%d at %d: %.2f s, %.0f tasks/s", tasks, concurrency, baseline, Double(tasks) / baseline))
        print(String(format: "baseline exit-to-start latency (a reap to the next spawn's return): p50 %.2f ms, p99 %.2f ms", Self.percentile(0.5, of: rawLatencies), Self.percentile(0.99, of: rawLatencies)))

        let folder = NSTemporaryDirectory() + "necro-bench-run-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let dag = Self.layeredDAG(tasks: tasks, width: width)
        let cpuBefore = Self.processCPU()
        // As `necro run` does: each runner under its supervisor, whose exit status outlives the dispatcher.
        let (dagTime, latencies) = try await Self.dispatch(dag, concurrency: concurrency, folder: folder + "/dag", supervised: !unsupervised, nice: nice)
        let cpu = Self.processCPU() - cpuBefore
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let throughput = Double(tasks) / dagTime
        let setting = (unsupervised ? "unsupervised" : "supervised") + (nice > 0 ? ", runners at nice +\(nice)" : "")
        print("dispatcher (\(setting)): " + String(format: "%d tasks (%d layers) at %d: %.2f s, %.0f tasks/s = %.0f%% of baseline", tasks, (tasks + width - 1) / width, concurrency, dagTime, throughput, 100 * throughput / (Double(tasks) / baseline)))
        print(String(format: "the dispatcher's own CPU (every thread of this process; not runners or supervisors): %.0f µs per task", cpu / Double(tasks) * 1e6))
        print(String(format: "exit-to-start latency: p50 %.2f ms, p99 %.2f ms (%d starts)", Self.percentile(0.5, of: latencies), Self.percentile(0.99, of: latencies), latencies.count))
        print("peak memory (whole process): \(usage.ru_maxrss / 1024) MB")

        let (chainTime, _) = try await Self.dispatch(Self.chain(chain), concurrency: concurrency, folder: folder + "/chain", supervised: !unsupervised, nice: nice)
        print(String(format: "chain of %d sequential no-op tasks: %.3f s end to end", chain, chainTime))
        // The same latency with the machine not saturated: one runner at a time, along a longer chain.
        let (_, chainLatencies) = try await Self.dispatch(Self.chain(latencyChain), concurrency: concurrency, folder: folder + "/latency", supervised: !unsupervised, nice: nice)
        print(String(format: "exit-to-start latency along a chain of %d (not saturated): p50 %.2f ms, p99 %.2f ms", latencyChain, Self.percentile(0.5, of: chainLatencies), Self.percentile(0.99, of: chainLatencies)))
    }

    /// CPU seconds this process has used, in all its threads.
    static func processCPU() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// The `p` quantile, in milliseconds.
    static func percentile(_ p: Double, of latencies: [Duration]) -> Double {
        let sorted = latencies.sorted()
        return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))].seconds * 1000
    }

    /// Task i depends on task i-1.
    static func chain(_ length: Int) -> TaskSetSpec {
        TaskSetSpec(name: "chain", tasks: (0..<length).map { TaskSpec(id: TaskID("c\($0)"), title: "c\($0)", dependencies: $0 == 0 ? [] : [TaskID("c\($0 - 1)")]) })
    }

    /// Every task of layer k depends on two tasks of layer k-1.
    static func layeredDAG(tasks: Int, width: Int) -> TaskSetSpec {
        var random = SplitMix64(seed: 7)
        var specs: [TaskSpec] = []
        specs.reserveCapacity(tasks)
        for i in 0..<tasks {
            let layer = i / width
            var dependencies: [TaskID] = []
            if layer > 0 {
                let previous = (layer - 1) * width
                let a = previous + Int(random.next() % UInt64(width))
                var b = previous + Int(random.next() % UInt64(width))
                if b == a { b = previous + (a - previous + 1) % width }
                dependencies = [TaskID("t\(a)"), TaskID("t\(b)")]
            }
            specs.append(TaskSpec(id: TaskID("t\(i)"), title: "t\(i)", dependencies: dependencies))
        }
        return TaskSetSpec(name: "bench", tasks: specs)
    }

    /// Imports and runs a spec with /bin/true runners; the time from dispatcher start to its end.
    static func dispatch(
        _ spec: TaskSetSpec, concurrency: Int, folder: String, supervised: Bool, nice: Int
    ) async throws -> (Double, [Duration]) {
        let registry = try SQLiteRegistry(path: folder + "/registry.sqlite")
        try registry.importTaskSet(spec, source: nil)
        let records = try registry.tasks(spec: spec.name)
        let configuration = DispatcherConfiguration(
            heartbeatTimeout: .seconds(600),
            pools: [
                PoolConfiguration(
                    name: "local", limits: PoolLimits(name: "local", maxConcurrency: concurrency), command: CommandTemplate(["/bin/true"]),
                    nice: nice)
            ])
        let launcher = LocalProcessLauncher()
        defer { launcher.shutdown() }
        let dispatcher = Dispatcher(
            configuration: configuration, registry: registry, launchers: [launcher], clock: ContinuousClock(),
            paths: .init(logs: folder + "/logs", work: folder + "/work", registry: registry.path, status: supervised ? folder + "/status" : nil),
            environment: ["PATH": "/usr/bin:/bin"])
        let start = ContinuousClock.now
        let outcome = try await dispatcher.run([(spec, records)])
        let elapsed = (ContinuousClock.now - start).seconds
        guard outcome.succeeded else { throw ValidationError("the benchmark run failed: \(outcome.counts)") }
        return (elapsed, dispatcher.startLatencies)
    }

    /// posix_spawn and reap /bin/true `count` times, `concurrency` at a time: the time it takes, and
    /// each start's latency from the reap that made room for it to the spawn's return.
    static func rawSpawn(count: Int, concurrency: Int) throws -> (Double, [Duration]) {
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        let start = ContinuousClock.now
        var started = 0
        var running = 0
        var finished = 0
        var latencies: [Duration] = []
        latencies.reserveCapacity(count)
        var reaped = ContinuousClock.now
        while finished < count {
            while running < concurrency && started < count {
                var pid: pid_t = 0
                guard posix_spawn(&pid, "/bin/true", nil, nil, argv, environ) == 0 else { throw ValidationError("posix_spawn failed") }
                if started >= concurrency { latencies.append(ContinuousClock.now - reaped) }
                started += 1
                running += 1
            }
            var status: Int32 = 0
            if wait(&status) > 0 {
                reaped = ContinuousClock.now
                running -= 1
                finished += 1
            }
        }
        return ((ContinuousClock.now - start).seconds, latencies)
    }
}

/// The generated workloads `necro bench run` and `necro bench runner` dispatch: a layered DAG and a
/// sequential chain.
struct BenchShape: ParsableArguments {
    @Option(help: "Tasks in the DAG.")
    var tasks = 10_000

    @Option(help: "Tasks per layer of the DAG.")
    var width = 200

    @Option(help: "Runners at once.")
    var concurrency = 64

    @Option(help: "Length of the sequential chain.")
    var chain = 40
}
