/// What a task needs while it runs; the pool's defaults apply where a field is nil.
public struct TaskResources: Hashable, Sendable, Codable {
    /// CPU cores.
    public var cpu: Double?
    /// Memory in megabytes.
    public var memoryMB: Int?

    public init(cpu: Double? = nil, memoryMB: Int? = nil) {
        self.cpu = cpu
        self.memoryMB = memoryMB
    }

    public static let unspecified = TaskResources()
}

/// One task as the spec declares it: its definition, not its run state.
public struct TaskSpec: Hashable, Sendable, Codable {
    public var id: TaskID
    public var title: String
    public var description: String
    /// Dependencies as declared. A dependency on a group means on every task of the group.
    public var dependencies: [TaskID]
    public var requiredSkill: String?
    /// Higher runs first under the `priority` policy.
    public var priority: Int
    /// An optional task may fail without failing the run.
    public var optional: Bool
    public var resources: TaskResources
    public var timeoutSeconds: Int?
    public var maxAttempts: Int?
    /// Commands (argv arrays) that must pass before the task counts as done.
    public var gates: [[String]]
    public var metadata: [String: JSONValue]
    /// The group this task belongs to, if any.
    public var parent: TaskID?
    /// A group is done when all its subtasks are; it never runs by itself.
    public var isGroup: Bool
    /// Marked done in the spec (`[x]`): imported as already done.
    public var markedDone: Bool

    public init(
        id: TaskID,
        title: String,
        description: String = "",
        dependencies: [TaskID] = [],
        requiredSkill: String? = nil,
        priority: Int = 0,
        optional: Bool = false,
        resources: TaskResources = .unspecified,
        timeoutSeconds: Int? = nil,
        maxAttempts: Int? = nil,
        gates: [[String]] = [],
        metadata: [String: JSONValue] = [:],
        parent: TaskID? = nil,
        isGroup: Bool = false,
        markedDone: Bool = false
    ) {
        self.id = id
        self.title = title
        self.description = description
        self.dependencies = dependencies
        self.requiredSkill = requiredSkill
        self.priority = priority
        self.optional = optional
        self.resources = resources
        self.timeoutSeconds = timeoutSeconds
        self.maxAttempts = maxAttempts
        self.gates = gates
        self.metadata = metadata
        self.parent = parent
        self.isGroup = isGroup
        self.markedDone = markedDone
    }
}

/// One spec: its name and its tasks, in declaration order.
public struct TaskSetSpec: Hashable, Sendable, Codable {
    public var name: String
    /// Share of the dispatcher under the `fair-share` policy, relative to other tasksets.
    public var weight: Double
    public var tasks: [TaskSpec]

    public init(name: String, weight: Double = 1, tasks: [TaskSpec]) {
        self.name = name
        self.weight = weight
        self.tasks = tasks
    }
}
