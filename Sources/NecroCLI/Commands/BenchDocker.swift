import ArgumentParser
import Foundation
import NecroCore
import NecroDispatcher
import NecroDocker
import NecroRegistry

/// `necro bench docker`: no-op containers through `necro run`, against the same Engine API calls
/// in a plain loop.
struct BenchDocker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "docker",
        abstract: "Run no-op containers through `necro run` and compare with the bare Engine API calls.",
        discussion: """
            1. Baseline: for each container, the calls the Docker pool makes — create (the same \
            configuration: labels, the task's folder mounted, init, no capabilities), attach, start, wait, \
            remove — `--concurrency` at a time, no registry, no dispatcher.
            2. `necro run` (this binary, a new process) on a spec of `--count` independent tasks, one \
            docker pool of `--concurrency` whose command is `true`, the registry on disk.
            Reported: wall time and throughput of each, and each container's time from its creation (the \
            baseline) or its task's assignment (necro run) to its end being known; the dispatcher's added \
            latency per container is the difference of their p50 and p99. Needs a Docker engine \
            (DOCKER_HOST) and the image (Scripts/busybox-image.sh makes one).
            """
    )

    @Option(help: "Containers in each run.")
    var count = 200

    @Option(help: "Containers at once.")
    var concurrency = 8

    @Option(help: "The image (with /bin/true).")
    var image = "necro-bench:busybox"

    func run() async throws {
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB")
        let engine = try await DockerEngine.connect(socketPath: try DockerEngine.socketPath())
        print("engine: Docker \(engine.engineVersion) at \(engine.socketPath)")
        guard try await engine.hasImage(image) else {
            throw ValidationError("no image \(image) on the engine: make it with Scripts/busybox-image.sh \(image)")
        }
        let folder = NSTemporaryDirectory() + "necro-bench-docker-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        let (baseline, rawTimes) = try await Self.rawLoop(engine, image: image, count: count, concurrency: concurrency, folder: folder + "/raw")
        print(
            String(
                format: "baseline: create+attach+start+wait+remove ×%d at %d: %.2f s, %.1f containers/s; per container p50 %.0f ms, p99 %.0f ms",
                count, concurrency, baseline, Double(count) / baseline, BenchRun.percentile(0.5, of: rawTimes), BenchRun.percentile(0.99, of: rawTimes)))

        let (elapsed, times) = try Self.throughNecroRun(image: image, count: count, concurrency: concurrency, folder: folder + "/run")
        let ratio = (Double(count) / elapsed) / (Double(count) / baseline)
        print(
            String(
                format: "necro run: %d tasks at %d: %.2f s (the whole command, start to exit), %.1f containers/s = %.0f%% of baseline",
                count, concurrency, elapsed, Double(count) / elapsed, ratio * 100))
        let p50 = BenchRun.percentile(0.5, of: times)
        let p99 = BenchRun.percentile(0.99, of: times)
        print(String(format: "necro run per container (assigned to finished, as recorded): p50 %.0f ms, p99 %.0f ms", p50, p99))
        print(
            String(
                format: "the dispatcher's added latency per container: p50 %+.0f ms, p99 %+.0f ms",
                p50 - BenchRun.percentile(0.5, of: rawTimes), p99 - BenchRun.percentile(0.99, of: rawTimes)))
        await engine.shutdown()
    }

    /// The Docker pool's calls for each container, `concurrency` at a time: the time it all takes,
    /// and each container's from its create to its removal.
    static func rawLoop(_ engine: DockerEngine, image: String, count: Int, concurrency: Int, folder: String) async throws -> (Double, [Duration]) {
        let launcher = DockerLauncher(engine: engine, pools: [:], registryLabel: "bench-\(getpid())")
        let start = ContinuousClock.now
        var times: [Duration] = []
        try await withThrowingTaskGroup(of: Duration.self) { group in
            var next = 0
            func add() {
                let index = next
                next += 1
                let work = "\(folder)/\(index)"
                group.addTask {
                    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
                    let began = ContinuousClock.now
                    let launch = RunnerLaunch(
                        runner: RunnerID("raw-\(index)"), argv: ["true"], environment: [:], workingDirectory: work, logPath: work + ".log",
                        task: TaskKey(spec: "bench", id: TaskID("\(index)")), pool: "bench")
                    let id = try await engine.createContainer(launcher.containerBody(launch, ContainerSettings(image: image)))
                    let output = try await engine.attach(id)
                    try await engine.start(id)
                    _ = try await engine.wait(id)
                    for try await _ in output {}
                    try await engine.remove(id)
                    return ContinuousClock.now - began
                }
            }
            for _ in 0..<min(concurrency, count) { add() }
            while let time = try await group.next() {
                times.append(time)
                if next < count { add() }
            }
        }
        await launcher.shutdown()
        return ((ContinuousClock.now - start).seconds, times)
    }

    /// `necro run` on `count` independent no-op tasks in a docker pool: its wall time, and each
    /// task's time from its assignment to its runner's end, from the registry's events.
    static func throughNecroRun(image: String, count: Int, concurrency: Int, folder: String) throws -> (Double, [Duration]) {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // YAML: tasks that name no dependencies are independent (a tasks.md's run in the order written).
        let tasks = "spec_name: bench\ntasks:\n" + (0..<count).map { "  - {id: \"\($0)\", title: No-op \($0)}" }.joined(separator: "\n") + "\n"
        try tasks.write(toFile: folder + "/tasks.yaml", atomically: true, encoding: .utf8)
        let configuration = """
            dispatcher: {heartbeat_timeout: 600, retry_max_attempts: 1}
            agent_pools:
              box:
                type: docker
                max_concurrency: \(concurrency)
                config: {image: "\(image)", command: ["true"]}
            """
        try configuration.write(toFile: folder + "/necro.yaml", atomically: true, encoding: .utf8)
        let binary = Launchers.executable
        let previous = FileManager.default.currentDirectoryPath
        _ = FileManager.default.changeCurrentDirectoryPath(folder)
        defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
        let result = try Measurement.run(binary, ["run", "tasks.yaml", "--no-workspace", "--no-server"])
        guard result.status == 0 else { throw ValidationError("necro run failed with status \(result.status) (see \(folder))") }
        let registry = try SQLiteRegistry(path: folder + "/.necro/registry.sqlite")
        let events = try registry.events(EventQuery())
        var assigned: [TaskID: Double] = [:]
        var times: [Duration] = []
        for event in events {
            guard let task = event.taskID else { continue }
            if event.type == .taskAssigned { assigned[task] = event.timestamp.secondsSince1970 }
            if event.type == .runnerFinished, let began = assigned[task] {
                times.append(.milliseconds(Int64((event.timestamp.secondsSince1970 - began) * 1000)))
            }
        }
        return (result.seconds, times)
    }
}
