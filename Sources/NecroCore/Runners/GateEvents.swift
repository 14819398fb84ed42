/// How a DONE gate ended, whoever ran it (the dispatcher, or `necro runner`).
public struct GateOutcome: Hashable, Sendable {
    /// Its exit code, if it exited.
    public var exitCode: Int32?
    /// The signal that killed it, if one did.
    public var signal: Int32?
    /// Stopped at its timeout (after `timeoutSeconds`).
    public var timedOut: Bool
    public var timeoutSeconds: Double
    /// It could not be started: why.
    public var notStarted: String?

    public init(exitCode: Int32? = nil, signal: Int32? = nil, timedOut: Bool = false, timeoutSeconds: Double = 0, notStarted: String? = nil) {
        self.exitCode = exitCode
        self.signal = signal
        self.timedOut = timedOut
        self.timeoutSeconds = timeoutSeconds
        self.notStarted = notStarted
    }

    public var passed: Bool { exitCode == 0 && !timedOut && notStarted == nil }

    /// How it ended, in words: `exit code 1`, `timed out after 1800 s`, `killed by signal 9`.
    public var ending: String {
        if timedOut { return "timed out after \(Int(timeoutSeconds)) s" }
        if let notStarted { return "not started: \(notStarted)" }
        if let exitCode { return "exit code \(exitCode)" }
        return signal.map { "killed by signal \($0)" } ?? "ended without a status"
    }

    public var status: String { passed ? "passed" : timedOut ? "timed_out" : "failed" }
}

/// The payloads of a gate's events (`gate_start`, `gate_result`), the same whoever runs it.
public enum GateEvents {
    public static func start(_ name: String, timeoutSeconds: Double, explanation: String) -> [String: JSONValue] {
        ["gate_name": .string(name), "timeout_seconds": .double(timeoutSeconds), "explanation": .string(explanation)]
    }

    public static func result(_ name: String, _ outcome: GateOutcome, seconds: Double, outputTail: String) -> [String: JSONValue] {
        [
            "gate_name": .string(name), "status": .string(outcome.status), "passed": .bool(outcome.passed),
            "exit_code": outcome.exitCode.map { .int(Int($0)) } ?? .null, "signal": outcome.signal.map { .int(Int($0)) } ?? .null,
            "duration_seconds": .double((seconds * 1000).rounded() / 1000), "output_tail": .string(outputTail),
            "ending": .string(outcome.ending),
            "explanation": .string(outcome.passed ? "the gate passed" : "the gate did not pass (\(outcome.ending)): the attempt fails"),
        ]
    }

    /// The failure a gate that did not pass makes of its attempt.
    public static func failure(_ name: String, _ outcome: GateOutcome, outputTail: String) -> GateFailure {
        GateFailure(gate: name, exitCode: outcome.exitCode, ending: outcome.ending, outputTail: outputTail)
    }
}

/// The end of what a process printed: its last `limit` bytes, from the start of a line when they
/// were cut.
public enum OutputTail {
    public static let limit = 4096

    public static func text(_ bytes: some Collection<UInt8>, cut: Bool) -> String {
        var text = String(decoding: bytes, as: UTF8.self)
        if cut, let newline = text.firstIndex(of: "\n") { text = String(text[text.index(after: newline)...]) }
        return text
    }
}
