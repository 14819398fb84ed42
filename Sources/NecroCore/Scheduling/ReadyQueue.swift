import HeapModule

/// The tasks waiting to run, ordered by a scheduling policy.
///
/// Tasks are kept in buckets, one per (taskset, skill), each a heap; the choice of the next task
/// compares only the buckets' heads, so a push, a pop and a priority change cost O(log n) plus the
/// number of buckets. A bucket's head that cannot be placed does not hold back other buckets.
public struct ReadyQueue: Sendable {
    private struct BucketKey: Hashable, Sendable {
        var spec: String
        var skill: String?
    }

    private struct Entry: Comparable, Sendable {
        var rank: Int  // lower first: the negated priority, or 0 under fifo
        var sequence: UInt64
        var token: UInt64  // matches `Live.token` while this entry is current
        var key: TaskKey

        static func < (a: Entry, b: Entry) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.sequence < b.sequence
        }
        static func == (a: Entry, b: Entry) -> Bool { a.rank == b.rank && a.sequence == b.sequence }
    }

    private struct Live: Sendable {
        var task: QueuedTask
        var sequence: UInt64
        var token: UInt64
    }

    public let policy: SchedulingPolicy
    private var buckets: [BucketKey: Heap<Entry>] = [:]
    private var live: [TaskKey: Live] = [:]
    private var nextSequence: UInt64 = 0
    private var nextToken: UInt64 = 0
    private var liveCountBySpec: [String: Int] = [:]
    private var weights: [String: Double]
    /// Fair share: each taskset's virtual time; the taskset furthest behind goes next.
    private var pass: [String: Double] = [:]
    private var virtualTime: Double = 0

    /// - Parameter weights: taskset weights for `fair-share` (default 1 each).
    public init(policy: SchedulingPolicy, weights: [String: Double] = [:]) {
        self.policy = policy
        self.weights = weights
    }

    public var count: Int { live.count }
    public var isEmpty: Bool { live.isEmpty }

    public func task(_ key: TaskKey) -> QueuedTask? { live[key]?.task }

    /// Every queued task, in no order.
    public var tasks: [QueuedTask] { live.values.map(\.task) }

    public mutating func setWeight(_ weight: Double, forSpec spec: String) {
        weights[spec] = weight
    }

    /// Adds a task; a task already queued is left where it is.
    public mutating func push(_ task: QueuedTask) {
        guard live[task.key] == nil else { return }
        let sequence = nextSequence
        nextSequence += 1
        if liveCountBySpec[task.key.spec, default: 0] == 0 {
            // A taskset that (re)joins starts level with the others, not with credit from its absence.
            pass[task.key.spec] = max(pass[task.key.spec] ?? 0, virtualTime)
        }
        liveCountBySpec[task.key.spec, default: 0] += 1
        let token = makeToken()
        live[task.key] = Live(task: task, sequence: sequence, token: token)
        buckets[BucketKey(spec: task.key.spec, skill: task.skill), default: Heap()]
            .insert(Entry(rank: rank(task.priority), sequence: sequence, token: token, key: task.key))
    }

    /// Changes the priority of a waiting task; its place follows. Returns false if it is not queued.
    @discardableResult
    public mutating func setPriority(_ priority: Int, for key: TaskKey) -> Bool {
        guard var entry = live[key] else { return false }
        entry.token = makeToken()
        entry.task.priority = priority
        live[key] = entry
        buckets[BucketKey(spec: key.spec, skill: entry.task.skill), default: Heap()]
            .insert(Entry(rank: rank(priority), sequence: entry.sequence, token: entry.token, key: key))
        return true
    }

    /// Takes a task out of the queue without running it.
    @discardableResult
    public mutating func remove(_ key: TaskKey) -> QueuedTask? {
        // Its heap entries are now stale and are dropped when they reach the top.
        guard let removed = live.removeValue(forKey: key) else { return nil }
        liveCountBySpec[key.spec, default: 1] -= 1
        return removed.task
    }

    /// Pops the task the policy wants next among those `place` can place now, with its placement.
    public mutating func popNext<Placement>(placing place: (QueuedTask) -> Placement?) -> (
        task: QueuedTask, placement: Placement
    )? {
        var heads: [(bucket: BucketKey, entry: Entry)] = []
        for bucketKey in Array(buckets.keys) {
            if let head = cleanHead(bucketKey) { heads.append((bucketKey, head)) }
        }
        switch policy {
        case .fifo:
            heads.sort { $0.entry.sequence < $1.entry.sequence }
        case .fairShare:
            heads.sort {
                let a = pass[$0.bucket.spec] ?? 0, b = pass[$1.bucket.spec] ?? 0
                return a != b ? a < b : $0.entry < $1.entry
            }
        default:
            heads.sort { $0.entry < $1.entry }
        }
        for head in heads {
            guard let task = live[head.entry.key]?.task, let placement = place(task) else { continue }
            buckets[head.bucket]?.removeMin()
            if buckets[head.bucket]?.isEmpty == true { buckets[head.bucket] = nil }
            live[head.entry.key] = nil
            liveCountBySpec[head.bucket.spec, default: 1] -= 1
            let spec = head.bucket.spec
            let taskPass = pass[spec] ?? 0
            virtualTime = max(virtualTime, taskPass)
            pass[spec] = taskPass + 1 / max(weights[spec] ?? 1, 0.000_001)
            return (task, placement)
        }
        return nil
    }

    /// Pops the next task regardless of placement.
    public mutating func popNext() -> QueuedTask? {
        popNext(placing: { _ in () })?.task
    }

    private func rank(_ priority: Int) -> Int { policy == .fifo ? 0 : -priority }

    private mutating func makeToken() -> UInt64 {
        nextToken += 1
        return nextToken
    }

    /// Drops stale entries (removed tasks, old priorities) from the top of a bucket.
    private mutating func cleanHead(_ bucketKey: BucketKey) -> Entry? {
        while let head = buckets[bucketKey]?.min {
            if let entry = live[head.key], entry.token == head.token { return head }
            buckets[bucketKey]?.removeMin()
        }
        buckets[bucketKey] = nil
        return nil
    }
}
