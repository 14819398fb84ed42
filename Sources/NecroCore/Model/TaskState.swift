/// Where a task stands.
public enum TaskState: String, Hashable, Sendable, Codable, CaseIterable {
    /// Waiting on dependencies (or on a failed dependency, with a reason).
    case blocked
    case ready
    case running
    case done
    /// Failed after its last attempt.
    case failed
    case cancelled
    /// An optional task not run (`--with-optional` runs it): what waits on it goes on.
    case skipped

    /// A terminal state ends the task's part in the run.
    public var isTerminal: Bool {
        switch self {
        case .done, .failed, .cancelled, .skipped: return true
        case .blocked, .ready, .running: return false
        }
    }
}
