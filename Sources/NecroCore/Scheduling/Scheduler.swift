/// Picks the next task to run and the pool to run it on.
public struct Scheduler: Sendable {
    /// A task placed on a pool; its resources are held until `release`.
    public struct Assignment: Hashable, Sendable {
        public var task: QueuedTask
        public var pool: String
    }

    public var queue: ReadyQueue
    public var pools: PoolAdmission

    public init(policy: SchedulingPolicy, pools: PoolAdmission, weights: [String: Double] = [:]) {
        self.queue = ReadyQueue(policy: policy, weights: weights)
        self.pools = pools
    }

    /// The next task the policy picks among those some pool can take now, or nil.
    public mutating func nextAssignment() -> Assignment? {
        guard pools.hasGlobalCapacity else { return nil }
        let choice: PoolAdmission.Choice = queue.policy == .skillBased ? .mostSpecialised : .leastLoaded
        let pools = self.pools
        guard let (task, pool) = queue.popNext(placing: { pools.choosePool(for: $0, by: choice) }) else {
            return nil
        }
        self.pools.admit(task.resources, to: pool)
        return Assignment(task: task, pool: pool)
    }

    /// Every assignment possible right now.
    public mutating func drain() -> [Assignment] {
        var assignments: [Assignment] = []
        while let next = nextAssignment() { assignments.append(next) }
        return assignments
    }

    /// Frees what an assignment held when its runner ends.
    public mutating func release(_ assignment: Assignment) {
        pools.release(assignment.task.resources, from: assignment.pool)
    }
}
