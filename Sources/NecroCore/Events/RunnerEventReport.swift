/// One event as a runner reports it (through the API, or left in its spool file): `{"event_type",
/// "span_id", "parent_span_id", "phase", "actor", "payload", "timestamp", "runner_seq"}`, only
/// `event_type` required (the span defaults to `main`, the actor to `runner`). `timestamp`
/// (seconds since 1970) is when it happened; `runner_seq` (the runner's own count, from 1) goes into
/// the payload, so that a report sent again is recorded once.
public enum RunnerEventReport {
    /// What is wrong with a report, and in which field.
    public struct Invalid: Error, Hashable, Sendable {
        public var field: String
        public var message: String
    }

    public static let fields: Set<String> = ["event_type", "span_id", "parent_span_id", "phase", "actor", "payload", "timestamp", "runner_seq"]

    /// The event a report says, at `now`; `path` prefixes the fields named in errors (`events[3].`).
    public static func event(_ fields: [String: JSONValue], path: String = "", now: Timestamp) throws(Invalid) -> NewEvent {
        if let unknown = fields.keys.sorted().first(where: { !Self.fields.contains($0) }) {
            throw Invalid(field: path + unknown, message: "unknown field \(unknown) (known: \(Self.fields.sorted().joined(separator: ", ")))")
        }
        guard case .string(let name)? = fields["event_type"] else {
            throw Invalid(field: path + "event_type", message: "event_type is required: one of the runner event types")
        }
        let type = EventType(name)
        guard EventType.runnerTypes.contains(type) || EventType.agentTypes.contains(type) else {
            throw Invalid(
                field: path + "event_type",
                message: "\(name) is not a runner event type (known: \((EventType.runnerTypes + EventType.agentTypes).map(\.rawValue).joined(separator: ", ")))")
        }
        var payload: [String: JSONValue] = [:]
        if let value = fields["payload"] {
            guard case .object(let object) = value else { throw Invalid(field: path + "payload", message: "payload must be an object") }
            payload = object
        }
        var timestamp: Timestamp?
        if let value = fields["timestamp"], value != .null {
            // Not before 2000, not more than a day ahead: a clock that far off is a mistake.
            guard let seconds = value.doubleValue, seconds.isFinite, seconds > 946_684_800, seconds < now.secondsSince1970 + 86_400 else {
                throw Invalid(field: path + "timestamp", message: "timestamp must be a time in seconds since 1970, not in the future")
            }
            timestamp = Timestamp(secondsSince1970: seconds)
        }
        if let value = fields["runner_seq"], value != .null {
            guard let seq = value.intValue, seq >= 1 else { throw Invalid(field: path + "runner_seq", message: "runner_seq must be an integer from 1") }
            payload["runner_seq"] = .int(seq)
        }
        return NewEvent(
            type, actor: try text(fields, "actor", path) ?? "runner", spanID: try text(fields, "span_id", path) ?? "main",
            parentSpanID: try text(fields, "parent_span_id", path), phase: try text(fields, "phase", path), payload: payload,
            timestamp: timestamp)
    }

    private static func text(_ fields: [String: JSONValue], _ name: String, _ path: String) throws(Invalid) -> String? {
        switch fields[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw Invalid(field: path + name, message: "\(name) must be a string")
        }
    }
}

/// Where a runner keeps the events it could not send yet: `spool-<runner>.jsonl` in its state
/// folder (the worktree's git folder, or the plain folder's `.necro`). The runner writes it; a
/// later dispatcher records what it holds.
public enum RunnerSpool {
    /// The file's name for `runner` (one path component whatever the id).
    public static func fileName(of runner: RunnerID) -> String {
        "spool-" + PathComponent.safe(runner.rawValue) + ".jsonl"
    }
}
