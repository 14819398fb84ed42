import GRDB

/// The registry's tables, as a list of migrations: append, never edit a shipped one.
enum RegistrySchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: tasksets, tasks, runners, events") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tasksets (
                        name TEXT PRIMARY KEY NOT NULL,
                        version INTEGER NOT NULL,
                        weight REAL NOT NULL DEFAULT 1,
                        source TEXT,
                        imported_at REAL NOT NULL
                    );
                    CREATE TABLE tasks (
                        spec TEXT NOT NULL REFERENCES tasksets(name) ON DELETE CASCADE,
                        id TEXT NOT NULL,
                        position INTEGER NOT NULL,
                        definition TEXT NOT NULL,
                        title TEXT NOT NULL,
                        required_skill TEXT,
                        priority INTEGER NOT NULL,
                        removed INTEGER NOT NULL DEFAULT 0,
                        state TEXT NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        reason TEXT,
                        updated_at REAL NOT NULL,
                        PRIMARY KEY (spec, id)
                    ) WITHOUT ROWID;
                    CREATE INDEX tasks_by_state ON tasks(state);
                    CREATE TABLE runners (
                        id TEXT PRIMARY KEY NOT NULL,
                        spec TEXT NOT NULL,
                        task_id TEXT NOT NULL,
                        attempt INTEGER NOT NULL,
                        pool TEXT NOT NULL,
                        state TEXT NOT NULL,
                        pid INTEGER,
                        process_start_time TEXT,
                        slot_id TEXT,
                        slot_path TEXT,
                        token_hash TEXT,
                        started_at REAL,
                        last_heartbeat REAL,
                        ended_at REAL,
                        exit_code INTEGER,
                        signal INTEGER,
                        failure_reason TEXT
                    );
                    CREATE INDEX runners_by_task ON runners(spec, task_id);
                    CREATE TABLE events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        spec TEXT NOT NULL,
                        task_id TEXT NOT NULL DEFAULT '',
                        seq INTEGER NOT NULL,
                        event_type TEXT NOT NULL,
                        actor TEXT NOT NULL,
                        span_id TEXT,
                        parent_span_id TEXT,
                        phase TEXT,
                        payload TEXT NOT NULL,
                        timestamp REAL NOT NULL,
                        UNIQUE (spec, task_id, seq)
                    );
                    """)
        }
        migrator.registerMigration("v2: runner log path") { db in
            try db.execute(sql: "ALTER TABLE runners ADD COLUMN log_path TEXT")
            try db.execute(sql: "CREATE INDEX runners_by_state ON runners(state)")
        }
        migrator.registerMigration("v3: replayed fallback journal entries") { db in
            try db.execute(sql: "CREATE TABLE journal_replays (id TEXT PRIMARY KEY NOT NULL, replayed_at REAL NOT NULL)")
        }
        migrator.registerMigration("v4: control requests and pool settings") { db in
            try db.execute(
                sql: """
                    CREATE TABLE control_requests (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        kind TEXT NOT NULL,
                        spec TEXT,
                        target TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        handled_at REAL
                    );
                    CREATE TABLE pool_settings (name TEXT PRIMARY KEY NOT NULL, enabled INTEGER NOT NULL);
                    """)
        }
        migrator.registerMigration("v5: the task's slot and branch") { db in
            try db.execute(sql: "ALTER TABLE tasks ADD COLUMN slot_id TEXT")
            try db.execute(sql: "ALTER TABLE tasks ADD COLUMN slot_path TEXT")
            try db.execute(sql: "ALTER TABLE tasks ADD COLUMN branch TEXT")
        }
        migrator.registerMigration("v6: where a runner's supervisor records its exit") { db in
            try db.execute(sql: "ALTER TABLE runners ADD COLUMN status_table TEXT")
            try db.execute(sql: "ALTER TABLE runners ADD COLUMN status_offset INTEGER")
        }
        migrator.registerMigration("v7: whether a taskset runs its optional tasks") { db in
            try db.execute(sql: "ALTER TABLE tasksets ADD COLUMN run_optional INTEGER NOT NULL DEFAULT 0")
        }
        migrator.registerMigration("v8: task renames, for the git refs named after tasks; where a taskset's spec lives") { db in
            try db.execute(
                sql: """
                    CREATE TABLE task_renames (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        spec TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        from_id TEXT NOT NULL,
                        to_id TEXT NOT NULL,
                        applied INTEGER NOT NULL DEFAULT 0
                    );
                    ALTER TABLE tasksets ADD COLUMN origin TEXT;
                    """)
        }
        migrator.registerMigration("v9: where a runner runs: its pool's type and its launcher's handle") { db in
            try db.execute(sql: "ALTER TABLE runners ADD COLUMN pool_type TEXT NOT NULL DEFAULT 'local-process'")
            try db.execute(sql: "ALTER TABLE runners ADD COLUMN handle TEXT")
        }
        migrator.registerMigration("v10: events by type, for what the agents cost and the checkpoints") { db in
            try db.execute(sql: "CREATE INDEX events_by_type ON events(event_type, spec)")
        }
        return migrator
    }
}
