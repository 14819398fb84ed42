import Foundation
import GRDB
import Synchronization
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

@testable import NecroDispatcher

/// The dispatcher's write-ahead journal and the thread that takes its lines into the registry.
@Suite struct JournalTests {
    /// A turn with every field a line carries, text that needs escaping included.
    static let turn = JournalBatch(
        id: "generation-000000000001",
        transitions: [
            Transition(
                spec: "s", task: "a", expected: [.ready, .blocked], to: .running, attempts: 2,
                reason: .some("waits on \"b\"\nline 2\t— ü \\ /"),
                slot: TaskSlot(id: "slot-1", path: "/work/slot \"1\"", branch: "necro/s/a"),
                events: [
                    NewEvent(
                        .taskAssigned, actor: "dispatcher", spanID: "span-1", parentSpanID: "span-0", phase: "start",
                        payload: ["runner_id": "r1", "n": 3, "ok": true, "nested": .object(["x": .array([1, 2.5, .null, "\u{1}"])])]),
                    NewEvent(.runnerStarted),
                ]),
            Transition(spec: "s", task: "b", reason: .some(nil)),
            Transition(spec: "s", task: nil, events: [NewEvent(EventType("DispatcherStarted"), payload: [:])]),
        ],
        runners: [
            RunnerRecord(
                id: RunnerID("r1"), task: TaskKey(spec: "s", id: "a"), attempt: 2, pool: "local", state: .exited, pid: 4242,
                processStartTime: 18_446_744_073_709_551_000, logPath: "/logs/r1.log", status: StatusRecord(path: "/status/t", offset: 64),
                startedAt: Timestamp(secondsSince1970: 1_763_812_345.25), lastHeartbeat: Timestamp(secondsSince1970: 1_763_812_346.5),
                endedAt: Timestamp(secondsSince1970: 1_763_812_347.125), exit: "exit code 1"),
            RunnerRecord(id: RunnerID("r2"), task: TaskKey(spec: "s", id: "b"), attempt: 1, pool: "local", startedAt: Timestamp(secondsSince1970: 1)),
        ])

    @Test func aLineReadsBackAsTheTurnItWasWrittenFrom() throws {
        let line = Self.turn.jsonLine(reason: "turn")
        #expect(!line.contains(10), "one line")
        let entry = try JSONDecoder().decode(EventJournal.Entry.self, from: Data(line))
        #expect(entry.id == Self.turn.id)
        #expect(entry.reason == "turn")
        #expect(entry.transitions.map(\.transition) == Self.turn.transitions)
        #expect((entry.runners ?? []).map(\.record) == Self.turn.runners)
    }
}

/// A registry with one task, a journal beside it and a writer between them, in a folder of its own.
private final class Recording: Sendable {
    let dir: TemporaryDirectory
    let registry: SQLiteRegistry
    let journal: EventJournal
    let recorded = Log<EventRecord>()
    let notRecorded = Log<Transition>()
    let freed = Log<StatusRecord>()
    /// The registry's transactions that recorded turns (one call of the observers each): the
    /// events of each.
    let transactions = Log<Int>()
    let writer: RecordWriter

    init(journalLimit: Int = 8 << 20, gatherInterval: Duration = .milliseconds(5)) throws {
        dir = try TemporaryDirectory("journal")
        registry = try SQLiteRegistry(path: dir.file("registry.sqlite"), busyTimeout: .milliseconds(20))
        try registry.importTaskSet(TaskSetSpec(name: "s", tasks: [TaskSpec(id: "a", title: "A")]), source: nil)
        journal = EventJournal(registry: registry.path)
        let (recorded, notRecorded, freed, transactions) = (self.recorded, self.notRecorded, self.freed, self.transactions)
        writer = RecordWriter(
            registry: registry, journal: journal,
            observers: .init(
                recorded: { events, records in
                    transactions.items.withLock { $0.append(events.count) }
                    recorded.items.withLock { $0 += events }
                    freed.items.withLock { $0 += records }
                },
                notRecorded: { transitions in notRecorded.items.withLock { $0 += transitions } }),
            retryInterval: .milliseconds(20), gatherInterval: gatherInterval, journalLimit: journalLimit)
    }

