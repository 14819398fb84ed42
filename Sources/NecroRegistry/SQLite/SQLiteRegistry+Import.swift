import Foundation
import GRDB
public import NecroCore

extension SQLiteRegistry {
    /// Imports a validated taskset in one transaction; see `Registry.importTaskSet`.
    ///
    /// New tasks start `blocked` or `ready` (or `done` if marked so). A task whose definition changed
    /// takes the new one and keeps its state, attempts and events; a task marked done in the new spec
    /// becomes done. Tasks no longer in the spec are cancelled and hidden, their history kept.
    /// Then every waiting task's `blocked`/`ready` state is recomputed from its dependencies.
    @discardableResult
    public func importTaskSet(_ spec: TaskSetSpec, source: String?) throws -> ImportReport {
        try importTaskSet(spec, source: source, origin: nil)
    }

    /// Imports a taskset whose spec file is `origin` (its real path): a taskset of the same name
    /// from another file is refused, so that two projects' specs of one name never merge.
    @discardableResult
    public func importTaskSet(_ spec: TaskSetSpec, source: String?, origin: String?) throws -> ImportReport {
        let at = now()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let decoder = JSONDecoder()
        let (graph, problems) = TaskGraph.build(spec.tasks)
        guard problems.isEmpty, let order = graph.topologicalOrder() else {
            throw RegistryError(.invalidSpec, "spec \(spec.name) is not valid; validate it before importing")
        }
        return try write { db in
            var recorder = EventAppender(db: db, at: at)
            let existingSet = try Row.fetchOne(db, sql: "SELECT * FROM tasksets WHERE name = ?", arguments: [spec.name])
            let previousVersion: Int = existingSet?["version"] ?? 0
            let existingOrigin: String? = existingSet?["origin"]
            if let origin, let existingOrigin, origin != existingOrigin {
                throw RegistryError(
                    .specConflict,
                    "taskset \(spec.name) comes from \(existingOrigin); \(origin) is another spec of the same name: give it a name of its own with --name NAME")
            }
            var stored = try Self.storedTasks(db, spec: spec.name, decoder: decoder)
            // Tasks renumbered go on under their new ids; ids that now name other tasks are freed.
            let plan = ReimportPlan.make(stored: stored.map(\.value.plan), tasks: spec.tasks, version: previousVersion + 1)
            if let running = plan.renames.first(where: { stored[$0.from.rawValue]?.state == .running }) {
                throw RegistryError(
                    .stateConflict,
                    "task \(running.from) of \(spec.name) is running and would become \(running.to): import the spec again once it has finished")
            }
            if !plan.renames.isEmpty {
                try Self.rename(plan.renames, spec: spec.name, version: previousVersion + 1, db)
                for rename in plan.renumbered {
                    try recorder.append(
                        NewEvent(.taskRenumbered, actor: "registry", payload: [
                            "from": .string(rename.from.rawValue), "to": .string(rename.to.rawValue),
                        ]), spec: spec.name, task: rename.to)
                }
                for rename in plan.movedAside {
                    try recorder.append(
                        NewEvent(.taskRenumbered, actor: "registry", payload: [
                            "from": .string(rename.from.rawValue), "to": .string(rename.to.rawValue),
                            "explanation": "its id now names another task of the spec: kept aside with its history",
                        ]), spec: spec.name, task: rename.to)
                }
                stored = try Self.storedTasks(db, spec: spec.name, decoder: decoder)
            }
            if existingSet == nil {
                try db.execute(
                    sql: "INSERT INTO tasksets (name, version, weight, source, imported_at) VALUES (?, 0, ?, ?, ?)",
                    arguments: [spec.name, spec.weight, source, at.secondsSince1970])
            }

            var added: [TaskID] = []
            var changed: [TaskID] = []
            var states: [TaskState] = []
            states.reserveCapacity(spec.tasks.count)
            let upsert = try db.cachedStatement(
                sql: """
                    INSERT INTO tasks (spec, id, position, definition, title, required_skill, priority, removed, state, attempts, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?)
                    ON CONFLICT (spec, id) DO UPDATE SET position = excluded.position, definition = excluded.definition,
                        title = excluded.title, required_skill = excluded.required_skill, priority = excluded.priority,
                        removed = 0, state = excluded.state, updated_at = excluded.updated_at
                    """)
            for (position, task) in spec.tasks.enumerated() {
                let previous = stored[task.id.rawValue]
                var state: TaskState
                if let previous, !previous.removed {
                    state = previous.state
                    if state == .skipped && spec.runOptional {
                        // Run with its optional tasks now: a skipped one waits for its turn again.
                        state = .blocked
                        try recorder.append(
                            NewEvent(.taskBlocked, actor: "registry", payload: ["reason": "optional tasks run now (--with-optional)"]),
                            spec: spec.name, task: task.id)
                        try db.execute(
                            sql: "UPDATE tasks SET state = ?, updated_at = ? WHERE spec = ? AND id = ?",
                            arguments: [state.rawValue, at.secondsSince1970, spec.name, task.id.rawValue])
                    }
                    if previous.definition == task {
                        states.append(state)
                        if previous.position != position {
                            try db.execute(
                                sql: "UPDATE tasks SET position = ? WHERE spec = ? AND id = ?",
                                arguments: [position, spec.name, task.id.rawValue])
                        }
                        continue
                    }
                    changed.append(task.id)
                    if task.markedDone && !previous.definition.markedDone { state = .done }
                    try recorder.append(
                        NewEvent(.taskSpecChanged, actor: "registry", payload: [
                            "fields": .array(Self.changedFields(previous.definition, task).map { .string($0) }),
                            "state": .string(state.rawValue),
                        ]), spec: spec.name, task: task.id)
                } else {
                    added.append(task.id)
                    state = task.markedDone ? .done : .blocked
                    try recorder.append(
                        NewEvent(.taskImported, actor: "registry", payload: [
                            "title": .string(task.title), "marked_done": .bool(task.markedDone),
                        ]), spec: spec.name, task: task.id)
                }
                states.append(state)
                let definition = String(decoding: try encoder.encode(task), as: UTF8.self)
                try upsert.execute(arguments: [
                    spec.name, task.id.rawValue, position, definition, task.title, task.requiredSkill, task.priority,
                    state.rawValue, at.secondsSince1970,
                ])
            }

            let present = Set(spec.tasks.map(\.id.rawValue))
            var removed: [TaskID] = []
            for (id, previous) in stored where !previous.removed && !present.contains(id) {
                removed.append(TaskID(id))
                let state: TaskState = previous.state == .done ? .done : .cancelled
                try db.execute(
                    sql: "UPDATE tasks SET removed = 1, state = ?, reason = ?, updated_at = ? WHERE spec = ? AND id = ?",
                    arguments: [state.rawValue, "removed from the spec", at.secondsSince1970, spec.name, id])
                try recorder.append(
                    NewEvent(.taskRemovedFromSpec, actor: "registry", payload: ["state": .string(state.rawValue)]),
                    spec: spec.name, task: TaskID(id))
            }
            removed.sort()

            // Recompute the waiting states, dependencies first.
            for index in order where states[index] == .blocked || states[index] == .ready {
                let dependencies = graph.dependencies(of: index)
                let allDone = dependencies.allSatisfy { states[Int($0)] == .done || states[Int($0)] == .skipped }
                let next: TaskState = allDone ? (graph.isGroup[index] ? .done : .ready) : .blocked
                guard next != states[index] else { continue }
                states[index] = next
                let id = spec.tasks[index].id
                try db.execute(
                    sql: "UPDATE tasks SET state = ?, updated_at = ? WHERE spec = ? AND id = ?",
                    arguments: [next.rawValue, at.secondsSince1970, spec.name, id.rawValue])
                let type: EventType = next == .ready ? .taskReady : next == .done ? .taskCompleted : .taskBlocked
                var payload: [String: JSONValue] = [:]
                if next == .blocked {
                    payload["waiting_on"] = .array(dependencies.filter { states[Int($0)] != .done }.map { .string(graph.ids[Int($0)].rawValue) })
                }
                if next == .done { payload["group"] = .bool(true) }
                try recorder.append(NewEvent(type, actor: "registry", payload: payload), spec: spec.name, task: id)
            }

            let previousWeight: Double = existingSet?["weight"] ?? spec.weight
            let previousRunOptional: Bool = existingSet?["run_optional"] ?? spec.runOptional
            let dirty =
                existingSet == nil || !added.isEmpty || !changed.isEmpty || !removed.isEmpty || previousWeight != spec.weight
                || previousRunOptional != spec.runOptional || !plan.renames.isEmpty
            let version = dirty ? previousVersion + 1 : previousVersion
            try db.execute(
                sql: """
                    UPDATE tasksets SET version = ?, weight = ?, source = ?, imported_at = ?, run_optional = ?, origin = COALESCE(?, origin)
                    WHERE name = ?
                    """,
                arguments: [version, spec.weight, source, at.secondsSince1970, spec.runOptional, origin, spec.name])
            return ImportReport(
                spec: spec.name, version: version, created: existingSet == nil, added: added, changed: changed,
                removed: removed, unchanged: spec.tasks.count - added.count - changed.count, renumbered: plan.renumbered,
                movedAside: plan.movedAside)
        }
    }

