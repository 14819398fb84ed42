import Foundation
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroTesting
import NecroWorkspaces
import Testing

/// A dispatcher whose tasks run in git worktrees of a real repository.
private struct WorktreeBench {
    let dir: TemporaryDirectory
    let repo: GitRepository
    let registry: SQLiteRegistry
    let pool: RepoPool
    let launcher = LocalProcessLauncher(outputInterval: .zero)
    let slots: Int

    init(slots: Int) throws {
        dir = try TemporaryDirectory("worktrees")
        repo = try GitRepository(at: dir.file("repo"), files: ["README.md": "# Sample\n"])
        registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        self.slots = slots
        pool = try RepoPool(RepoPoolConfiguration(repository: repo.path, maxSlots: slots), slotCount: slots, defaultSlotsDirectory: dir.file(".necro/slots"))
    }

    func configuration(_ script: String, concurrency: Int = 4, attempts: Int = 3) -> DispatcherConfiguration {
        DispatcherConfiguration(
            retry: RetryPolicy(maxAttempts: attempts, initialDelay: .milliseconds(10), base: 2, maxDelay: .milliseconds(50)),
            pools: [
                PoolConfiguration(
                    name: "local", limits: PoolLimits(name: "local", maxConcurrency: concurrency),
                    command: CommandTemplate(["/bin/sh", "-c", script]), environment: ["LEDGER": dir.file("ledger")])
            ],
            repoPool: RepoPoolConfiguration(repository: repo.path, slotsDirectory: pool.slotsDirectory, maxSlots: slots))
    }

    func dispatcher<C: Clock>(_ configuration: DispatcherConfiguration, clock: C) -> Dispatcher<C> where C.Duration == Duration {
        Dispatcher(
            configuration: configuration, registry: registry, launchers: [launcher], clock: clock,
            paths: .init(logs: dir.file(".necro/logs"), work: dir.file(".necro/work"), registry: registry.path), workspaces: pool)
    }

    func run(_ spec: TaskSetSpec, _ configuration: DispatcherConfiguration) async throws -> RunOutcome {
        try registry.importTaskSet(spec, source: nil)
        return try await dispatcher(configuration, clock: ContinuousClock()).run([(spec, try registry.tasks(spec: spec.name))])
    }

    var ledger: [[String]] {
        ((try? String(contentsOfFile: dir.file("ledger"), encoding: .utf8)) ?? "").split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
    }

    func finish() {
        launcher.shutdown()
        dir.remove()
    }
}

private func task(_ id: TaskID, _ deps: [TaskID] = [], timeout: Int? = nil) -> TaskSpec {
    var spec = TaskSpec(id: id, title: "Task \(id)", dependencies: deps)
    spec.timeoutSeconds = timeout
    return spec
}

