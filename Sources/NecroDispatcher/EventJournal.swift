import Foundation
import NecroCore
import Synchronization

/// The dispatcher's write-ahead journal: each turn's records as one JSON line, written before the
/// turn's effects (runners started, signalled) and taken into the registry right after, off the
/// loop, many turns to a transaction. Lines stay until the registry has them: if it cannot be
/// written (locked, read-only, disk full), they wait here and are replayed in order, each at most
/// once (by its id), when it can, or by the next dispatcher after a crash.
///
/// A line is one `write`: it outlives the process as soon as the call returns (kill -9), as a
/// commit in SQLite's WAL mode with `synchronous = NORMAL` does; neither is flushed to the disk.
final class EventJournal: Sendable {
    let path: String
    /// Ids are `<generation>-<number>`, numbers zero-padded: the ids of a run of lines sort in order.
    private let generation = UUID().uuidString
    private let file = Mutex(File())

    private struct File {
        var descriptor: Int32 = -1
        /// Lines written since it was last emptied, and the number of the first of them.
        var lines = 0
        var first = 1
        var next = 1
        var size = 0
        /// Whether it holds lines not yet replayed; nil until looked at.
        var pending: Bool?
        /// Why the last line could not be written, until one is.
        var failure: String?
        /// A torn line could not be cut off: nothing more is appended after it (the registry takes
        /// the turns directly), or a reader would take the next line for part of it.
        var torn = false
    }

    init(path: String) { self.path = path }

    /// Where the journal of a registry file lives, unless configured elsewhere.
    static func path(beside registry: String) -> String { registry + ".fallback.jsonl" }

    /// The journal that belongs to a registry file.
    convenience init(registry: String) { self.init(path: Self.path(beside: registry)) }

    /// Whether the journal holds turns not yet replayed.
    var hasPending: Bool {
        file.withLock { file in
            if let known = file.pending { return known }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            file.pending = size > 0
            return size > 0
        }
    }

    /// Its size in bytes, as written by this process since it was last emptied.
    var size: Int { file.withLock { $0.size } }

    /// Why the last line could not be written; nil once one is.
    var failure: String? { file.withLock { $0.failure } }

    private func id(_ number: Int) -> String {
        let digits = String(number)
        return generation + "-" + String(repeating: "0", count: max(0, 12 - digits.count)) + digits
    }

    /// Writes one turn's records as a line, then hands its batch to `then`, under the journal's lock:
    /// what is handed on is in the order of the lines. False if the line could not be written.
    func append(
        _ transitions: [Transition], runners: [RunnerRecord], reason: String, then: (JournalBatch) -> Void
    ) -> Bool {
        file.withLock { file in
            guard !file.torn else { return false }
            if file.descriptor < 0 {
                // (What an earlier dispatcher left, a line torn by its crash included, was replayed
                // and removed before this one's first turn.)
                file.descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, PrivateFiles.fileMode)
                guard file.descriptor >= 0 else {
                    file.failure = String(cString: strerror(errno))
                    return false
                }
            }
            let batch = JournalBatch(id: id(file.next), transitions: transitions, runners: runners)
            var line = batch.jsonLine(reason: reason)
            line.append(10)
            let end = lseek(file.descriptor, 0, SEEK_END)
            let written = line.withUnsafeBytes { bytes -> Bool in
                var offset = 0
                while offset < bytes.count {
                    let count = write(file.descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { return false }
                    offset += count
                }
                return true
            }
            guard written else {
                // (A disk full mid-line.) What was written of it goes: the next line must start
                // a line, or a reader would take both for one torn line.
                file.failure = String(cString: strerror(errno))
                if end < 0 || ftruncate(file.descriptor, end) != 0 { file.torn = true }
                return false
            }
            file.failure = nil
            if file.lines == 0 { file.first = file.next }
            file.next += 1
            file.lines += 1
            file.size += line.count
            file.pending = true
            then(batch)
            return true
        }
    }