    /// Task renames not yet carried out on the git refs named after tasks, oldest first.
    public func pendingTaskRenames() throws -> [TaskRename] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM task_renames WHERE applied = 0 ORDER BY id").map { row in
                TaskRename(number: row["id"], spec: row["spec"], version: row["version"], from: TaskID(row["from_id"]), to: TaskID(row["to_id"]))
            }
        }
    }

    /// Notes task renames as carried out on the git refs.
    public func markApplied(_ renames: [TaskRename]) throws {
        guard !renames.isEmpty else { return }
        try write { db in
            for rename in renames { try db.execute(sql: "UPDATE task_renames SET applied = 1 WHERE id = ?", arguments: [rename.number]) }
        }
    }

    /// What `importTaskSet` would do with `spec`, without writing anything.
    public func importPreview(_ spec: TaskSetSpec) throws -> ImportPreview {
        let decoder = JSONDecoder()
        return try read { db in
            let existingSet = try Row.fetchOne(db, sql: "SELECT version FROM tasksets WHERE name = ?", arguments: [spec.name])
            let version: Int = existingSet?["version"] ?? 0
            let stored = try Self.storedTasks(db, spec: spec.name, decoder: decoder)
            let plan = ReimportPlan.make(stored: stored.map(\.value.plan), tasks: spec.tasks, version: version + 1)
            let renamedFrom = Dictionary(plan.renumbered.map { ($0.to, $0.from) }, uniquingKeysWith: { first, _ in first })
            let added = Set(plan.added)
            var preview = ImportPreview(spec: spec.name, creates: existingSet == nil)
            for task in spec.tasks {
                let from = renamedFrom[task.id]
                let entry = ImportPreview.Entry(id: task.id, title: task.title, previousID: from)
                if added.contains(task.id) {
                    preview.added.append(entry)
                } else if var before = stored[(from ?? task.id).rawValue]?.definition {
                    before.id = task.id
                    if before == task { preview.kept.append(entry) } else { preview.changed.append(entry) }
                }
            }
            let aside = Dictionary(plan.movedAside.map { ($0.to, $0.from) }, uniquingKeysWith: { first, _ in first })
            for id in plan.removed {
                let original = aside[id] ?? id
                preview.removed.append(
                    ImportPreview.Entry(id: id, title: stored[original.rawValue]?.definition.title ?? "", previousID: aside[id]))
            }
            return preview
        }
    }

    /// A task as the registry holds it, for an import.
    struct StoredTask {
        var definition: TaskSpec
        var state: TaskState
        var removed: Bool
        var position: Int
        var plan: ReimportPlan.Stored
    }

    static func storedTasks(_ db: Database, spec: String, decoder: JSONDecoder) throws -> [String: StoredTask] {
        var stored: [String: StoredTask] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT id, definition, state, removed, position FROM tasks WHERE spec = ?", arguments: [spec]) {
            let text: String = row["definition"]
            let id: String = row["id"]
            let definition = try decoder.decode(TaskSpec.self, from: Data(text.utf8))
            let removed: Bool = row["removed"]
            stored[id] = StoredTask(
                definition: definition, state: TaskState(rawValue: row["state"]) ?? .blocked, removed: removed,
                position: row["position"],
                plan: ReimportPlan.Stored(id: TaskID(id), title: definition.title, parent: definition.parent, removed: removed))
        }
        return stored
    }

    /// Renames tasks with everything keyed by their ids (their rows, events and runners), in two
    /// steps so that ids may trade places, and notes each rename for the git refs named after them.
    static func rename(_ renames: [ReimportPlan.Rename], spec: String, version: Int, _ db: Database) throws {
        let tables = [("tasks", "id"), ("events", "task_id"), ("runners", "task_id")]
        for (k, rename) in renames.enumerated() {
            for (table, column) in tables {
                try db.execute(
                    sql: "UPDATE \(table) SET \(column) = ? WHERE spec = ? AND \(column) = ?",
                    arguments: ["\u{1}rename-\(k)", spec, rename.from.rawValue])
            }
        }
        for (k, rename) in renames.enumerated() {
            for (table, column) in tables {
                try db.execute(
                    sql: "UPDATE \(table) SET \(column) = ? WHERE spec = ? AND \(column) = ?",
                    arguments: [rename.to.rawValue, spec, "\u{1}rename-\(k)"])
            }
            try db.execute(
                sql: "INSERT INTO task_renames (spec, version, from_id, to_id) VALUES (?, ?, ?, ?)",
                arguments: [spec, version, rename.from.rawValue, rename.to.rawValue])
        }
    }

    /// The names of the fields that differ between two definitions of a task.
    static func changedFields(_ a: TaskSpec, _ b: TaskSpec) -> [String] {
        var fields: [String] = []
        if a.id != b.id { fields.append("id") }
        if a.title != b.title { fields.append("title") }
        if a.description != b.description { fields.append("description") }
        if a.dependencies != b.dependencies { fields.append("dependencies") }
        if a.requiredSkill != b.requiredSkill { fields.append("required_skill") }
        if a.priority != b.priority { fields.append("priority") }
        if a.optional != b.optional { fields.append("optional") }
        if a.resources != b.resources { fields.append("resources") }
        if a.timeoutSeconds != b.timeoutSeconds { fields.append("timeout_seconds") }
        if a.maxAttempts != b.maxAttempts { fields.append("max_attempts") }
        if a.gates != b.gates { fields.append("gates") }
        if a.metadata != b.metadata { fields.append("metadata") }
        if a.parent != b.parent || a.isGroup != b.isGroup { fields.append("group") }
        if a.markedDone != b.markedDone { fields.append("done") }
        return fields
    }
}
