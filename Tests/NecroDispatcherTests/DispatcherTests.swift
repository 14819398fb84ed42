import Foundation
import GRDB
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroTesting
import Testing

/// A dispatcher on a real registry file and real processes, in a folder of its own.
private struct Bench {
    let dir: TemporaryDirectory
    let registry: SQLiteRegistry
    let launcher = LocalProcessLauncher(outputInterval: .zero)

    init(busyTimeout: Duration = .seconds(30)) throws {
        dir = try TemporaryDirectory("dispatch")
        registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"), busyTimeout: busyTimeout)
    }

    var paths: Dispatcher<ContinuousClock>.Paths {
        .init(logs: dir.file(".necro/logs"), work: dir.file(".necro/work"), registry: registry.path)
    }

    func configuration(_ script: String, concurrency: Int = 4, global: Int? = nil, policy: SchedulingPolicy = .priority,
                       attempts: Int = 3, heartbeat: Duration = .seconds(60)) -> DispatcherConfiguration {
        DispatcherConfiguration(
            schedulingPolicy: policy, maxGlobalConcurrency: global, heartbeatTimeout: heartbeat,
            retry: RetryPolicy(maxAttempts: attempts, initialDelay: .milliseconds(10), base: 2, maxDelay: .milliseconds(50)),
            pools: [
                PoolConfiguration(
                    name: "local", limits: PoolLimits(name: "local", maxConcurrency: concurrency),
                    command: CommandTemplate(["/bin/sh", "-c", script]), environment: ["LEDGER": dir.file("ledger")])
            ])
    }

    /// Imports the spec and runs it to the end with the real clock.
    func run(_ spec: TaskSetSpec, _ configuration: DispatcherConfiguration) async throws -> RunOutcome {
        try registry.importTaskSet(spec, source: nil)
        let dispatcher = Dispatcher(configuration: configuration, registry: registry, launchers: [launcher], clock: ContinuousClock(), paths: paths)
        return try await dispatcher.run([(spec, try registry.tasks(spec: spec.name))])
    }

    /// "start ID" and "end ID" lines the runners wrote, in order.
    var ledger: [(String, TaskID)] {
        ((try? String(contentsOfFile: dir.file("ledger"), encoding: .utf8)) ?? "").split(separator: "\n").map {
            let parts = $0.split(separator: " ")
            return (String(parts[0]), TaskID(String(parts[1])))
        }
    }

    /// The most runners that were between their start and end lines at once.
    var maxConcurrency: Int {
        var running = 0
        var most = 0
        for (kind, _) in ledger {
            running += kind == "start" ? 1 : -1
            most = max(most, running)
        }
        return most
    }

    func finish() {
        launcher.shutdown()
        dir.remove()
    }
}

/// Writes start and end lines around a short pause.
private let ledgerScript = #"echo "start $NECRO_TASK_ID" >> "$LEDGER"; sleep 0.05; echo "end $NECRO_TASK_ID" >> "$LEDGER""#

private func task(_ id: TaskID, _ deps: [TaskID] = [], priority: Int = 0) -> TaskSpec {
    TaskSpec(id: id, title: "Task \(id)", dependencies: deps, priority: priority)
}