    /// Empties the journal if it holds `count` lines and no more (all in the registry now): the
    /// range of their ids, whose replay marks may go; nil if it holds more. `catchUp`, run first
    /// with nothing appended meanwhile, may take in the rest and return the new count.
    func empty(ifHolding count: Int, catchUp: (Int) -> Int = { $0 }) -> ClosedRange<String>? {
        file.withLock { file in
            let count = catchUp(count)
            guard file.descriptor >= 0, file.lines > 0, count == file.lines, ftruncate(file.descriptor, 0) == 0 else { return nil }
            let range = id(file.first)...id(file.next - 1)
            file.lines = 0
            file.size = 0
            file.pending = false
            return range
        }
    }

    /// Stops writing; an empty journal is removed.
    func close() {
        file.withLock { file in
            guard file.descriptor >= 0 else { return }
            Glibc.close(file.descriptor)
            file.descriptor = -1
            if file.lines == 0 {
                unlink(path)
                file.pending = false
            }
        }
    }

    /// Replays every pending line (left by a dispatcher that stopped before the registry had
    /// them); the journal is removed only once the registry has them.
    func replay(into registry: any Registry) throws {
        guard hasPending, let data = FileManager.default.contents(atPath: path) else { return }
        let decoder = JSONDecoder()
        let batches = data.split(separator: 10).compactMap { line -> JournalBatch? in
            guard let entry = try? decoder.decode(Entry.self, from: Data(line)) else { return nil }  // a torn line
            return JournalBatch(id: entry.id, transitions: entry.transitions.map(\.transition), runners: (entry.runners ?? []).map(\.record))
        }
        try registry.applyOnce(batches)
        file.withLock { file in
            if file.descriptor >= 0 {
                _ = ftruncate(file.descriptor, 0)
                file.lines = 0
                file.size = 0
            } else {
                unlink(path)
            }
            file.pending = false
        }
    }

    /// A line as read back (`JournalBatch.jsonLine` writes it).
    struct Entry: Decodable {
        struct Event: Decodable {
            var type: String
            var actor: String
            var span_id: String?
            var parent_span_id: String?
            var phase: String?
            var payload: [String: JSONValue]
            /// A runner's own time for the event, when it has one.
            var at: Double?
        }

        struct Record: Decodable {
            var spec: String
            var task: String?
            var expected: [String]?
            var state: String?
            var attempts: Int?
            var sets_reason: Bool
            var reason: String?
            var slot: TaskSlot?
            var events: [Event]
            /// Absent in journals written before turns were stamped.
            var at: Double?

            var transition: Transition {
                Transition(
                    spec: spec, task: task.map { TaskID($0) }, expected: expected.map { Set($0.compactMap(TaskState.init(rawValue:))) },
                    to: state.flatMap(TaskState.init(rawValue:)), attempts: attempts, reason: sets_reason ? .some(reason) : nil,
                    slot: slot, events: events.map {
                        NewEvent(EventType($0.type), actor: $0.actor, spanID: $0.span_id, parentSpanID: $0.parent_span_id, phase: $0.phase, payload: $0.payload,
                            timestamp: $0.at.map(Timestamp.init(secondsSince1970:)))
                    }, at: at.map(Timestamp.init(secondsSince1970:)))
            }
        }

        /// A runner's row, as `RunnerRecord`.
        struct Runner: Decodable {
            var id: String
            var spec: String
            var task: String
            var attempt: Int
            var pool: String
            /// Absent in journals written before pools had types other than local processes.
            var pool_type: String?
            var handle: String?
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

            var record: RunnerRecord {
                RunnerRecord(
                    id: RunnerID(id), task: TaskKey(spec: spec, id: TaskID(task)), attempt: attempt, pool: pool,
                    state: RunnerRecord.State(rawValue: state) ?? .running, pid: pid, processStartTime: process_start_time,
                    logPath: log_path, status: status_table.flatMap { path in status_offset.map { StatusRecord(path: path, offset: $0) } },
                    startedAt: Timestamp(secondsSince1970: started_at), lastHeartbeat: last_heartbeat.map(Timestamp.init(secondsSince1970:)),
                    endedAt: ended_at.map(Timestamp.init(secondsSince1970:)), exit: exit,
                    poolType: pool_type.flatMap(PoolType.init(name:)) ?? .localProcess, handle: handle)
            }
        }

        var id: String
        var reason: String
        var transitions: [Record]
        /// Absent in journals written before runner rows were kept in them.
        var runners: [Runner]?
    }
}