/// An agent that notes where it runs, writes and commits a file named after its task.
private let committingAgent = #"""
echo "start $NECRO_TASK_ID $(pwd) $(git rev-parse --abbrev-ref HEAD) $(git worktree list | wc -l) $(ls *.txt 2>/dev/null | wc -l)" >> "$LEDGER"
echo "$NECRO_TASK_ID" > "$NECRO_TASK_ID.txt"
git add -A && git -c user.name=agent -c user.email=agent@example.com commit -qm "work of $NECRO_TASK_ID"
sleep 0.2
echo "end $NECRO_TASK_ID $(pwd)" >> "$LEDGER"
"""#

@Suite struct WorktreeDispatchTests {
    @Test func eachRunningTaskHasItsOwnWorktreeAndBranchWithItsDependenciesWorkInIt() async throws {
        let bench = try WorktreeBench(slots: 2)
        defer { bench.finish() }
        let leaves: [TaskID] = ["a", "b", "c", "d", "e"]
        let spec = TaskSetSpec(name: "ws", tasks: leaves.map { task($0) } + [task("join", leaves)])
        let outcome = try await bench.run(spec, bench.configuration(committingAgent, concurrency: 4))
        #expect(outcome.succeeded)

        var running: [String: String] = [:]  // task → folder
        var most = 0
        for line in bench.ledger {
            if line[0] == "start" {
                let (id, folder, branch, worktrees) = (line[1], line[2], line[3], Int(line[4])!)
                #expect(!running.values.contains(folder), "\(id) shares \(folder) with a running task")
                #expect(folder.hasPrefix(bench.pool.slotsDirectory + "/slot-"))
                #expect(branch == "necro/ws/\(id)")
                #expect(worktrees <= bench.slots + 1, "at most max_slots worktrees besides the main one")
                running[id] = folder
                most = max(most, running.count)
            } else {
                running[line[1]] = nil
            }
        }
        #expect(most == 2, "max_slots limits runners even though the pool takes 4")
        let join = try #require(bench.ledger.first { $0[0] == "start" && $0[1] == "join" })
        #expect(join[5] == "5", "join starts with the five files of its dependencies")
        for leaf in leaves { #expect(bench.repo.show("necro/ws/join", "\(leaf).txt") == "\(leaf)\n") }
        // Slot and branch are on the task in the registry and in TaskAssigned.
        let record = try #require(try bench.registry.tasks(spec: "ws").first { $0.task.id == "join" })
        #expect(record.slot?.branch == "necro/ws/join" && record.slot?.path == join[2])
        let assigned = try #require(try bench.registry.events(EventQuery(task: "join")).first { $0.type == .taskAssigned })
        #expect(assigned.payload["slot_id"]?.stringValue == record.slot?.id && assigned.payload["slot_path"]?.stringValue == join[2])
        #expect(try bench.repo.worktrees().count == 3)
    }

    @Test func aMergeConflictFailsTheTaskWithTheFilesAndIsNotRetried() async throws {
        let bench = try WorktreeBench(slots: 2)
        defer { bench.finish() }
        let agent = #"echo "$NECRO_TASK_ID" > shared.txt; git add -A; git -c user.name=a -c user.email=a@x commit -qm "$NECRO_TASK_ID""#
        let spec = TaskSetSpec(name: "clash", tasks: [task("x"), task("y"), task("z", ["x", "y"]), task("after", ["z"])])
        let outcome = try await bench.run(spec, bench.configuration(agent, attempts: 3))
        #expect(!outcome.succeeded)
        let records = Dictionary(uniqueKeysWithValues: try bench.registry.tasks(spec: "clash").map { ($0.task.id, $0) })
        #expect(records["z"]?.state == .failed)
        #expect(records["z"]?.reason == "merge conflict with y (files: shared.txt)")
        #expect(records["z"]?.attempts == 1, "a conflict is not retried")
        #expect(records["after"]?.reason == "dependency z failed")
        let conflict = try #require(try bench.registry.events(EventQuery(task: "z")).first { $0.type == .slotMergeConflict })
        #expect(conflict.payload["dependency"] == "y" && conflict.payload["files"] == .array(["shared.txt"]))
    }

    @Test func aKilledAttemptsUncommittedWorkIsFoundUnderItsAttemptRef() async throws {
        let bench = try WorktreeBench(slots: 1)
        defer { bench.finish() }
        let clock = TestClock()
        let spec = TaskSetSpec(name: "kill", tasks: [task("k", timeout: 30)])
        try bench.registry.importTaskSet(spec, source: nil)
        let agent = #"echo "half of the work" > draft.txt; touch "$LEDGER"; exec sleep 600"#
        let dispatcher = bench.dispatcher(bench.configuration(agent, attempts: 1), clock: clock)
        var updates = dispatcher.updates().makeAsyncIterator()
        let run = Task { try await dispatcher.run([(spec, try bench.registry.tasks(spec: "kill"))]) }
        while let update = await next(&updates) {
            if case .events(let batch) = update, batch.contains(where: { e in e.type == .runnerStarted }) { break }
        }
        while !FileManager.default.fileExists(atPath: bench.dir.file("ledger")) { await Task.yield() }
        clock.advance(by: .seconds(30))
        let outcome = try await run.value
        #expect(!outcome.succeeded)
        let events = try bench.registry.events(EventQuery(task: "k"))
        #expect(events.first { $0.type == .runnerTimedOut }?.payload["reason"] == "timed out after 30 s")
        let saved = try #require(events.first { $0.type == .attemptSaved })
        let ref = try #require(saved.payload["ref"]?.stringValue)
        #expect(ref.hasPrefix("refs/necro/attempts/kill/k/1"))
        #expect(bench.repo.show(ref, "draft.txt") == "half of the work\n")
        #expect(bench.repo.show("necro/kill/k", "draft.txt") == nil, "not on the task's branch")
        #expect(events.map(\.type).contains(.slotReleased))
        let slot = try #require(try bench.registry.tasks(spec: "kill").first?.slot)
        #expect(try bench.repo.git("status", "--porcelain", in: slot.path).isEmpty, "the slot is clean for the next task")
    }

    @Test func aSlotThatCannotBePreparedIsAFailedAttemptWithTheReasonLogged() async throws {
        let bench = try WorktreeBench(slots: 1)
        defer { bench.finish() }
        // A stale lock on the task's branch (left by a crashed git, say): git cannot create it.
        try FileManager.default.createDirectory(atPath: bench.repo.path + "/.git/refs/heads/necro/locked", withIntermediateDirectories: true)
        try "".write(toFile: bench.repo.path + "/.git/refs/heads/necro/locked/a.lock", atomically: true, encoding: .utf8)
        let spec = TaskSetSpec(name: "locked", tasks: [task("a"), task("b")])
        let outcome = try await bench.run(spec, bench.configuration("true", attempts: 2))
        #expect(!outcome.succeeded)
        let records = Dictionary(uniqueKeysWithValues: try bench.registry.tasks(spec: "locked").map { ($0.task.id, $0) })
        #expect(records["a"]?.state == .failed && records["a"]?.attempts == 2)
        #expect(records["a"]?.reason?.hasPrefix("launch failed: slot allocation failed: ") == true, "\(records["a"]?.reason ?? "")")
        let failures = try bench.registry.events(EventQuery(task: "a")).filter { $0.type == .slotAllocationFailed }
        #expect(failures.count == 2, "each failed allocation is logged")
        #expect(try bench.registry.count(of: .slotAllocationFailed) == 2, "and counted (necro status shows it)")
        #expect(failures.first?.payload["reason"]?.stringValue?.contains("a.lock") == true)
        #expect(records["b"]?.state == .done, "the slot is usable by the next task")
    }
}
