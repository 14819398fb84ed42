import NecroCore
import NecroRegistry

/// How the API shows the registry's records, as JSON.
extension TaskRecord {
    var json: JSONValue {
        let t = task
        var resources: [String: JSONValue] = [:]
        if let cpu = t.resources.cpu { resources["cpu"] = .double(cpu) }
        if let memory = t.resources.memoryMB { resources["memory_mb"] = .int(memory) }
        return .object([
            "spec": .string(spec), "id": .string(t.id.rawValue), "title": .string(t.title), "description": .string(t.description),
            "state": .string(state.rawValue), "attempts": .int(attempts), "reason": reason.map(JSONValue.string) ?? .null,
            "dependencies": .array(t.dependencies.map { .string($0.rawValue) }),
            "required_skill": t.requiredSkill.map(JSONValue.string) ?? .null, "priority": .int(t.priority),
            "optional": .bool(t.optional), "group": .bool(t.isGroup), "parent": t.parent.map { .string($0.rawValue) } ?? .null,
            "runs_own_work": .bool(t.runsOwnWork), "steps": .array(t.steps.map(\.json)),
            "resources": .object(resources), "timeout_seconds": t.timeoutSeconds.map { .int($0) } ?? .null,
            "max_attempts": t.maxAttempts.map { .int($0) } ?? .null, "metadata": .object(t.metadata),
            "slot": slot.map { .object(["id": .string($0.id), "path": .string($0.path), "branch": .string($0.branch)]) } ?? .null,
            "updated_at": .string(updatedAt.iso8601),
        ])
    }

    /// With what its agents cost (`agent_usage`).
    func json(usage: AgentUsage) -> JSONValue {
        guard case .object(var object) = json else { return json }
        object["agent_usage"] = .object(usage.json)
        return .object(object)
    }
}

extension RunnerRecord {
    var json: JSONValue {
        .object([
            "id": .string(id.rawValue), "spec": .string(task.spec), "task_id": .string(task.id.rawValue), "attempt": .int(attempt),
            "pool": .string(pool), "state": .string(state.rawValue), "pid": pid.map { .int(Int($0)) } ?? .null,
            "started_at": .string(startedAt.iso8601), "last_heartbeat": lastHeartbeat.map { .string($0.iso8601) } ?? .null,
            "ended_at": endedAt.map { .string($0.iso8601) } ?? .null, "exit": exit.map(JSONValue.string) ?? .null,
        ])
    }
}

extension DispatchSnapshot.Pool {
    func json(type: String) -> JSONValue {
        .object([
            "name": .string(limits.name), "type": .string(type), "enabled": .bool(limits.enabled),
            "max_concurrency": .int(limits.maxConcurrency), "running": .int(usage.running),
            "utilization": .double(utilization), "cpu_quota": limits.cpuQuota.map(JSONValue.double) ?? .null,
            "cpu_used": .double(usage.cpu), "memory_quota_mb": limits.memoryQuotaMB.map { .int($0) } ?? .null,
            "memory_used_mb": .int(usage.memoryMB),
        ])
    }
}

extension ImportReport {
    var json: JSONValue {
        .object([
            "spec": .string(spec), "version": .int(version), "created": .bool(created),
            "added": .array(added.map { .string($0.rawValue) }), "changed": .array(changed.map { .string($0.rawValue) }),
            "removed": .array(removed.map { .string($0.rawValue) }), "unchanged": .int(unchanged),
        ])
    }
}

extension TaskSetRecord {
    /// Its fields, with `tasks`: how many of its tasks (groups left out) are in each state, every
    /// state named.
    func jsonFields(tasks: [TaskRecord]) -> [String: JSONValue] {
        let counts = Dictionary(grouping: tasks.filter { !$0.task.isGroup }, by: \.state).mapValues(\.count)
        return [
            "name": .string(name), "version": .int(version), "weight": .double(weight),
            "source": source.map(JSONValue.string) ?? .null, "imported_at": .string(importedAt.iso8601),
            "counts": .object(Dictionary(uniqueKeysWithValues: TaskState.allCases.map { ($0.rawValue, .int(counts[$0] ?? 0)) })),
        ]
    }
}
