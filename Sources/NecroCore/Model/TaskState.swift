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

    /// A terminal state ends the task's part in the run.
    public var isTerminal: Bool {
        switch self {
        case .done, .failed, .cancelled: return true
        case .blocked, .ready, .running: return false
        }
    }
}
