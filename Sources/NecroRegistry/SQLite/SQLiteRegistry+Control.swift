import GRDB
public import NecroCore

/// A request to a running dispatcher, left in the registry by the command line.
public struct ControlRequest: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable {
        case retry, enablePool = "enable-pool", disablePool = "disable-pool"
        /// A taskset imported beside a running dispatcher: it takes it up.
        case load
    }

    public var id: Int64
    public var kind: Kind
    public var spec: String?
    /// A task id, or a pool name.
    public var target: String
}

extension SQLiteRegistry {
    public func addControlRequest(_ kind: ControlRequest.Kind, spec: String?, target: String) throws {
        let at = now()
        try write { db in
            try db.execute(
                sql: "INSERT INTO control_requests (kind, spec, target, created_at) VALUES (?, ?, ?, ?)",
                arguments: [kind.rawValue, spec, target, at.secondsSince1970])
            if kind != .retry { try Self.savePoolSetting(target, kind == .enablePool, db: db) }
        }
    }

    /// Remembers a pool enabled or disabled, for dispatchers that start later.
    public func setPoolEnabled(_ name: String, _ enabled: Bool) throws {
        try write { db in try Self.savePoolSetting(name, enabled, db: db) }
    }

    static func savePoolSetting(_ name: String, _ enabled: Bool, db: Database) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO pool_settings (name, enabled) VALUES (?, ?)", arguments: [name, enabled])
    }

    /// The requests not handled yet, oldest first, now marked handled.
    public func takeControlRequests() throws -> [ControlRequest] {
        let at = now()
        return try write { db in
            let requests = try Row.fetchAll(db, sql: "SELECT * FROM control_requests WHERE handled_at IS NULL ORDER BY id").compactMap {
                row -> ControlRequest? in
                guard let kind = ControlRequest.Kind(rawValue: row["kind"]) else { return nil }
                return ControlRequest(id: row["id"], kind: kind, spec: row["spec"], target: row["target"])
            }
            try db.execute(sql: "UPDATE control_requests SET handled_at = ? WHERE handled_at IS NULL", arguments: [at.secondsSince1970])
            return requests
        }
    }

    /// Pools enabled or disabled from the command line, by name.
    public func poolSettings() throws -> [String: Bool] {
        try read { db in
            Dictionary(
                try Row.fetchAll(db, sql: "SELECT name, enabled FROM pool_settings").map { ($0["name"] as String, $0["enabled"] as Bool) },
                uniquingKeysWith: { _, last in last })
        }
    }

    /// Puts a failed or cancelled task back, when no dispatcher runs it: fresh attempts, and the
    /// tasks it blocked wait on it again. Returns false if the task is not failed or cancelled.
    public func retryTask(_ key: TaskKey) throws -> Bool {
        let records = try tasks(spec: key.spec)
        guard let record = records.first(where: { $0.task.id == key.id }),
            record.state == .failed || record.state == .cancelled
        else {
            if records.isEmpty { throw RegistryError(.unknownSpec, "no spec \(key.spec) in the registry") }
            if !records.contains(where: { $0.task.id == key.id }) { throw RegistryError(.unknownTask, "no task \(key.id) in spec \(key.spec)") }
            return false
        }
        let blockedByIt = "dependency \(key.id) "
        // Ready at once if what it waits on is finished (a root task is), else blocked until it is.
        let states = Dictionary(records.map { ($0.task.id, $0.state) }) { first, _ in first }
        let ready = record.task.dependencies.allSatisfy { states[$0] == .done || states[$0] == .skipped }
        var transitions = [
            Transition(
                spec: key.spec, task: key.id, expected: [.failed, .cancelled], to: ready ? .ready : .blocked, attempts: 0,
                reason: .some(nil), events: [NewEvent(.taskRetryScheduled, actor: "cli", payload: ["requested": true])])
        ]
        for other in records where other.reason?.hasPrefix(blockedByIt) == true {
            transitions.append(
                Transition(spec: key.spec, task: other.task.id, to: .blocked, reason: .some(nil), events: [
                    NewEvent(.taskBlocked, actor: "cli", payload: ["waiting_on": .string(key.id.rawValue)])
                ]))
        }
        try apply(transitions)
        return true
    }
}
