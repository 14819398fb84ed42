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
        var sending = false
        var refused: String?
        var failing: String?
    }

    private let call: RunnerCall?
    private let path: String
    let spoolPath: String
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    init(call: RunnerCall?, runner: String, spoolPath: String) {
        self.call = call
        self.spoolPath = spoolPath
        let encoded = runner.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? runner
        path = "/v1/runners/\(encoded)/events"
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

    /// Waits until every event is sent, at most `seconds`; false if some are left (in the spool).
    func flush(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let done = state.withLock { ($0.pending.isEmpty && !$0.sending) || $0.refused != nil }
            if done { return true }
            wake.signal()
            usleep(20_000)
        }
        return state.withLock { $0.pending.isEmpty }
    }

    private func sendLoop() {
        while true {
            let failing = state.withLock { $0.failing != nil }
            _ = wake.wait(timeout: .now() + (failing ? 1 : 5))
            while let (batch, count) = state.withLock({ state -> ([JSONValue], Int)? in
                guard state.refused == nil, !state.pending.isEmpty else { return nil }
                state.sending = true
                let batch = Array(state.pending.prefix(500))
                return (batch.map(JSONValue.object), batch.count)
            }) {
                let body = Array(JSONValue.object(["events": .array(batch)]).jsonText.utf8)
                do {
                    let (status, answer) = try call!.post(path, json: body)
                    if (200..<300).contains(status) {
                        delivered(count)
                        continue
                    }
                    if status >= 500 || status == 429 {
                        failed("the dispatcher answered \(status)")
                        break
                    }
                    // The dispatcher will not take them (the runner is not its any more).
                    let why = "the dispatcher refused the runner's events (\(status)): \(answer.trimmingCharacters(in: .whitespacesAndNewlines))"
                    FileHandle.standardError.write(Data("necro runner: \(why)\n".utf8))
                    state.withLock {
                        $0.refused = why
                        $0.sending = false
                    }
                    return
                } catch {
                    failed("\(error)")
                    break
                }
            }
            state.withLock { $0.sending = false }
        }
    }

    private func delivered(_ count: Int) {
        let emptySpool = state.withLock { state -> Bool in
            state.pending.removeFirst(count)
            state.spooled = max(0, state.spooled - count)
            if state.failing != nil {
                state.failing = nil
                FileHandle.standardError.write(Data("necro runner: the dispatcher answers again; spooled events sent\n".utf8))
            }
            return state.spooled == 0
        }
        if emptySpool { try? FileManager.default.removeItem(atPath: spoolPath) }
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
            _ = FileManager.default.createFile(atPath: spoolPath, contents: nil)
            return FileHandle(forWritingAtPath: spoolPath)
        }() {
            _ = try? handle.seekToEnd()
            try? handle.write(contentsOf: Data(text.utf8))
            try? handle.close()
        }
    }
}
