import Foundation
import GRDB
public import NecroCore
import Synchronization

/// The registry in one SQLite file (WAL mode), safe to share between threads and processes.
public final class SQLiteRegistry: Registry, Sendable {
    public let path: String
    let pool: DatabasePool
    /// Task definitions decoded so far, by their stored text.
    private let definitions = Mutex<[String: TaskSpec]>([:])
    /// Each task's next event seq, as this registry last wrote it (see `appending`).
    let knownSeqs = Mutex<[EventAppender.SeqKey: Int64]>([:])
    let now: @Sendable () -> Timestamp

    /// Opens (creating if needed) the registry at `path` and brings its schema up to date.
    /// - Parameters:
    ///   - now: the clock that stamps events and updates.
    ///   - busyTimeout: how long a write waits for another writer's lock before failing.
    ///   - readOnly: only read it: not a byte of the file changes (for dry runs).
    public init(
        path: String, busyTimeout: Duration = .seconds(30), readOnly: Bool = false,
        now: @escaping @Sendable () -> Timestamp = SQLiteRegistry.systemNow
    ) throws {
        self.path = path
        self.now = now
        do {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty && !readOnly {
                do { try PrivateFiles.makeFolder(directory) } catch { throw RegistryError(.storage, error.message) }
            }
            // The user's alone (SQLite gives its -wal and -shm files the same mode).
            if !readOnly {
                let file = open(path, O_RDWR | O_CREAT | O_CLOEXEC, PrivateFiles.fileMode)
                if file >= 0 { close(file) }
            }
            var configuration = Configuration()
            configuration.readonly = readOnly
            configuration.busyMode = .timeout(busyTimeout.seconds)
            configuration.foreignKeysEnabled = true
            configuration.prepareDatabase { db in
                // WAL with NORMAL sync: every commit survives a crash of the process (kill -9); only a
                // power loss may take the last commits back. FULL would fsync each commit.
                if !readOnly { try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            }
            pool = try DatabasePool(path: path, configuration: configuration)
            if !readOnly {
                try RegistrySchema.migrator.migrate(pool)
            } else if try !pool.read({ try RegistrySchema.migrator.hasCompletedMigrations($0) }) {
                throw RegistryError(.storage, "registry \(path) was written by an earlier necro: open it once without --dry-run")
            }
        } catch let error as DatabaseError {
            throw RegistryError(.storage, "cannot open registry \(path): \(error.message ?? "\(error)")")
        } catch {
            throw RegistryError(.storage, "cannot open registry \(path): \(error.localizedDescription)")
        }
    }

    public static let systemNow: @Sendable () -> Timestamp = {
        Timestamp(secondsSince1970: Date().timeIntervalSince1970)
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.write(body)
        } catch let error as DatabaseError {
            throw RegistryError(.storage, "registry \(path): \(error.message ?? "\(error)")")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.read(body)
        } catch let error as DatabaseError {
            throw RegistryError(.storage, "registry \(path): \(error.message ?? "\(error)")")
        }
    }

    // MARK: Reading

