/// How ready tasks are ordered, and which pool a task goes to.
public struct SchedulingPolicy: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    private init(_ name: String) { self.name = name }

    /// In the order tasks became ready.
    public static let fifo = SchedulingPolicy("fifo")
    /// Higher priority first, in ready order among equals.
    public static let priority = SchedulingPolicy("priority")
    /// Priority order, and each task goes to the most specialised of the pools its skill maps to.
    public static let skillBased = SchedulingPolicy("skill-based")
    /// Tasksets take turns in proportion to their weights; priority order within a taskset.
    public static let fairShare = SchedulingPolicy("fair-share")

    public static let all: [SchedulingPolicy] = [.fifo, .priority, .skillBased, .fairShare]

    public init?(name: String) {
        guard let policy = Self.all.first(where: { $0.name == name }) else { return nil }
        self = policy
    }

    public var description: String { name }
}

/// A task across tasksets: its spec's name and its id.
public struct TaskKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var spec: String
    public var id: TaskID

    public init(spec: String, id: TaskID) {
        self.spec = spec
        self.id = id
    }

    public var description: String { "\(spec)/\(id)" }

    public static func < (lhs: TaskKey, rhs: TaskKey) -> Bool {
        lhs.spec != rhs.spec ? lhs.spec < rhs.spec : lhs.id < rhs.id
    }
}

/// A ready task as the queue and the pools see it.
public struct QueuedTask: Hashable, Sendable {
    public var key: TaskKey
    public var skill: String?
    public var priority: Int
    public var resources: TaskResources

    public init(key: TaskKey, skill: String? = nil, priority: Int = 0, resources: TaskResources = .unspecified) {
        self.key = key
        self.skill = skill
        self.priority = priority
        self.resources = resources
    }
}