@Suite struct DispatcherTests {
    @Test func tasksStartOnlyAfterTheirDependenciesEnd() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "order", tasks: [
            task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c"]), task("e"), task("f", ["d", "e"]),
        ])
        let outcome = try await bench.run(spec, bench.configuration(ledgerScript))
        #expect(outcome.succeeded)
        let ledger = bench.ledger
        func position(_ kind: String, _ id: TaskID) -> Int { ledger.firstIndex { $0.0 == kind && $0.1 == id } ?? -1 }
        for t in spec.tasks {
            for dep in t.dependencies { #expect(position("end", dep) < position("start", t.id), "\(t.id) after \(dep)") }
        }
        #expect(ledger.count == 12, "each task ran exactly once")
        let states = try bench.registry.tasks(spec: "order").map(\.state)
        #expect(states.allSatisfy { $0 == .done })
    }

    @Test func concurrencyReachesTheLimitAndNeverExceedsIt() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "wide", tasks: (0..<12).map { task(TaskID("t\($0)")) })
        let outcome = try await bench.run(spec, bench.configuration(#"echo "start $NECRO_TASK_ID" >> "$LEDGER"; sleep 0.2; echo "end $NECRO_TASK_ID" >> "$LEDGER""#, concurrency: 3))
        #expect(outcome.succeeded)
        #expect(bench.maxConcurrency == 3)
    }

    @Test func priorityOrdersStartsWithOneSlot() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "prio", tasks: [task("low", priority: 1), task("high", priority: 9), task("mid", priority: 5)])
        _ = try await bench.run(spec, bench.configuration(ledgerScript, concurrency: 1))
        #expect(bench.ledger.filter { $0.0 == "start" }.map(\.1) == ["high", "mid", "low"])
    }

    @Test func fairShareAlternatesBetweenTasksets() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let big = TaskSetSpec(name: "big", tasks: (0..<8).map { task(TaskID("b\($0)")) })
        let small = TaskSetSpec(name: "small", tasks: (0..<3).map { task(TaskID("s\($0)")) })
        try bench.registry.importTaskSet(big, source: nil)
        try bench.registry.importTaskSet(small, source: nil)
        let dispatcher = Dispatcher(
            configuration: bench.configuration(ledgerScript, concurrency: 1, policy: .fairShare), registry: bench.registry,
            launchers: [bench.launcher], clock: ContinuousClock(), paths: bench.paths)
        let outcome = try await dispatcher.run([(big, try bench.registry.tasks(spec: "big")), (small, try bench.registry.tasks(spec: "small"))])
        #expect(outcome.succeeded)
        let starts = bench.ledger.filter { $0.0 == "start" }.map { $0.1.rawValue.first! }
        #expect(String(starts) == "bsbsbsbbbbb")
    }

    @Test func aFlakyTaskFailsTwiceThenSucceeds() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        // Each task works in a folder of its own: the counter survives between attempts.
        let flaky = #"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "attempt $n"; [ $n -ge 3 ]"#
        let outcome = try await bench.run(TaskSetSpec(name: "flaky", tasks: [task("f"), task("after", ["f"])]), bench.configuration(flaky))
        #expect(outcome.succeeded)
        let events = try bench.registry.events(EventQuery(task: "f")).map(\.type)
        #expect(events.filter { $0 == .taskRetryScheduled }.count == 1 + 1, "two failures, two retries")
        #expect(events.last == .taskCompleted)
        let runners = try bench.registry.runners(runningOnly: false).filter { $0.task.id == "f" }
        #expect(runners.map(\.exit) == ["exit code 1", "exit code 1", "exit code 0"])
        #expect(try bench.registry.tasks(spec: "flaky").first { $0.task.id == "f" }?.attempts == 3)
    }

    @Test func aTaskThatFailsForGoodBlocksItsDependents() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let script = #"[ "$NECRO_TASK_ID" != "bad" ]"#
        let spec = TaskSetSpec(name: "fail", tasks: [task("bad"), task("child", ["bad"]), task("grandchild", ["child"]), task("ok")])
        let outcome = try await bench.run(spec, bench.configuration(script, attempts: 2))
        #expect(!outcome.succeeded)
        #expect(outcome.failed == [TaskKey(spec: "fail", id: "bad")])
        let records = Dictionary(uniqueKeysWithValues: try bench.registry.tasks(spec: "fail").map { ($0.task.id, $0) })
        #expect(records["bad"]?.state == .failed && records["bad"]?.attempts == 2)
        #expect(records["child"]?.state == .blocked && records["child"]?.reason == "dependency bad failed")
        #expect(records["grandchild"]?.reason == "dependency bad failed")
        #expect(records["ok"]?.state == .done)
    }

    @Test func aMissingCommandIsAFailedAttemptWithItsReason() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        var configuration = bench.configuration("unused", attempts: 1)
        configuration.pools[0].command = CommandTemplate(["no-such-agent-\(UUID().uuidString.prefix(4))"])
        let outcome = try await bench.run(TaskSetSpec(name: "missing", tasks: [task("x")]), configuration)
        #expect(!outcome.succeeded)
        let failed = try bench.registry.events(EventQuery(task: "x")).last { $0.type == .taskFailed }
        #expect(failed?.payload["failure_reason"]?.stringValue?.hasPrefix("launch failed: command not found: no-such-agent-") == true)
    }

    @Test func runnersGetTheirContextAndPlaceholdersStayInsideOneArgument() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        var configuration = bench.configuration("unused")
        configuration.pools[0].command = CommandTemplate([
            "/bin/sh", "-c", #"printf '%s\n' "$1" "$2" "$RUNNER_ID" "$POOL_NAME" "$TASK_CONTEXT" > out.txt"#, "sh", "{task.title}", "{runner.id}",
        ])
        var t = task("1.1")
        t.title = "Title; rm -rf / $(whoami)"
        t.dependencies = ["0"]
        _ = try await bench.run(TaskSetSpec(name: "ctx", tasks: [task("0"), t]), configuration)
        let lines = try String(contentsOfFile: bench.dir.file(".necro/work/ctx/1.1/out.txt"), encoding: .utf8).split(separator: "\n")
        #expect(lines[0] == "Title; rm -rf / $(whoami)", "one argument, never run by a shell")
        #expect(lines[1] == "ctx.1.1.a1" && lines[2] == "ctx.1.1.a1" && lines[3] == "local")
        let context = try JSONDecoder().decode([String: JSONValue].self, from: Data(lines[4].utf8))
        #expect(context["task"]?["id"] == "1.1")
        #expect(context["dependencies"] == ["0"])
        #expect(context["slot"]?["path"]?.stringValue == bench.dir.file(".necro/work/ctx/1.1"))
    }

    @Test func aTaskIdCannotLeadAPathOutOfItsFolders() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        // Ids come from the user's YAML or JSON: nothing stops `../..` or a slash in them.
        let spec = TaskSetSpec(name: "../up", tasks: [task("../../escape"), task("a/b")])
        let outcome = try await bench.run(spec, bench.configuration("pwd > where.txt; echo logged"))
        #expect(outcome.succeeded)
        let paths = bench.paths
        for id in ["../../escape", "a/b"] as [TaskID] {
            let folder = paths.workFolder(for: TaskKey(spec: "../up", id: id))
            #expect(folder.hasPrefix(paths.work + "/") && !folder.dropFirst(paths.work.count).contains("/.."))
            #expect(FileManager.default.fileExists(atPath: folder + "/where.txt"), "it worked in \(folder)")
            let log = paths.logFile(for: RunnerID(task: TaskKey(spec: "../up", id: id), attempt: 1))
            #expect(log.split(separator: "/").count == paths.logs.split(separator: "/").count + 1, "one file in logs: \(log)")
            #expect(FileManager.default.fileExists(atPath: log))
        }
        #expect(!FileManager.default.fileExists(atPath: bench.dir.file("escape")))
        #expect(!FileManager.default.fileExists(atPath: bench.dir.file(".necro/escape")))
    }

    @Test func aSilentRunnerAndItsChildAreKilledAfterTheHeartbeatTimeout() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let clock = TestClock()
        let spec = TaskSetSpec(name: "hung", tasks: [task("h")])
        try bench.registry.importTaskSet(spec, source: nil)
        // It starts a child, says nothing, and ignores SIGTERM: only SIGKILL to its group ends it.
        let script = #"trap '' TERM; sleep 600 & echo $! > child.pid; wait"#
        let dispatcher = Dispatcher(
            configuration: bench.configuration(script, attempts: 1, heartbeat: .seconds(60)), registry: bench.registry,
            launchers: [bench.launcher], clock: clock, paths: .init(logs: bench.paths.logs, work: bench.paths.work, registry: bench.paths.registry))
        var updates = dispatcher.updates().makeAsyncIterator()
        let run = Task { try await dispatcher.run([(spec, try bench.registry.tasks(spec: "hung"))]) }
        // Wait until it runs, then let a minute pass with no sign of life, then the grace period.
        while let update = await next(&updates) {
            if case .events(let batch) = update, batch.contains(where: { e in e.type == .runnerStarted }) { break }
        }
        let childPID = bench.dir.file(".necro/work/hung/h/child.pid")
        while (try? String(contentsOfFile: childPID, encoding: .utf8))?.hasSuffix("\n") != true { await Task.yield() }
        let child = try #require(Int32(try String(contentsOfFile: childPID, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        clock.advance(by: .seconds(60))
        while let update = await next(&updates) {
            if case .events(let batch) = update, batch.contains(where: { e in e.type == .runnerTimedOut }) { break }
        }
        clock.advance(by: .seconds(10))
        let outcome = try await run.value
        #expect(!outcome.succeeded)
        let events = try bench.registry.events(EventQuery(task: "h"))
        #expect(events.first { $0.type == .runnerTimedOut }?.payload["reason"] == "no heartbeat for 60 s")
        #expect(events.first { $0.type == .runnerFinished }?.payload["signal"] == 9, "SIGTERM was ignored: SIGKILL ended it")
        // SIGKILL reached the child too; the kernel may take a moment to finish it off.
        func gone() -> Bool { kill(child, 0) != 0 || (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.contains(") Z") == true }
        let deadline = ContinuousClock.now + .seconds(5)
        while !gone() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(gone())
    }

    @Test func aHeartbeatInTheRegistryKeepsARunnerAlive() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let clock = TestClock()
        let spec = TaskSetSpec(name: "beat", tasks: [task("b")])
        try bench.registry.importTaskSet(spec, source: nil)
        let dispatcher = Dispatcher(
            configuration: bench.configuration("read line < fifo", attempts: 1), registry: bench.registry, launchers: [bench.launcher],
            clock: clock, paths: .init(logs: bench.paths.logs, work: bench.paths.work, registry: bench.paths.registry))
        let work = bench.dir.file(".necro/work/beat/b")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        #expect(mkfifo(work + "/fifo", 0o644) == 0)
        var updates = dispatcher.updates().makeAsyncIterator()
        let run = Task { try await dispatcher.run([(spec, try bench.registry.tasks(spec: "beat"))]) }
        while let update = await next(&updates) {
            if case .events(let batch) = update, batch.contains(where: { e in e.type == .runnerStarted }) { break }
        }
        #expect(try bench.registry.heartbeat(runner: RunnerID("beat.b.a1")))
        clock.advance(by: .seconds(60))
        // The lease check finds the heartbeat: no timeout. Let the runner finish by itself.
        let fifo = open(work + "/fifo", O_WRONLY)
        _ = "done\n".withCString { write(fifo, $0, 5) }
        close(fifo)
        let outcome = try await run.value
        #expect(outcome.succeeded)
        #expect(try bench.registry.events(EventQuery(task: "b")).contains { $0.type == .runnerTimedOut } == false)
    }

    @Test func aRetriedAttemptGetsTheLastCheckpointWithoutWaitingForTheRegistry() async throws {
        let bench = try Bench(busyTimeout: .milliseconds(50))
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "resume", tasks: [task("t")])
        try bench.registry.importTaskSet(spec, source: nil)
        #expect(mkfifo(bench.dir.file("gate"), 0o644) == 0)
        // Attempt 1 waits at the gate and fails; attempt 2 keeps the context it was given.
        let script = #"if [ "$NECRO_ATTEMPT" = 1 ]; then read line < "$GATE"; exit 1; fi; printf '%s' "$TASK_CONTEXT" > "$CONTEXT""#
        var configuration = bench.configuration(script)
        configuration.pools[0].environment["GATE"] = bench.dir.file("gate")
        configuration.pools[0].environment["CONTEXT"] = bench.dir.file("context.json")
        let dispatcher = Dispatcher(
            configuration: configuration, registry: bench.registry, launchers: [bench.launcher], clock: ContinuousClock(), paths: bench.paths)
        var updates = dispatcher.updates().makeAsyncIterator()
        let run = Task { try await dispatcher.run([(spec, try bench.registry.tasks(spec: "resume"))]) }
        var runner: RunnerID?
        while runner == nil, let update = await next(&updates) {
            guard case .events(let batch) = update, let started = batch.first(where: { $0.type == .runnerStarted }) else { continue }
            if case .string(let id)? = started.payload["runner_id"] { runner = RunnerID(id) }
        }
        let first = try #require(runner)
        // From here the registry cannot be written: the checkpoint is in the journal only.
        let lock = try WriteLock(path: bench.registry.path)
        dispatcher.send(.runnerReported(first, [NewEvent(.checkpointCommit, payload: ["checkpoint_id": "after-step-2", "sequence_number": 2])]))
        release(bench.dir.file("gate"))
        let outcome = try await run.value
        lock.release()
        #expect(outcome.succeeded)
        let context = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: bench.dir.file("context.json"))))
        #expect(context["checkpoint"]?["checkpoint_id"] == "after-step-2", "the checkpoint the dispatcher recorded, though not in the registry yet")
        #expect(context["checkpoint"]?["sequence_number"] == 2)
    }

    /// Recovery gives back an attempt its dispatcher died in: the attempt keeps its number, and
    /// still goes on from the task's last checkpoint (it did not: only attempts > 1 got one).
    @Test func anAttemptGivenBackByRecoveryStillGetsTheLastCheckpoint() async throws {
        let bench = try Bench()
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "given-back", tasks: [task("t")])
        try bench.registry.importTaskSet(spec, source: nil)
        // As a dispatcher that died left it: running, attempt 1, a checkpoint recorded, an invalid one after it.
        try bench.registry.apply([
            Transition(
                spec: "given-back", task: "t", to: .running, attempts: 1,
                events: [
                    NewEvent(.checkpointCommit, payload: ["checkpoint_id": "t#1", "sequence_number": 1]),
                    NewEvent(.checkpointCommit, payload: ["checkpoint_id": "t#2", "sequence_number": 2]),
                    NewEvent(.checkpointInvalid, payload: ["checkpoint_id": "t#2"]),
                ])
        ])
        var configuration = bench.configuration(#"printf '%s' "$TASK_CONTEXT" > "$CONTEXT""#)
        configuration.pools[0].environment["CONTEXT"] = bench.dir.file("context.json")
        let dispatcher = Dispatcher(
            configuration: configuration, registry: bench.registry, launchers: [bench.launcher], clock: ContinuousClock(), paths: bench.paths)
        let outcome = try await dispatcher.run([(spec, try bench.registry.tasks(spec: "given-back"))])
        #expect(outcome.succeeded)
        let context = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: bench.dir.file("context.json"))))
        #expect(context["attempt"] == 1, "the interrupted attempt is given back")
        #expect(context["checkpoint"]?["checkpoint_id"] == "t#1", "the last checkpoint not found invalid")
    }

    @Test func recordsGoToTheFallbackJournalWhileTheRegistryIsLockedAndAreReplayed() async throws {
        let bench = try Bench(busyTimeout: .milliseconds(50))
        defer { bench.finish() }
        let spec = TaskSetSpec(name: "locked", tasks: (0..<6).map { i in task(TaskID("t\(i)"), i == 0 ? [] : [TaskID("t\(i - 1)")]) })
        try bench.registry.importTaskSet(spec, source: nil)
        let records = try bench.registry.tasks(spec: "locked")
        // Another writer holds the lock: the registry cannot be written.
        let lock = try WriteLock(path: bench.registry.path)
        // t3 waits for the test: so some records come after the lock is gone.
        #expect(mkfifo(bench.dir.file("gate"), 0o644) == 0)
        let script = #"if [ "$NECRO_TASK_ID" = t3 ]; then read line < "$GATE"; fi; echo working"#
        var configuration = bench.configuration(script)
        configuration.pools[0].environment["GATE"] = bench.dir.file("gate")
        let dispatcher = Dispatcher(
            configuration: configuration, registry: bench.registry, launchers: [bench.launcher], clock: ContinuousClock(),
            // Supervised, as `necro run` starts them.
            paths: .init(logs: bench.dir.file(".necro/logs"), work: bench.dir.file(".necro/work"), registry: bench.registry.path, status: bench.dir.file(".necro/status")))
        var updates = dispatcher.updates().makeAsyncIterator()
        let run = Task { try await dispatcher.run([(spec, records)]) }
        // Wait until three tasks finished while locked, then let the registry be written again.
        var completedWhileLocked = 0
        var t3Started = false
        while completedWhileLocked < 3 || !t3Started, let update = await next(&updates) {
            guard case .events(let batch) = update else { continue }
            completedWhileLocked += batch.filter { $0.type == .taskCompleted }.count
            t3Started = t3Started || batch.contains { $0.type == .runnerStarted && $0.taskID == "t3" }
        }
        #expect(FileManager.default.fileExists(atPath: bench.registry.path + ".fallback.jsonl"))
        #expect(dispatcher.hasUnreplayedRecords)
        // Were this dispatcher killed now, the next would find t3's runner (waiting at the gate)
        // from the journal: the registry's files and the journal, copied as they are, replayed.
        let copy = bench.dir.file("copy")
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        for suffix in ["", "-wal", ".fallback.jsonl"] where FileManager.default.fileExists(atPath: bench.registry.path + suffix) {
            try FileManager.default.copyItem(atPath: bench.registry.path + suffix, toPath: copy + "/registry.sqlite" + suffix)
        }
        let copied = try SQLiteRegistry(path: copy + "/registry.sqlite")
        #expect(try copied.runners(runningOnly: false).isEmpty, "the registry itself has no runner yet")
        try Dispatcher<ContinuousClock>.replayFallbackJournal(registryPath: copied.path, into: copied)
        let known = try copied.runners(runningOnly: true)
        #expect(known.map(\.task.id) == ["t3"], "the running runner, from the journal")
        #expect(known.first?.pid != nil && known.first?.processStartTime != nil && known.first?.status != nil, "with what recovery goes by")
        let all = try copied.runners(runningOnly: false)
        #expect(all.count == 4, "and the three that ended: \(all.map { ($0.id, $0.state) })")
        lock.release()
        release(bench.dir.file("gate"))
        let outcome = try await run.value
        #expect(outcome.succeeded)
        #expect(!FileManager.default.fileExists(atPath: bench.registry.path + ".fallback.jsonl"), "replayed, then emptied")
        let events = try bench.registry.events(EventQuery(spec: "locked"))
        for t in spec.tasks {
            let own = events.filter { $0.taskID == t.id }
            #expect(own.map(\.seq) == Array(1...Int64(own.count)), "gapless: \(t.id)")
            #expect(own.filter { $0.type == .taskCompleted }.count == 1, "\(t.id) completed once, no duplicate")
            #expect(own.map(\.type).firstIndex(of: .taskAssigned)! < own.map(\.type).firstIndex(of: .taskCompleted)!, "in order")
        }
        #expect(try bench.registry.tasks(spec: "locked").allSatisfy { $0.state == .done })
    }
}

/// Holds SQLite's write lock from another connection, on a thread of its own, until released.
final class WriteLock: Sendable {
    private let release_ = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    init(path: String) throws {
        let queue = try DatabaseQueue(path: path)
        let taken = DispatchSemaphore(value: 0)
        let (release_, done) = (self.release_, self.done)
        Thread {
            try? queue.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                taken.signal()
                release_.wait()
                try db.execute(sql: "ROLLBACK")
            }
            done.signal()
        }.start()
        taken.wait()
    }

    func release() {
        release_.signal()
        done.wait()
    }
}