    public func taskSets() throws -> [TaskSetRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM tasksets ORDER BY name").map { row in
                TaskSetRecord(
                    name: row["name"], version: row["version"], weight: row["weight"], source: row["source"],
                    importedAt: Timestamp(secondsSince1970: row["imported_at"]), runOptional: row["run_optional"])
            }
        }
    }

    public func tasks(spec: String) throws -> [TaskRecord] {
        try tasks(TaskFilter(spec: spec))
    }

    /// The tasks that pass `filter`, by taskset name, then in declaration order; the filter is
    /// applied by SQLite, so only the tasks returned are read.
    public func tasks(_ filter: TaskFilter) throws -> [TaskRecord] {
        // Columns by position (a lookup by name folds its case each time).
        var sql = "SELECT spec, definition, state, attempts, reason, updated_at, slot_id, slot_path, branch FROM tasks WHERE removed = 0"
        var arguments: StatementArguments = []
        if let spec = filter.spec {
            sql += " AND spec = ?"
            arguments += [spec]
        }
        if let states = filter.states {
            sql += " AND state IN (\(states.map { "'\($0.rawValue)'" }.sorted().joined(separator: ", ")))"
        }
        if let skill = filter.skill {
            sql += " AND required_skill = ?"
            arguments += [skill]
        }
        sql += " ORDER BY spec, position"
        if let limit = filter.limit { sql += " LIMIT \(max(0, limit))" }
        return try read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                let spec: String = row[0]
                var record = TaskRecord(
                    spec: spec, task: try definition(row[1]), state: TaskState(rawValue: row[2]) ?? .blocked,
                    attempts: row[3], reason: row[4], updatedAt: Timestamp(secondsSince1970: row[5]))
                if let id: String = row[6], let path: String = row[7], let branch: String = row[8] {
                    record.slot = TaskSlot(id: id, path: path, branch: branch)
                }
                return record
            }
        }
    }

    /// A task's definition, decoded once per distinct text (definitions change only on import;
    /// every read of a task list would decode them all again).
    private func definition(_ text: String) throws -> TaskSpec {
        if let known = definitions.withLock({ $0[text] }) { return known }
        let task = try JSONDecoder().decode(TaskSpec.self, from: Data(text.utf8))
        definitions.withLock { cache in
            if cache.count >= 50_000 { cache.removeAll() }  // a bound; what is dropped is decoded again
            cache[text] = task
        }
        return task
    }

    /// Every taskset as its spec (definitions as last imported, removed tasks left out).
    public func taskSetSpecs() throws -> [TaskSetSpec] {
        try taskSets().map { set in
            TaskSetSpec(name: set.name, weight: set.weight, tasks: try tasks(spec: set.name).map(\.task), runOptional: set.runOptional)
        }
    }

    /// The global id of the last event recorded, 0 for none.
    public func lastEventID() throws -> Int64 {
        try read { db in try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM events") ?? 0 }
    }

    /// How many events of this type were recorded.
    public func count(of type: EventType) throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events WHERE event_type = ?", arguments: [type.rawValue]) ?? 0 }
    }

    public func events(_ query: EventQuery) throws -> [EventRecord] {
        var sql = "SELECT * FROM events WHERE id > ?"
        var arguments: StatementArguments = [query.after]
        if let spec = query.spec {
            sql += " AND spec = ?"
            arguments += [spec]
        }
        if let task = query.task {
            sql += " AND task_id = ?"
            arguments += [task.rawValue]
        }
        if let type = query.type {
            sql += " AND event_type = ?"
            arguments += [type.rawValue]
        }
        sql += query.newestFirst ? " ORDER BY id DESC" : " ORDER BY id"
        if let limit = query.limit { sql += " LIMIT \(max(0, limit))" }
        let decoder = JSONDecoder()
        return try read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map { try Self.event(from: $0, decoder: decoder) }
        }
    }

    static func event(from row: Row, decoder: JSONDecoder) throws -> EventRecord {
        let taskID: String = row["task_id"]
        let payloadText: String = row["payload"]
        let payload = try decoder.decode([String: JSONValue].self, from: Data(payloadText.utf8))
        return EventRecord(
            id: row["id"], spec: row["spec"], taskID: taskID.isEmpty ? nil : TaskID(taskID), seq: row["seq"],
            type: EventType(row["event_type"]), actor: row["actor"], spanID: row["span_id"],
            parentSpanID: row["parent_span_id"], phase: row["phase"], payload: payload,
            timestamp: Timestamp(secondsSince1970: row["timestamp"]))
    }

    // MARK: Writing

    @discardableResult
    public func apply(_ transitions: [Transition], saving runners: [RunnerRecord]) throws -> [EventRecord] {
        try appending { db, recorder in
            for transition in transitions {
                try Self.apply(transition, db: db, recorder: &recorder)
            }
            for runner in runners { try Self.save(runner, db: db) }
        }
    }

    /// A write transaction that appends events, numbered from what this registry already knows
    /// of each task's last seq (kept across transactions: the dispatcher's loop writes a few events
    /// per task per turn; another writer's events are found by the unique index and read again).
    func appending(_ body: (Database, inout EventAppender) throws -> Void) throws -> [EventRecord] {
        let at = now()
        return try knownSeqs.withLock { known in
            do {
                return try write { db in
                    var recorder = EventAppender(db: db, at: at)
                    swap(&recorder.nextSeq, &known)  // moved, not copied: the table may be large
                    defer { swap(&recorder.nextSeq, &known) }
                    try body(db, &recorder)
                    if recorder.nextSeq.count > 100_000 { recorder.nextSeq.removeAll() }  // a bound; a forgotten task is read again
                    return recorder.appended
                }
            } catch {
                known.removeAll()  // rolled back: what was counted in it did not happen
                throw error
            }
        }
    }

    /// Applies `transition` in the recorder's transaction, stamped with its time.
    static func apply(_ transition: Transition, db: Database, recorder: inout EventAppender) throws {
        let at = transition.at ?? recorder.at
        if let task = transition.task {
            // A few shapes only (which fields change, which states are expected), each cached: this
            // runs for every state change of every task, on the dispatcher's loop. The expected
            // states are in the statement itself: one statement, no read before it.
            var sets = "updated_at = ?"
            if transition.newState != nil { sets += ", state = ?" }
            if transition.attempts != nil { sets += ", attempts = ?" }
            if transition.reason != nil { sets += ", reason = ?" }
            if transition.slot != nil { sets += ", slot_id = ?, slot_path = ?, branch = ?" }
            let expected = transition.expected.map { " AND state IN (\($0.map { "'\($0.rawValue)'" }.sorted().joined(separator: ", ")))" }
            var update = BoundStatement(
                try db.cachedStatement(sql: "UPDATE tasks SET \(sets) WHERE spec = ? AND id = ? AND removed = 0\(expected ?? "")"))
            update.bind(at.secondsSince1970)
            if let state = transition.newState { update.bind(state.rawValue) }
            if let attempts = transition.attempts { update.bind(attempts) }
            if let reason = transition.reason { update.bind(reason) }
            if let slot = transition.slot {
                update.bind(slot.id)
                update.bind(slot.path)
                update.bind(slot.branch)
            }
            update.bind(transition.spec)
            update.bind(task.rawValue)
            try update.execute(in: db)
            if db.changesCount == 0 {
                let select = try db.cachedStatement(sql: "SELECT state FROM tasks WHERE spec = ? AND id = ? AND removed = 0")
                guard let state = try String.fetchOne(select, arguments: [transition.spec, task.rawValue]) else {
                    throw RegistryError(.unknownTask, "no task \(task) in spec \(transition.spec)")
                }
                throw RegistryError(
                    .stateConflict,
                    "task \(transition.spec)/\(task) is \(state), expected \((transition.expected ?? []).map(\.rawValue).sorted().joined(separator: " or "))"
                )
            }
        } else {
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM tasksets WHERE name = ?", arguments: [transition.spec]) != nil
            else { throw RegistryError(.unknownSpec, "no spec \(transition.spec) in the registry") }
        }
        for event in transition.events {
            try recorder.append(event, spec: transition.spec, task: transition.task, at: event.timestamp ?? at)
        }
    }

    @discardableResult
    public func applyOnce(_ batches: [JournalBatch], forgetting: ClosedRange<String>?) throws -> [EventRecord] {
        try appending { db, recorder in
            if let forgetting {
                try db.execute(
                    sql: "DELETE FROM journal_replays WHERE id BETWEEN ? AND ?", arguments: [forgetting.lowerBound, forgetting.upperBound])
            }
            let replayed = try db.cachedStatement(sql: "SELECT 1 FROM journal_replays WHERE id = ?")
            for batch in batches {
                // A batch without an id was never journalled: nothing can replay it, no mark.
                let journalled = !batch.id.isEmpty
                guard try !journalled || Bool.fetchOne(replayed, arguments: [batch.id]) == nil else { continue }
                for transition in batch.transitions {
                    do {
                        try Self.apply(transition, db: db, recorder: &recorder)
                    } catch let error as RegistryError where error.code == .unknownTask || error.code == .unknownSpec {
                        continue  // its spec changed since: nothing left to record it on
                    }
                }
                for runner in batch.runners { try Self.save(runner, db: db) }
                guard journalled else { continue }
                var mark = BoundStatement(try db.cachedStatement(sql: "INSERT INTO journal_replays (id, replayed_at) VALUES (?, ?)"))
                mark.bind(batch.id)
                mark.bind(recorder.at.secondsSince1970)
                try mark.execute(in: db)
            }
        }
    }
}

