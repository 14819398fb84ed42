import Foundation
import GRDB
import NecroCore
import NecroTesting
import Synchronization
import Testing

@testable import NecroRegistry

private let example = "\(repositoryRoot)/Examples/chat-app"

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let seconds = Mutex<Double>(1_800_000_000)
    var now: Timestamp { Timestamp(secondsSince1970: seconds.withLock { $0 }) }
    func advance(by delta: Double) { seconds.withLock { $0 += delta } }
}

private func openRegistry(_ dir: TemporaryDirectory, clock: ManualClock = ManualClock()) throws -> SQLiteRegistry {
    try SQLiteRegistry(path: dir.file("registry.sqlite"), now: { clock.now })
}

private func states(_ registry: SQLiteRegistry, _ spec: String = "chat-app") throws -> [TaskID: TaskState] {
    Dictionary(uniqueKeysWithValues: try registry.tasks(spec: spec).map { ($0.task.id, $0.state) })
}

private func simpleSpec(_ tasks: [TaskSpec], name: String = "s") -> TaskSetSpec {
    TaskSetSpec(name: name, tasks: tasks)
}

@Suite struct SQLiteRegistryTests {
    @Test func importSetsInitialStatesAndRecordsOneEventPerTask() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        let spec = try SpecLoader.load(path: "\(example)/tasks.md").spec
        let report = try registry.importTaskSet(spec, source: "tasks.md")
        #expect(report.created && report.version == 1 && report.added.count == 17)
        let s = try states(registry)
        #expect(s["1"] == .done, "marked [x]")
        #expect(s["2.1"] == .ready, "its only dependency is done")
        #expect(s["2.2"] == .blocked)
        #expect(s["2"] == .blocked, "a group waits on its subtasks")
        #expect(try registry.tasks(spec: "chat-app").map(\.task.id) == spec.tasks.map(\.id), "declaration order")
        let events = try registry.events(EventQuery(spec: "chat-app"))
        #expect(events.filter { $0.type == .taskImported }.count == 17)
        #expect(events.filter { $0.type == .taskReady }.map(\.taskID) == ["2.1"])
        #expect(try registry.taskSets().map(\.version) == [1])
    }

    @Test func eventsOfOneTypeComeOldestOrNewestFirst() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        try registry.importTaskSet(TaskSetSpec(name: "s", tasks: [TaskSpec(id: "a", title: "A")]), source: nil)
        for step in 1...3 {
            try registry.apply([
                Transition(spec: "s", task: "a", events: [
                    NewEvent(.checkpointCommit, payload: ["step": .int(step)]), NewEvent(EventType("progress"), payload: ["step": .int(step)]),
                ])
            ])
        }
        let checkpoints = try registry.events(EventQuery(spec: "s", task: "a", type: .checkpointCommit))
        #expect(checkpoints.map(\.type) == [.checkpointCommit, .checkpointCommit, .checkpointCommit])
        #expect(checkpoints.map { $0.payload["step"] } == [1, 2, 3])
        let newest = try registry.events(EventQuery(spec: "s", task: "a", type: .checkpointCommit, limit: 1, newestFirst: true))
        #expect(newest.map { $0.payload["step"] } == [3])
        #expect(try registry.events(EventQuery(spec: "s", newestFirst: true)).map(\.id) == registry.events(EventQuery(spec: "s")).map(\.id).reversed())
    }

    @Test func theRegistryIsInWALMode() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        let mode = try registry.pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") }
        #expect(mode == "wal")
    }

    @Test func reimportingTheSameSpecChangesNothing() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        let spec = try SpecLoader.load(path: "\(example)/tasks.md").spec
        try registry.importTaskSet(spec, source: nil)
        let before = try registry.events(EventQuery())
        let report = try registry.importTaskSet(spec, source: nil)
        #expect(report.version == 1 && !report.created && report.unchanged == 17)
        #expect(try registry.events(EventQuery()) == before)
    }

    @Test func reimportUpdatesWhatChangedAndKeepsTheRest() throws {
        let dir = try TemporaryDirectory()
        let clock = ManualClock()
        let registry = try openRegistry(dir, clock: clock)
        let v1 = simpleSpec([
            TaskSpec(id: "a", title: "A"), TaskSpec(id: "b", title: "B", dependencies: ["a"]),
            TaskSpec(id: "c", title: "C"), TaskSpec(id: "gone", title: "Old"),
        ])
        try registry.importTaskSet(v1, source: nil)
        // Some history: a runs and is done.
        try registry.apply([
            Transition(spec: "s", task: "a", expected: [.ready], to: .running, attempts: 1, events: [NewEvent(.taskAssigned)]),
        ])
        clock.advance(by: 5)
        try registry.apply([
            Transition(spec: "s", task: "a", expected: [.running], to: .done, events: [NewEvent(.taskCompleted)]),
            Transition(spec: "s", task: "b", expected: [.blocked], to: .ready, events: [NewEvent(.taskReady)]),
        ])
        let aEvents = try registry.events(EventQuery(task: "a"))

        var v2 = v1
        v2.tasks[1].description = "B, in more detail"  // changed (a new title would make it a new task)
        v2.tasks[2].dependencies = ["b"]  // c now waits on b: ready -> blocked
        v2.tasks.removeLast()  // removed
        v2.tasks.append(TaskSpec(id: "d", title: "D", dependencies: ["a"]))  // added, a is done
        clock.advance(by: 5)
        let report = try registry.importTaskSet(v2, source: nil)
        #expect(report.version == 2)
        #expect(report.added == ["d"] && report.changed == ["b", "c"] && report.removed == ["gone"] && report.unchanged == 1)

        let records = Dictionary(uniqueKeysWithValues: try registry.tasks(spec: "s").map { ($0.task.id, $0) })
        #expect(records.keys.sorted() == ["a", "b", "c", "d"], "the removed task is gone from the spec")
        #expect(records["a"]?.state == .done && records["a"]?.attempts == 1, "unchanged: state kept")
        #expect(records["b"]?.state == .ready && records["b"]?.task.description == "B, in more detail", "changed: new definition, state kept")
        #expect(records["c"]?.state == .blocked)
        #expect(records["d"]?.state == .ready)
        #expect(try registry.events(EventQuery(task: "a")) == aEvents, "unchanged task: events untouched")
        let bEvents = try registry.events(EventQuery(task: "b"))
        #expect(bEvents.map(\.type) == [.taskImported, .taskReady, .taskSpecChanged])
        #expect(bEvents.last?.payload["fields"] == ["description"])
        #expect(bEvents.map(\.seq) == [1, 2, 3])
        #expect(try registry.events(EventQuery(task: "c")).map(\.type) == [.taskImported, .taskReady, .taskSpecChanged, .taskBlocked])
        #expect(try registry.events(EventQuery(task: "gone")).last?.type == .taskRemovedFromSpec)
    }

    @Test func markingATaskDoneInTheSpecUnblocksItsDependents() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        var spec = simpleSpec([
            TaskSpec(id: "g", title: "G", isGroup: true), TaskSpec(id: "g.1", title: "G1", parent: "g"),
            TaskSpec(id: "after", title: "After", dependencies: ["g"]),
        ])
        try registry.importTaskSet(spec, source: nil)
        #expect(try states(registry, "s") == ["g": .blocked, "g.1": .ready, "after": .blocked])
        spec.tasks[1].markedDone = true
        try registry.importTaskSet(spec, source: nil)
        #expect(try states(registry, "s") == ["g": .done, "g.1": .done, "after": .ready])
    }

    @Test func importedWithItsOptionalTasksASkippedTaskWaitsForItsTurnAgainAndTheChoiceIsKept() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        var spec = simpleSpec([
            TaskSpec(id: "a", title: "A"), TaskSpec(id: "b", title: "B", dependencies: ["a"], optional: true),
            TaskSpec(id: "c", title: "C", dependencies: ["b"]),
        ])
        try registry.importTaskSet(spec, source: nil)
        #expect(try registry.taskSets().map(\.runOptional) == [false])
        try registry.apply([
            Transition(spec: "s", task: "a", to: .done, events: []), Transition(spec: "s", task: "b", to: .skipped, events: []),
            Transition(spec: "s", task: "c", to: .done, events: []),
        ])
        try registry.importTaskSet(spec, source: nil)
        #expect(try states(registry, "s") == ["a": .done, "b": .skipped, "c": .done], "skipped stays skipped")
        spec.runOptional = true
        let report = try registry.importTaskSet(spec, source: nil)
        #expect(report.version == 2, "running the optional tasks is a change")
        #expect(try states(registry, "s") == ["a": .done, "b": .ready, "c": .done], "what ran does not run again")
        #expect(try registry.taskSets().map(\.runOptional) == [true])
        #expect(try registry.taskSetSpecs().map(\.runOptional) == [true])
        #expect(try registry.events(EventQuery(task: "b")).map(\.type).suffix(2) == [.taskBlocked, .taskReady])
    }

    @Test func aTaskWhoseTitleChangedUnderTheSameIdIsANewTaskAndTheOldOneKeepsItsHistoryAside() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        try registry.importTaskSet(simpleSpec([TaskSpec(id: "1", title: "Schema"), TaskSpec(id: "2", title: "Service")]), source: nil)
        try registry.apply([
            Transition(spec: "s", task: "2", to: .done, attempts: 1, events: [NewEvent(.taskCompleted, payload: ["runner_id": "r"])])
        ])
        let report = try registry.importTaskSet(
            simpleSpec([TaskSpec(id: "1", title: "Schema"), TaskSpec(id: "2", title: "Billing")]), source: nil)
        #expect(report.added == ["2"] && report.movedAside == [ReimportPlan.Rename(from: "2", to: "2@v2")])
        let records = Dictionary(uniqueKeysWithValues: try registry.tasks(spec: "s").map { ($0.task.id, $0) })
        #expect(records["2"]?.state == .ready && records["2"]?.attempts == 0, "nothing inherited")
        let aside = try registry.read { db in try Row.fetchOne(db, sql: "SELECT title, state, removed FROM tasks WHERE spec = 's' AND id = '2@v2'") }
        let title: String? = aside?["title"]
        let state: String? = aside?["state"]
        let removed: Bool? = aside?["removed"]
        #expect(title == "Service" && state == "done" && removed == true)
        #expect(try registry.events(EventQuery(task: "2")).map(\.type) == [.taskImported, .taskReady])
        #expect(try registry.events(EventQuery(task: "2@v2")).map(\.type).contains(.taskCompleted), "its history went with it")
        #expect(try registry.tasks(spec: "s").map(\.task.id) == ["1", "2"], "the old one is out of the list")
    }

    @Test func aDependentOfASkippedTaskIsReadyOnImport() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        let spec = simpleSpec([TaskSpec(id: "b", title: "B", optional: true), TaskSpec(id: "c", title: "C", dependencies: ["b"])])
        try registry.importTaskSet(spec, source: nil)
        try registry.apply([Transition(spec: "s", task: "b", to: .skipped, events: [])])
        var changed = spec
        changed.tasks[1].title = "C, renamed"
        try registry.importTaskSet(changed, source: nil)
        #expect(try states(registry, "s") == ["b": .skipped, "c": .ready])
    }

    @Test func theRegistryRefusesAnInvalidSpecEvenWithoutTheLoader() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        let cyclic = simpleSpec([TaskSpec(id: "a", title: "A", dependencies: ["b"]), TaskSpec(id: "b", title: "B", dependencies: ["a"])])
        do {
            try registry.importTaskSet(cyclic, source: nil)
            Issue.record("a cyclic spec must be refused")
        } catch let error as RegistryError {
            #expect(error.code == .invalidSpec)
        }
        #expect(try registry.taskSets().isEmpty)
        #expect(try registry.events(EventQuery()).isEmpty)
    }

    @Test func aTransitionBatchIsAllOrNothing() throws {
        let dir = try TemporaryDirectory()
        let registry = try openRegistry(dir)
        try registry.importTaskSet(simpleSpec([TaskSpec(id: "a", title: "A"), TaskSpec(id: "b", title: "B")]), source: nil)
        let before = try registry.events(EventQuery())
        #expect(throws: RegistryError.self) {
            try registry.apply([
                Transition(spec: "s", task: "a", expected: [.ready], to: .running, events: [NewEvent(.taskAssigned)]),
                Transition(spec: "s", task: "b", expected: [.running], to: .done, events: [NewEvent(.taskCompleted)]),
            ])
        }
        #expect(try states(registry, "s") == ["a": .ready, "b": .ready], "the first transition was rolled back")
        #expect(try registry.events(EventQuery()) == before, "and so were its events")
        do {
            try registry.apply([Transition(spec: "s", task: "nope", to: .done)])
            Issue.record("an unknown task must be refused")
        } catch let error as RegistryError {
            #expect(error.code == .unknownTask)
        }
    }

    @Test func transitionWritesStateAttemptsReasonAndEventsWithTheClocksTime() throws {
        let dir = try TemporaryDirectory()
        let clock = ManualClock()
        let registry = try openRegistry(dir, clock: clock)
        try registry.importTaskSet(simpleSpec([TaskSpec(id: "a", title: "A")]), source: nil)
        clock.advance(by: 42)
        let written = try registry.apply([
            Transition(
                spec: "s", task: "a", to: .failed, attempts: 3, reason: "exit code 1",
                events: [
                    NewEvent(.runnerFinished, actor: "dispatcher", spanID: "main", phase: "executing", payload: ["exit_code": 1]),
                    NewEvent(.taskFailed, payload: ["retry_count": 3]),
                ]),
            Transition(spec: "s", task: nil, events: [NewEvent(.dispatcherStopped)]),
        ])
        #expect(written.map(\.seq) == [3, 4, 1], "per task: a continues after TaskImported and TaskReady; the spec-level stream starts at 1")
        #expect(written.allSatisfy { $0.timestamp == clock.now })
        let record = try #require(try registry.tasks(spec: "s").first)
        #expect(record.state == .failed && record.attempts == 3 && record.reason == "exit code 1")
        #expect(record.updatedAt == clock.now)
        let read = try registry.events(EventQuery(task: "a", limit: 10))
        #expect(read.suffix(2) == written.prefix(2))
        #expect(read.last?.payload["retry_count"] == 3)
        #expect(try registry.events(EventQuery(after: written[0].id)).map(\.type) == [.taskFailed, .dispatcherStopped])
        #expect(try registry.events(EventQuery(limit: 1)).count == 1)
    }

    @Test func aWriterThatKnowsATasksSeqFindsAnotherWritersEventsAndNumbersOnWithoutAGap() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let first = try openRegistry(dir)
        try first.importTaskSet(simpleSpec([TaskSpec(id: "a", title: "A")]), source: nil)
        let second = try openRegistry(dir)
        func append(_ registry: SQLiteRegistry, _ n: Int) throws -> Int64 {
            try registry.apply([Transition(spec: "s", task: "a", events: [NewEvent(.leaseRenewed, payload: ["n": .int(n)])])])[0].seq
        }
        // The first registry keeps the next seq it would use; the second writes meanwhile.
        #expect(try append(first, 1) == 3, "after TaskImported and TaskReady")
        #expect(try append(second, 2) == 4)
        #expect(try append(first, 3) == 5, "the first's known seq was taken: it reads again and goes on")
        #expect(try append(first, 4) == 6)
        // A transaction that fails is forgotten with what it counted.
        #expect(throws: RegistryError.self) {
            try first.apply([
                Transition(spec: "s", task: "a", events: [NewEvent(.leaseRenewed)]),
                Transition(spec: "s", task: "missing", events: [NewEvent(.leaseRenewed)]),
            ])
        }
        #expect(try append(first, 5) == 7)
        #expect(try first.events(EventQuery(task: "a")).map(\.seq) == Array(1...7))
    }

    @Test func perTaskSeqStaysGaplessUnderConcurrentWriters() async throws {
        let dir = try TemporaryDirectory()
        let taskIDs = (0..<6).map { TaskID("t\($0)") }
        let first = try openRegistry(dir)
        try first.importTaskSet(simpleSpec(taskIDs.map { TaskSpec(id: $0, title: "T") }), source: nil)
        // Three registries on one file: three connection pools, as three processes would have.
        let registries = [first, try openRegistry(dir), try openRegistry(dir)]
        let writers = 12
        let eventsPerWriter = 40
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                let registry = registries[writer % registries.count]
                group.addTask {
                    for n in 0..<eventsPerWriter {
                        // Every writer touches every task, so writers contend on each task's seq.
                        let task = taskIDs[(writer + n) % taskIDs.count]
                        try registry.apply([
                            Transition(
                                spec: "s", task: task,
                                events: [NewEvent(.leaseRenewed, actor: "w\(writer)", payload: ["n": .int(n)])])
                        ])
                    }
                }
            }
            try await group.waitForAll()
        }
        let all = try first.events(EventQuery())
        #expect(all.count == 2 * taskIDs.count + writers * eventsPerWriter, "TaskImported and TaskReady per task, then the writers'")
        #expect(all.map(\.id) == all.map(\.id).sorted() && Set(all.map(\.id)).count == all.count)
        for task in taskIDs {
            let seqs = all.filter { $0.taskID == task }.map(\.seq)
            #expect(seqs == Array(1...Int64(seqs.count)), "task \(task): \(seqs)")
        }
    }
}
