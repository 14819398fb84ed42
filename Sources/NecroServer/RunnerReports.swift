import Foundation
import NecroCore

/// What a runner may say of its own work through the API, read from request bodies: events of the
/// instrumentation design (`runner_spawn` … `recovery_resumed_from_checkpoint`), and checkpoints.
enum RunnerReports {
    /// `{"events": [event, …]}` or one event: each `{"event_type", "span_id", "parent_span_id",
    /// "phase", "actor", "payload", "timestamp", "runner_seq"}`, only `event_type` required (the
    /// span defaults to `main`, the actor to `runner`). `timestamp` (seconds since 1970) is when it
    /// happened, for events sent late; `runner_seq` (the runner's own count, from 1) lets a report
    /// sent again be recorded once.
    static func events(_ body: [String: JSONValue]) throws -> [NewEvent] {
        if let list = body["events"] {
            guard case .array(let items) = list, !items.isEmpty else {
                throw APIError.badRequest("events must be a non-empty array of events", field: "events")
            }
            guard items.count <= 1000 else { throw APIError.badRequest("at most 1000 events at once", field: "events") }
            return try items.enumerated().map { index, item in
                guard case .object(let fields) = item else {
                    throw APIError.badRequest("an event must be an object", field: "events[\(index)]")
                }
                return try event(fields, path: "events[\(index)].")
            }
        }
        return [try event(body, path: "")]
    }

    private static func event(_ fields: [String: JSONValue], path: String) throws -> NewEvent {
        let known: Set<String> = ["event_type", "span_id", "parent_span_id", "phase", "actor", "payload", "timestamp", "runner_seq"]
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw APIError.badRequest("unknown field \(unknown) (known: \(known.sorted().joined(separator: ", ")))", field: path + unknown)
        }
        guard case .string(let name)? = fields["event_type"] else {
            throw APIError.badRequest("event_type is required: one of the runner event types", field: path + "event_type")
        }
        let type = EventType(name)
        guard EventType.runnerTypes.contains(type) else {
            throw APIError.badRequest(
                "\(name) is not a runner event type (known: \(EventType.runnerTypes.map(\.rawValue).joined(separator: ", ")))",
                field: path + "event_type")
        }
        var payload: [String: JSONValue] = [:]
        if let value = fields["payload"] {
            guard case .object(let object) = value else { throw APIError.badRequest("payload must be an object", field: path + "payload") }
            payload = object
        }
        var timestamp: Timestamp?
        if let value = fields["timestamp"], value != .null {
            // Not before 2000, not more than a day ahead: a clock that far off is a mistake.
            guard let seconds = value.doubleValue, seconds.isFinite, seconds > 946_684_800,
                seconds < Date().timeIntervalSince1970 + 86_400
            else {
                throw APIError.badRequest("timestamp must be a time in seconds since 1970, not in the future", field: path + "timestamp")
            }
            timestamp = Timestamp(secondsSince1970: seconds)
        }
        if let value = fields["runner_seq"], value != .null {
            guard let seq = value.intValue, seq >= 1 else {
                throw APIError.badRequest("runner_seq must be an integer from 1", field: path + "runner_seq")
            }
            payload["runner_seq"] = .int(seq)
        }
        return NewEvent(
            type, actor: try text(fields, "actor", path) ?? "runner", spanID: try text(fields, "span_id", path) ?? "main",
            parentSpanID: try text(fields, "parent_span_id", path), phase: try text(fields, "phase", path), payload: payload,
            timestamp: timestamp)
    }

    private static func text(_ fields: [String: JSONValue], _ name: String, _ path: String) throws -> String? {
        switch fields[name] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        default: throw APIError.badRequest("\(name) must be a string", field: path + name)
        }
    }

    /// `{"checkpoint_id", "checkpoint_type", "sequence_number", "work_item_id", …}`: recorded as a
    /// `checkpoint_commit`, which a later attempt of the task finds in its `TASK_CONTEXT`.
    static func checkpoint(_ body: [String: JSONValue]) throws -> NewEvent {
        guard case .string(let id)? = body["checkpoint_id"], !id.isEmpty else {
            throw APIError.badRequest("checkpoint_id is required (a non-empty string)", field: "checkpoint_id")
        }
        if let sequence = body["sequence_number"], sequence.intValue == nil {
            throw APIError.badRequest("sequence_number must be an integer", field: "sequence_number")
        }
        var payload = body
        payload["checkpoint_id"] = .string(id)
        if payload["explanation"] == nil { payload["explanation"] = "checkpoint reported by the runner" }
        return NewEvent(.checkpointCommit, actor: "checkpoint_manager", spanID: "main", phase: "execution", payload: payload)
    }
}
