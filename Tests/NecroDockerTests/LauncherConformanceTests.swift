import Foundation
import NecroCore
import NecroDispatcher
import NecroDocker
import NecroRegistry
import NecroRunners
import NecroTesting
import Testing

/// The launchers the conformance suite runs against: real processes, and real containers on a
/// real Docker engine.
enum LauncherKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case local, docker
    var testDescription: String { rawValue }
}

/// A dispatcher on a real registry file, with one pool of the kind under test, in a folder of its own.
struct Rig {
    let kind: LauncherKind
    let dir: TemporaryDirectory
    let registry: SQLiteRegistry
    let launcher: any RunnerLauncher
    let engine: DockerEngine?
    let label: String

    static func make(_ kind: LauncherKind, logLimitBytes: Int = 8 << 20, pool: [String: ContainerSettings] = [:]) async throws -> Rig {
        let dir = try TemporaryDirectory("conformance-\(kind)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let label = Dispatcher<ContinuousClock>.runnerMarker(registry: registry.path)
        switch kind {
        case .local:
            return Rig(
                kind: kind, dir: dir, registry: registry, launcher: LocalProcessLauncher(logLimitBytes: logLimitBytes, outputInterval: .zero),
                engine: nil, label: label)
        case .docker:
            let engine = try await TestDocker.engine()
            let launcher = DockerLauncher(
                engine: engine, pools: pool.isEmpty ? ["p": ContainerSettings(image: TestDocker.image)] : pool, registryLabel: label,
                logLimitBytes: logLimitBytes, outputInterval: .zero)
            return Rig(kind: kind, dir: dir, registry: registry, launcher: launcher, engine: engine, label: label)
        }
    }

    var paths: Dispatcher<ContinuousClock>.Paths {
        .init(logs: dir.file(".necro/logs"), work: dir.file(".necro/work"), registry: registry.path)
    }

    func configuration(
        _ script: String, concurrency: Int = 4, attempts: Int = 1, heartbeat: Duration = .seconds(60), grace: Duration = .seconds(300),
        environment: [String: String] = [:], resources: TaskResources = TaskResources()
    ) -> DispatcherConfiguration {
        var limits = PoolLimits(name: "p", maxConcurrency: concurrency)
        limits.defaultResources = resources
        return DispatcherConfiguration(
            heartbeatTimeout: heartbeat,
            retry: RetryPolicy(maxAttempts: attempts, initialDelay: .milliseconds(10), base: 2, maxDelay: .milliseconds(50)),
            gracefulShutdownTimeout: grace,
            pools: [
                PoolConfiguration(
                    name: "p", type: kind == .local ? .localProcess : .docker, limits: limits,
                    command: CommandTemplate(["/bin/sh", "-c", script]), environment: environment,
                    container: kind == .local ? nil : ContainerSettings(image: TestDocker.image))
            ])
    }

    /// Imports the spec and runs it to the end; `during` is given the dispatcher while it runs.
    func run(
        _ spec: TaskSetSpec, _ configuration: DispatcherConfiguration,
        during: (@Sendable (Dispatcher<ContinuousClock>) async -> Void)? = nil
    ) async throws -> RunOutcome {
        try registry.importTaskSet(spec, source: nil)
        let dispatcher = Dispatcher(configuration: configuration, registry: registry, launchers: [launcher], clock: ContinuousClock(), paths: paths)
        let side = during.map { during in Task { await during(dispatcher) } }
        defer { side?.cancel() }
        return try await dispatcher.run([(spec, try registry.tasks(spec: spec.name))])
    }

    func events(_ type: EventType? = nil) throws -> [EventRecord] {
        try registry.events(EventQuery(type: type))
    }

    /// Stops the launcher; with Docker, every container of this registry must be gone (removed
    /// once its end was recorded), which this checks.
    func finish() async throws {
        if let engine {
            // Removal follows the record of the end by a moment.
            var left = try await TestDocker.containers(engine, label: label)
            for _ in 0..<100 where !left.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                left = try await TestDocker.containers(engine, label: label)
            }
            #expect(left.isEmpty, "containers left behind: \(left.map { $0.Id.prefix(12) })")
            for container in left { try? await engine.remove(container.Id) }
            await engine.shutdown()
        }
        await launcher.shutdown()
        dir.remove()
    }
}

