import Foundation
import NecroCore

/// What a runner may say of its own work through the API, read from request bodies: events of the
/// instrumentation design (`runner_spawn` … `recovery_resumed_from_checkpoint`), and checkpoints.
enum RunnerReports {
    /// `{"events": [event, …]}` or one event (`RunnerEventReport`).
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
        do {
            return try RunnerEventReport.event(fields, path: path, now: Timestamp(secondsSince1970: Date().timeIntervalSince1970))
        } catch {
            throw APIError.badRequest(error.message, field: error.field)
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
