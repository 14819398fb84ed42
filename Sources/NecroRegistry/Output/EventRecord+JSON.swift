import Foundation
public import NecroCore

extension EventRecord {
    /// The event as `necro events --json`, `necro run --json` and the API show it: `id, spec,
    /// task_id, seq, event_type, actor, span_id, parent_span_id, phase, timestamp, payload`.
    public var json: JSONValue {
        .object([
            "id": .int(Int(id)), "spec": .string(spec), "task_id": taskID.map { .string($0.rawValue) } ?? .null,
            "seq": .int(Int(seq)), "event_type": .string(type.rawValue), "actor": .string(actor),
            "span_id": spanID.map(JSONValue.string) ?? .null, "parent_span_id": parentSpanID.map(JSONValue.string) ?? .null,
            "phase": phase.map(JSONValue.string) ?? .null, "timestamp": .string(timestamp.iso8601), "payload": .object(payload),
        ])
    }
}

extension Timestamp {
    /// ISO 8601 in UTC, with milliseconds: `2026-11-22T09:15:02.123Z`.
    public var iso8601: String {
        Date(timeIntervalSince1970: secondsSince1970).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