func chain(_ ids: [String], name: String = "s") -> TaskSetSpec {
    TaskSetSpec(
        name: name,
        tasks: ids.enumerated().map { index, id in
            TaskSpec(id: TaskID(id), title: "Task \(id)", dependencies: index == 0 ? [] : [TaskID(ids[index - 1])])
        })
}

func independent(_ count: Int, name: String = "s") -> TaskSetSpec {
    TaskSetSpec(name: name, tasks: (1...count).map { TaskSpec(id: TaskID("\($0)"), title: "Task \($0)") })
}

/// Waits for a runner's output line containing `text`.
func awaitOutput(_ dispatcher: Dispatcher<ContinuousClock>, _ text: String, _ updates: AsyncStream<Dispatcher<ContinuousClock>.Update>) async {
    for await update in updates {
        if case .output(_, let line) = update, line.contains(text) { return }
    }
}

@Suite(.serialized) struct LauncherConformanceTests {
    @Test(arguments: LauncherKind.allCases)
    func tasksRunInDependencyOrderAndExitCodesAreReportedAndRetriedWithBackoff(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let outcome = try await rig.run(
            chain(["1", "2", "3"]), rig.configuration(#"echo "ran $NECRO_TASK_ID"; [ "$NECRO_TASK_ID" = 3 ] && exit 3; exit 0"#, attempts: 2))
        #expect(!outcome.succeeded)
        let states = Dictionary(uniqueKeysWithValues: try rig.registry.tasks(spec: "s").map { ($0.task.id, $0.state) })
        #expect(states == ["1": .done, "2": .done, "3": .failed])
        let events = try rig.events()
        let completed1 = try #require(events.first { $0.type == .taskCompleted && $0.taskID == "1" }).id
        let started2 = try #require(events.first { $0.type == .runnerStarted && $0.taskID == "2" }).id
        #expect(completed1 < started2, "a dependent starts after its dependency is done")
        let finished3 = events.filter { $0.type == .runnerFinished && $0.taskID == "3" }
        #expect(finished3.count == 2, "retried once")
        #expect(finished3.allSatisfy { $0.payload["exit_code"] == .int(3) })
        #expect(events.contains { $0.type == .taskRetryScheduled && $0.taskID == "3" })
        let log = try String(contentsOfFile: rig.paths.logFile(for: try #require(rig.registry.runners(runningOnly: false).first { $0.task.id == "2" }).id), encoding: .utf8)
        #expect(log == "ran 2\n")
        try await rig.finish()
    }

    @Test(arguments: LauncherKind.allCases)
    func noMoreRunnersThanThePoolAllows(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let outcome = try await rig.run(independent(6), rig.configuration("sleep 0.3", concurrency: 2))
        #expect(outcome.succeeded)
        let runners = try rig.registry.runners(runningOnly: false)
        #expect(runners.count == 6)
        var most = 0
        for runner in runners {
            let at = runner.startedAt.secondsSince1970
            let overlapping = runners.filter { $0.startedAt.secondsSince1970 <= at && ($0.endedAt?.secondsSince1970 ?? .infinity) > at }
            most = max(most, overlapping.count)
        }
        #expect(most <= 2 && most >= 1, "at most 2 at once, found \(most)")
        try await rig.finish()
    }

    /// A silent runner is stopped at its heartbeat timeout, with everything it started.
    @Test(arguments: LauncherKind.allCases)
    func aSilentRunnerIsKilledAtItsHeartbeatTimeoutWithItsChildren(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let start = ContinuousClock.now
        let outcome = try await rig.run(
            independent(1), rig.configuration(#"sleep 300 & echo $! > "$PWD/child"; wait"#, heartbeat: .seconds(1)))
        #expect(ContinuousClock.now - start < .seconds(60))
        #expect(!outcome.succeeded)
        let finished = try #require(try rig.events(.runnerFinished).first)
        #expect(finished.payload["failure_reason"]?.stringValue?.contains("heartbeat") == true, "\(finished.payload)")
        if kind == .local {
            let child = try String(contentsOfFile: rig.paths.workFolder(for: TaskKey(spec: "s", id: "1")) + "/child", encoding: .utf8)
            let pid = try #require(Int32(child.trimmingCharacters(in: .whitespacesAndNewlines)))
            // Killed with its group (a zombie a moment, until reaped, is dead too).
            func gone() -> Bool {
                guard kill(pid, 0) == 0 else { return true }
                let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
                return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
            }
            for _ in 0..<100 where !gone() { try await Task.sleep(for: .milliseconds(50)) }
            #expect(gone(), "the runner's child is gone")
        }
        // (Docker: the container, its children with it, is gone: `finish` checks.)
        try await rig.finish()
    }

    /// Any output renews a runner's lease, a line ended or not (a progress bar of dots): it is
    /// not stopped at its heartbeat timeout while it writes.
    @Test(arguments: LauncherKind.allCases)
    func outputWithoutNewlinesRenewsTheLease(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let outcome = try await rig.run(
            independent(1), rig.configuration("i=0; while [ $i -lt 12 ]; do printf .; sleep 0.25; i=$((i+1)); done", heartbeat: .seconds(1)))
        let finished = try rig.events(.runnerFinished).map(\.payload)
        #expect(outcome.succeeded, "\(finished)")
        try await rig.finish()
    }

    /// A runner that ignores SIGTERM is killed when the dispatcher stops now.
    @Test(arguments: LauncherKind.allCases)
    func aRunnerIgnoringSIGTERMIsKilled(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let outcome = try await rig.run(independent(1), rig.configuration("trap '' TERM; echo up; sleep 300; echo late")) { dispatcher in
            await awaitOutput(dispatcher, "up", dispatcher.updates())
            dispatcher.shutdownNow()
        }
        #expect(outcome.interrupted)
        let finished = try #require(try rig.events(.runnerFinished).first)
        #expect(finished.payload["signal"] == .int(9), "\(finished.payload)")
        try await rig.finish()
    }

    /// A graceful shutdown lets runners finish until its timeout, then stops them and gives their
    /// attempts back: the task is ready again, no attempt spent.
    @Test(arguments: LauncherKind.allCases)
    func aGracefulShutdownGivesTheAttemptsBack(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind)
        let outcome = try await rig.run(independent(1), rig.configuration("echo up; sleep 300", grace: .milliseconds(500))) { dispatcher in
            await awaitOutput(dispatcher, "up", dispatcher.updates())
            dispatcher.shutdown()
        }
        #expect(outcome.interrupted)
        let task = try #require(try rig.registry.tasks(spec: "s").first)
        #expect(task.state == .ready && task.attempts == 0, "\(task.state) \(task.attempts)")
        #expect(try rig.events(.runnerFinished).first?.payload["interrupted"] == true)
        try await rig.finish()
    }

    @Test(arguments: LauncherKind.allCases)
    func outputIsKeptUpToTheCapAndTheRestCounted(_ kind: LauncherKind) async throws {
        let rig = try await Rig.make(kind, logLimitBytes: 1_000)
        let outcome = try await rig.run(independent(1), rig.configuration("i=0; while [ $i -lt 100 ]; do echo 0123456789012345678901234567890123456789012345678; i=$((i+1)); done"))
        #expect(outcome.succeeded)
        let runner = try #require(try rig.registry.runners(runningOnly: false).first)
        let log = try String(contentsOfFile: rig.paths.logFile(for: runner.id), encoding: .utf8)
        #expect(log.hasPrefix(String(repeating: "0123456789012345678901234567890123456789012345678\n", count: 20)))
        #expect(log.contains("[necro: 4000 more bytes of output were not kept: the log is capped at 1000 bytes]"), "\(log.suffix(200))")
        try await rig.finish()
    }
}
