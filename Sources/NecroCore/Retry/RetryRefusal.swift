extension TaskKey {
    /// Why the task, in `state`, is not retried; nil if it may be (failed or cancelled).
    public static func retryRefusal(_ key: TaskKey, _ state: TaskState) -> String? {
        let why: String
        switch state {
        case .failed, .cancelled: return nil
        case .done: why = "nothing to retry"
        case .skipped: why = "it is optional; necro run --with-optional runs it"
        case .running: why = "wait for it to end, or cancel it"
        default: why = "it runs when its turn comes"
        }
        return "\(key.spec)/\(key.id) is \(state.rawValue): \(why) (only a failed or cancelled task is retried)"
    }
}