/// Appends events inside a write transaction, numbering each task's events without gaps.
struct EventAppender {
    let db: Database
    let at: Timestamp
    private(set) var appended: [EventRecord] = []
    /// The next seq of each task as far as known: from earlier transactions, then this one's.
    var nextSeq: [SeqKey: Int64] = [:]

    struct SeqKey: Hashable {
        var spec: String
        var task: String
    }

    init(db: Database, at: Timestamp) {
        self.db = db
        self.at = at
    }

    /// Appends an event that happened `at` (default: now, the transaction's time).
    mutating func append(_ event: NewEvent, spec: String, task: TaskID?, at happened: Timestamp? = nil) throws {
        let at = happened ?? self.at
        let key = SeqKey(spec: spec, task: task?.rawValue ?? "")
        var seq = try nextSeq[key] ?? lastSeq(key) + 1
        let payload = JSONValue.object(event.payload).jsonText
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO events (spec, task_id, seq, event_type, actor, span_id, parent_span_id, phase, payload, timestamp)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
        func insert(_ seq: Int64) throws {
            var insert = BoundStatement(statement)
            insert.bind(spec)
            insert.bind(key.task)
            insert.bind(seq)
            insert.bind(event.type.rawValue)
            insert.bind(event.actor)
            insert.bind(event.spanID)
            insert.bind(event.parentSpanID)
            insert.bind(event.phase)
            insert.bind(payload)
            insert.bind(at.secondsSince1970)
            try insert.execute(in: db)
        }
        do {
            try insert(seq)
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
            // Another writer numbered this task's events since we last did: the next one after its.
            seq = try lastSeq(key) + 1
            try insert(seq)
        }
        nextSeq[key] = seq + 1
        appended.append(
            EventRecord(
                id: db.lastInsertedRowID, spec: spec, taskID: task, seq: seq, type: event.type, actor: event.actor,
                spanID: event.spanID, parentSpanID: event.parentSpanID, phase: event.phase, payload: event.payload,
                timestamp: at))
    }

    /// The task's last seq as recorded. Read inside the write transaction, which SQLite serialises,
    /// so no other writer can take the next number meanwhile; UNIQUE(spec, task_id, seq) guards it
    /// as well.
    private func lastSeq(_ key: SeqKey) throws -> Int64 {
        let select = try db.cachedStatement(sql: "SELECT MAX(seq) FROM events WHERE spec = ? AND task_id = ?")
        return try Int64.fetchOne(select, arguments: [key.spec, key.task]) ?? 0
    }
}