    /// Journals a turn with one event on task a, as the dispatcher's loop does; `done`, if given,
    /// waits on it.
    @discardableResult
    func turn(_ n: Int, done: (@Sendable () -> Void)? = nil) -> Bool {
        journal.append(
            [Transition(spec: "s", task: "a", events: [NewEvent(EventType("Step"), payload: ["n": .int(n)])])], runners: [], reason: "turn"
        ) { batch in
            writer.enqueue(.init(batch: batch, statusRecords: [StatusRecord(path: "table", offset: n)], done: done.map { [$0] } ?? []))
        }
    }

    func steps() throws -> [Int] {
        try registry.events(EventQuery(spec: "s", task: "a")).compactMap { if case .int(let n)? = $0.payload["n"] { n } else { nil } }
    }

    func replayMarks() throws -> Int {
        try DatabaseQueue(path: registry.path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM journal_replays") ?? 0 }
    }

    func finish() {
        writer.finish()
        journal.close()
        dir.remove()
    }
}

extension JournalTests {
    @Test func turnsReachTheRegistryInOrderAndEachLetsGoWhoWaitsOnlyOnceItIsThere() throws {
        let r = try Recording()
        defer { r.finish() }
        let seenWhenDone = Mutex<[Int: Int]>([:])
        for n in 1...200 {
            r.turn(n) { [registry = r.registry] in
                let count = (try? registry.events(EventQuery(spec: "s", task: "a")).count) ?? -1
                seenWhenDone.withLock { $0[n] = count }
            }
        }
        r.writer.flush()
        #expect(try r.steps() == Array(1...200))
        let seen = seenWhenDone.withLock { $0 }
        #expect(seen.count == 200)
        #expect(seen.allSatisfy { n, count in count >= n }, "each turn answered once the registry had it")
        #expect(r.recorded.items.withLock { $0.map(\.payload["n"]) } == (1...200).map { .int($0) }, "observers told each event once, in order")
        #expect(r.recorded.items.withLock { $0.allSatisfy { $0.id > 0 } })
        #expect(r.freed.items.withLock { $0.map(\.offset) } == Array(1...200), "status records freed once recorded")
        #expect(r.notRecorded.items.withLock { $0.isEmpty })
        // All in: the journal is emptied; the marks of its lines go with the next transaction.
        #expect(r.journal.size == 0)
        #expect(!r.journal.hasPending)
        r.turn(201)
        r.writer.flush()
        #expect(try r.replayMarks() == 1, "only the line the journal still holds is marked")
    }

    @Test func whileTheRegistryIsLockedTurnsWaitInTheJournalAreToldOnceAndGoInAfterwards() throws {
        let r = try Recording()
        defer { r.finish() }
        let lock = try WriteLock(path: r.registry.path)
        let answered = Mutex(0)
        for n in 1...3 { r.turn(n) { answered.withLock { $0 += 1 } } }
        r.writer.flush()
        #expect(r.notRecorded.items.withLock { $0.count } == 3, "each told once as not recorded")
        #expect(answered.withLock { $0 } == 0, "nobody let go before the registry has the turn")
        #expect(r.journal.hasPending)
        // A dispatcher killed now leaves its turns to the next: the journal as it is, replayed.
        let copy = r.dir.file("copy.sqlite")
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: r.registry.path + suffix) {
            try FileManager.default.copyItem(atPath: r.registry.path + suffix, toPath: copy + suffix)
        }
        try FileManager.default.copyItem(atPath: r.journal.path, toPath: copy + ".fallback.jsonl")
        let copied = try SQLiteRegistry(path: copy)
        try Dispatcher<ContinuousClock>.replayFallbackJournal(registryPath: copy, into: copied)
        #expect(try copied.events(EventQuery(spec: "s", task: "a")).compactMap { $0.payload["n"] } == [1, 2, 3])
        lock.release()
        r.turn(4) { answered.withLock { $0 += 1 } }
        // Tried again every retry interval, or with the next turn.
        try waitUntil { (try? r.steps()) == [1, 2, 3, 4] }
        r.writer.flush()
        #expect(answered.withLock { $0 } == 4)
        #expect(r.notRecorded.items.withLock { $0.count } == 3, "not told twice")
        #expect(r.recorded.items.withLock { $0.map(\.payload["n"]) } == [4], "the turns told before are not told again")
        #expect(r.journal.size == 0)
    }

