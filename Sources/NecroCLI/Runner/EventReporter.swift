import Foundation
import NecroCore
import Synchronization

/// Sends a runner's events to its dispatcher, in order, from a thread of its own: the runner never
/// waits on the dispatcher. Each event carries the time it happened and the runner's own count
/// (`runner_seq`), so that a batch sent again after a lost answer is recorded once. While the
/// dispatcher cannot be reached (restarting after a kill -9), events wait, written to a spool
/// file as well, and are sent, in order, once it answers again.
final class EventReporter: Sendable {
    private struct State {
        var pending: [[String: JSONValue]] = []
        /// How many of `pending` are in the spool file already.
        var spooled = 0
        var nextSeq = 1
        /// How many events go in one request: halved when the dispatcher finds a request too
        /// large, or cannot take one of its events.
        var batchSize = 500
        /// The `runner_seq` of the last event the dispatcher took.
        var delivered = 0
        var sending = false
        var failing: String?
    }

    private let call: RunnerCall?
    private let path: String
    let spoolPath: String
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled whenever a batch is delivered or found undeliverable: what `flush` waits on.
    private let progress = DispatchSemaphore(value: 0)

    init(call: RunnerCall?, runner: String, spoolPath: String) {
        self.call = call
        self.spoolPath = spoolPath
        path = RunnerCall.path(runner: runner, "events")
        guard call != nil else { return }
        let thread = Thread { [self] in sendLoop() }
        thread.name = "necro-runner-events"
        thread.start()
    }

    /// Queues an event; it is sent as soon as the dispatcher takes it.
    func emit(
        _ type: EventType, span: String = "main", parent: String? = nil, phase: String? = nil, actor: String = "runner",
        _ payload: [String: JSONValue]
    ) {
        guard call != nil else { return }
        let now = Date().timeIntervalSince1970
        state.withLock { state in
            var event: [String: JSONValue] = [
                "event_type": .string(type.rawValue), "span_id": .string(span), "actor": .string(actor), "payload": .object(payload),
                "timestamp": .double(now), "runner_seq": .int(state.nextSeq),
            ]
            if let parent { event["parent_span_id"] = .string(parent) }
            if let phase { event["phase"] = .string(phase) }
            state.nextSeq += 1
            state.pending.append(event)
        }
        wake.signal()
    }

    /// The `runner_seq` the next event gets.
    var nextSeq: Int { state.withLock { $0.nextSeq } }

    /// Waits until the events before `seq` are recorded, at most `seconds`, unless the dispatcher
    /// cannot be reached now (they wait in the spool then): what an agent's `necro step` or `necro
    /// checkpoint` waits for, so that a crash right after it does not lose its checkpoint.
    func waitDelivered(before seq: Int, seconds: Double) {
        guard call != nil else { return }
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let done = state.withLock { $0.delivered >= seq - 1 || $0.failing != nil }
            if done { return }
            _ = progress.wait(timeout: .now() + .milliseconds(50))
        }
    }

    /// Waits until every event is sent, at most `seconds`; false if some are left (in the spool,
    /// which stays for whoever looks: events this runner could not send are not sent by another).
    func flush(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let done = state.withLock { $0.pending.isEmpty && !$0.sending }
            if done { return true }
            _ = progress.wait(timeout: .now() + .milliseconds(50))
        }
        return state.withLock { $0.pending.isEmpty }
    }

    private func sendLoop() {
        while true {
            let failing = state.withLock { $0.failing != nil }
            _ = wake.wait(timeout: .now() + (failing ? 1 : 5))
            while let (batch, count) = state.withLock({ state -> ([JSONValue], Int)? in
                guard !state.pending.isEmpty else { return nil }
                state.sending = true
                let batch = Array(state.pending.prefix(state.batchSize))
                return (batch.map(JSONValue.object), batch.count)
            }) {
                let body = Array(JSONValue.object(["events": .array(batch)]).jsonText.utf8)
                do {
                    let (status, answer) = try call!.post(path, json: body)
                    if (200..<300).contains(status) {
                        delivered(count)
                        continue
                    }
                    let text = answer.trimmingCharacters(in: .whitespacesAndNewlines)
                    if status == 400 || status == 413 {
                        // Too large, or one event it cannot take: sent again in halves, until the
                        // one at fault is alone; that one is said and dropped, the others go on.
                        if count > 1 {
                            state.withLock { $0.batchSize = max(1, count / 2) }
                            continue
                        }
                        FileHandle.standardError.write(Data("necro runner: the dispatcher refused an event (\(status)): \(text)\n".utf8))
                        delivered(count)
                        continue
                    }
                    // Not its runner (yet: a dispatcher restarting takes its API up before it
                    // adopts its runners), or not able to record now: sent again later.
                    failed("the dispatcher answered \(status): \(text)")
                    break
                } catch {
                    failed("\(error)")
                    break
                }
            }
            state.withLock { $0.sending = false }
            progress.signal()
        }
    }

    private func delivered(_ count: Int) {
        let emptySpool = state.withLock { state -> Bool in
            if let last = state.pending[count - 1]["runner_seq"]?.intValue { state.delivered = last }
            state.pending.removeFirst(count)
            state.spooled = max(0, state.spooled - count)
            if state.failing != nil {
                state.failing = nil
                FileHandle.standardError.write(Data("necro runner: the dispatcher answers again; spooled events sent\n".utf8))
            }
            return state.spooled == 0
        }
        if emptySpool { try? FileManager.default.removeItem(atPath: spoolPath) }
        progress.signal()
    }

    /// The dispatcher cannot be reached: what is not in the spool file yet goes there.
    private func failed(_ why: String) {
        let lines = state.withLock { state -> [[String: JSONValue]] in
            if state.failing == nil {
                FileHandle.standardError.write(Data("necro runner: cannot reach the dispatcher (\(why)); events are spooled to \(spoolPath) and sent once it answers\n".utf8))
            }
            state.failing = why
            state.sending = false
            defer { state.spooled = state.pending.count }
            return Array(state.pending[state.spooled...])
        }
        guard !lines.isEmpty else { return }
        let text = lines.map { JSONValue.object($0).jsonText + "\n" }.joined()
        if let handle = FileHandle(forWritingAtPath: spoolPath) ?? {
            _ = FileManager.default.createFile(atPath: spoolPath, contents: nil, attributes: [.posixPermissions: 0o600])
            return FileHandle(forWritingAtPath: spoolPath)
        }() {
            _ = try? handle.seekToEnd()
            try? handle.write(contentsOf: Data(text.utf8))
            try? handle.close()
        }
    }
}
