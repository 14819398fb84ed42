import GRDB
public import NecroCore

extension SQLiteRegistry {
    public func saveRunner(_ runner: RunnerRecord) throws {
        try write { db in try Self.save(runner, db: db) }
    }

    static func save(_ runner: RunnerRecord, db: Database) throws {
        let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO runners (id, spec, task_id, attempt, pool, state, pid, process_start_time, log_path,
                        status_table, status_offset, started_at, last_heartbeat, ended_at, failure_reason, pool_type, handle)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET state = excluded.state, pid = excluded.pid,
                        process_start_time = excluded.process_start_time, log_path = excluded.log_path,
                        status_table = excluded.status_table, status_offset = excluded.status_offset,
                        ended_at = excluded.ended_at, failure_reason = excluded.failure_reason, handle = excluded.handle,
                        -- heartbeats come from `necro heartbeat`, not from the dispatcher's copy: keep them
                        last_heartbeat = COALESCE(excluded.last_heartbeat, runners.last_heartbeat)
                    """)
        // Bound directly: a runner's row is saved at its start, its pid's arrival and its end.
        var upsert = BoundStatement(statement)
        upsert.bind(runner.id.rawValue)
        upsert.bind(runner.task.spec)
        upsert.bind(runner.task.id.rawValue)
        upsert.bind(runner.attempt)
        upsert.bind(runner.pool)
        upsert.bind(runner.state.rawValue)
        upsert.bind(runner.pid.map(Int.init))
        upsert.bind(runner.processStartTime.map(String.init))
        upsert.bind(runner.logPath)
        upsert.bind(runner.status?.path)
        upsert.bind(runner.status?.offset)
        upsert.bind(runner.startedAt.secondsSince1970)
        upsert.bind(runner.lastHeartbeat?.secondsSince1970)
        upsert.bind(runner.endedAt?.secondsSince1970)
        upsert.bind(runner.exit)
        upsert.bind(runner.poolType.name)
        upsert.bind(runner.handle)
        try upsert.execute(in: db)
    }

    public func runners(runningOnly: Bool) throws -> [RunnerRecord] {
        try read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM runners \(runningOnly ? "WHERE state = 'running'" : "") ORDER BY started_at, id"
            ).map { row in
                let startTime: String? = row["process_start_time"]
                let started: Double = row["started_at"] ?? 0
                let heartbeat: Double? = row["last_heartbeat"]
                let ended: Double? = row["ended_at"]
                let table: String? = row["status_table"]
                let offset: Int? = row["status_offset"]
                return RunnerRecord(
                    id: RunnerID(row["id"]), task: TaskKey(spec: row["spec"], id: TaskID(row["task_id"])),
                    attempt: row["attempt"], pool: row["pool"],
                    state: RunnerRecord.State(rawValue: row["state"]) ?? .exited, pid: row["pid"],
                    processStartTime: startTime.flatMap { UInt64($0) }, logPath: row["log_path"],
                    status: table.flatMap { path in offset.map { StatusRecord(path: path, offset: $0) } },
                    startedAt: Timestamp(secondsSince1970: started),
                    lastHeartbeat: heartbeat.map { Timestamp(secondsSince1970: $0) },
                    endedAt: ended.map { Timestamp(secondsSince1970: $0) }, exit: row["failure_reason"],
                    poolType: (row["pool_type"] as String?).flatMap(PoolType.init(name:)) ?? .localProcess, handle: row["handle"])
            }
        }
    }

    public func heartbeat(runner: RunnerID) throws -> Bool {
        let at = now()
        return try write { db in
            try db.execute(
                sql: "UPDATE runners SET last_heartbeat = ? WHERE id = ? AND state = 'running'",
                arguments: [at.secondsSince1970, runner.rawValue])
            return db.changesCount > 0
        }
    }
}