    @Test func pastItsLimitTheJournalIsEmptiedEvenWhileTurnsKeepComing() throws {
        let r = try Recording(journalLimit: 0)
        defer { r.finish() }
        // Turns without a pause: the registry never has every line at once, unless the writer takes
        // in the rest with the journal held.
        var emptied = 0
        var turns = 0
        var last = 0
        while emptied < 2 && turns < 50_000 {
            turns += 1
            r.turn(turns)
            let size = r.journal.size
            if size < last { emptied += 1 }
            last = size
        }
        r.writer.flush()
        #expect(emptied == 2, "emptied while turns kept coming")
        #expect(try r.steps() == Array(1...turns))
        #expect(r.journal.size == 0)
    }

    @Test func turnsNobodyWaitsOnShareATransactionAndOneSomebodyWaitsOnGoesInAtOnce() throws {
        // Gathered for an hour: only a waiter, a flush or the end can take them in.
        let r = try Recording(gatherInterval: .seconds(3600))
        defer {
            r.journal.close()
            r.dir.remove()
        }
        for n in 1...3 { r.turn(n) }
        #expect(try r.steps().isEmpty, "turns nobody waits on are gathered")
        let answered = DispatchSemaphore(value: 0)
        r.turn(4) { answered.signal() }
        #expect(answered.wait(timeout: .now() + 10) == .success, "a turn somebody waits on goes in at once")
        #expect(try r.steps() == [1, 2, 3, 4])
        #expect(r.transactions.items.withLock { $0 } == [4], "with the turns gathered before it, in one transaction")
        r.turn(5)
        r.writer.flush()
        #expect(try r.steps() == [1, 2, 3, 4, 5], "a flush takes in what is gathered")
        r.turn(6)
        r.writer.finish()  // (the writer's own: `finish()` would stop it twice)
        #expect(try r.steps() == Array(1...6), "so does the end")
        #expect(r.transactions.items.withLock { $0 } == [4, 1, 1])
        #expect(r.journal.size == 0)
    }

    @Test func aJournalIsEmptiedOnlyWhenTheRegistryHasEveryLineUnlessTheRestIsTakenInFirst() throws {
        let dir = try TemporaryDirectory("journal")
        defer { dir.remove() }
        let journal = EventJournal(path: dir.file("journal.jsonl"))
        defer { journal.close() }
        var ids: [String] = []
        for _ in 1...3 { #expect(journal.append([], runners: [], reason: "turn") { ids.append($0.id) }) }
        #expect(ids == ids.sorted() && Set(ids).count == 3)
        #expect(journal.empty(ifHolding: 2) == nil, "a line is not in the registry yet")
        #expect(journal.size > 0)
        let taken = Mutex(false)
        #expect(journal.empty(ifHolding: 2) { count in taken.withLock { $0 = true }; return count + 1 } == ids[0]...ids[2])
        #expect(taken.withLock { $0 })
        #expect(journal.size == 0 && !journal.hasPending)
        #expect((try? FileManager.default.attributesOfItem(atPath: journal.path)[.size] as? Int) == 0)
    }
}

/// What observers were told, in order.
private final class Log<Item: Sendable>: Sendable {
    let items = Mutex<[Item]>([])
}

/// Waits, up to ten seconds, until `condition` holds.
private func waitUntil(_ condition: () -> Bool) throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw CancellationError() }
        Thread.sleep(forTimeInterval: 0.005)
    }
}
