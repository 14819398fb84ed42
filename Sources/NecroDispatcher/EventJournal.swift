import Foundation
import NecroCore
import Synchronization

/// The fallback for records the registry could not take (locked, read-only, disk full): one JSON
/// line per turn, with an id, replayed into the registry in order, each at most once.
final class EventJournal: Sendable {
    let path: String
    private let pending = Mutex<Bool?>(nil)

    init(path: String) { self.path = path }

    /// The journal that belongs to a registry file.
    convenience init(registry: String) { self.init(path: registry + ".fallback.jsonl") }

    /// Whether the journal holds turns not yet replayed.
    var hasPending: Bool {
        pending.withLock { known in
            if let known { return known }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            known = size > 0
            return size > 0
        }
    }

    func append(_ transitions: [Transition], runners: [RunnerRecord], because error: any Error) {
        let entry = Entry(
            id: UUID().uuidString, reason: "\(error)", transitions: transitions.map(Entry.Record.init),
            runners: runners.map(Entry.Runner.init))
        var line = (try? JSONEncoder().encode(entry)) ?? Data()
        line.append(10)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        _ = fsync(fd)
        pending.withLock { $0 = true }
    }

    /// Replays every pending turn; the journal is emptied only once the registry has them.
    func replay(into registry: any Registry) throws {
        guard hasPending, let data = FileManager.default.contents(atPath: path) else { return }
        let decoder = JSONDecoder()
        let batches = data.split(separator: 10).compactMap { line -> JournalBatch? in
            guard let entry = try? decoder.decode(Entry.self, from: Data(line)) else { return nil }  // a torn last line
            return JournalBatch(id: entry.id, transitions: entry.transitions.map(\.transition), runners: (entry.runners ?? []).map(\.record))
        }
        try registry.applyOnce(batches)
        try? FileManager.default.removeItem(atPath: path)
        pending.withLock { $0 = false }
    }

    struct Entry: Codable {
        struct Event: Codable {
            var type: String
            var actor: String
            var span_id: String?
            var parent_span_id: String?
            var phase: String?
            var payload: [String: JSONValue]
        }

        struct Record: Codable {
            var spec: String
            var task: String?
            var expected: [String]?
            var state: String?
            var attempts: Int?
            var sets_reason: Bool
            var reason: String?
            var slot: TaskSlot?
            var events: [Event]

            init(_ t: Transition) {
                spec = t.spec
                task = t.task?.rawValue
                expected = t.expected?.map(\.rawValue).sorted()
                state = t.newState?.rawValue
                attempts = t.attempts
                sets_reason = t.reason != nil
                reason = t.reason ?? nil
                slot = t.slot
                events = t.events.map {
                    Event(type: $0.type.rawValue, actor: $0.actor, span_id: $0.spanID, parent_span_id: $0.parentSpanID, phase: $0.phase, payload: $0.payload)
                }
            }

            var transition: Transition {
                Transition(
                    spec: spec, task: task.map { TaskID($0) }, expected: expected.map { Set($0.compactMap(TaskState.init(rawValue:))) },
                    to: state.flatMap(TaskState.init(rawValue:)), attempts: attempts, reason: sets_reason ? .some(reason) : nil,
                    slot: slot, events: events.map {
                        NewEvent(EventType($0.type), actor: $0.actor, spanID: $0.span_id, parentSpanID: $0.parent_span_id, phase: $0.phase, payload: $0.payload)
                    })
            }
        }

        /// A runner's row, as `RunnerRecord`.
        struct Runner: Codable {
            var id: String
            var spec: String
            var task: String
            var attempt: Int
            var pool: String
            var state: String
            var pid: Int32?
            var process_start_time: UInt64?
            var log_path: String?
            var status_table: String?
            var status_offset: Int?
            var started_at: Double
            var last_heartbeat: Double?
            var ended_at: Double?
            var exit: String?

            init(_ r: RunnerRecord) {
                id = r.id.rawValue
                spec = r.task.spec
                task = r.task.id.rawValue
                attempt = r.attempt
                pool = r.pool
                state = r.state.rawValue
                pid = r.pid
                process_start_time = r.processStartTime
                log_path = r.logPath
                status_table = r.status?.path
                status_offset = r.status?.offset
                started_at = r.startedAt.secondsSince1970
                last_heartbeat = r.lastHeartbeat?.secondsSince1970
                ended_at = r.endedAt?.secondsSince1970
                exit = r.exit
            }

            var record: RunnerRecord {
                RunnerRecord(
                    id: RunnerID(id), task: TaskKey(spec: spec, id: TaskID(task)), attempt: attempt, pool: pool,
                    state: RunnerRecord.State(rawValue: state) ?? .running, pid: pid, processStartTime: process_start_time,
                    logPath: log_path, status: status_table.flatMap { path in status_offset.map { StatusRecord(path: path, offset: $0) } },
                    startedAt: Timestamp(secondsSince1970: started_at), lastHeartbeat: last_heartbeat.map(Timestamp.init(secondsSince1970:)),
                    endedAt: ended_at.map(Timestamp.init(secondsSince1970:)), exit: exit)
            }
        }

        var id: String
        var reason: String
        var transitions: [Record]
        /// Absent in journals written before runner rows were kept in them.
        var runners: [Runner]?
    }
}
