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

/// One step of a task: an unnumbered checkbox written under it (a work item the agent is shown).
public struct TaskStep: Hashable, Sendable, Codable {
    public var title: String
    /// Ticked in the spec (`[x]`).
    public var done: Bool

    public init(_ title: String, done: Bool = false) {
        self.title = title
        self.done = done
    }

    /// As `TASK_CONTEXT` and the API show it: `{"title": …, "done": …}`.
    public var json: JSONValue { .object(["title": .string(title), "done": .bool(done)]) }
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
    /// The task's steps (unnumbered checkboxes under it), in the order written.
    public var steps: [TaskStep]
    /// A task with subtasks that also has work of its own: it runs before its subtasks (they
    /// depend on it), and what depends on it waits for it and for them. Without it, a task with
    /// subtasks is a group that never runs.
    public var runsOwnWork: Bool

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
        markedDone: Bool = false,
        steps: [TaskStep] = [],
        runsOwnWork: Bool = false
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
        self.steps = steps
        self.runsOwnWork = runsOwnWork
    }

    /// Reads definitions written before `steps` and `runsOwnWork` existed as having none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(TaskID.self, forKey: .id)
        title = try c.decode(String.self, forKey: .title)
        description = try c.decode(String.self, forKey: .description)
        dependencies = try c.decode([TaskID].self, forKey: .dependencies)
        requiredSkill = try c.decodeIfPresent(String.self, forKey: .requiredSkill)
        priority = try c.decode(Int.self, forKey: .priority)
        optional = try c.decode(Bool.self, forKey: .optional)
        resources = try c.decode(TaskResources.self, forKey: .resources)
        timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds)
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts)
        gates = try c.decode([[String]].self, forKey: .gates)
        metadata = try c.decode([String: JSONValue].self, forKey: .metadata)
        parent = try c.decodeIfPresent(TaskID.self, forKey: .parent)
        isGroup = try c.decode(Bool.self, forKey: .isGroup)
        markedDone = try c.decode(Bool.self, forKey: .markedDone)
        steps = try c.decodeIfPresent([TaskStep].self, forKey: .steps) ?? []
        runsOwnWork = try c.decodeIfPresent(Bool.self, forKey: .runsOwnWork) ?? false
    }
}

/// One spec: its name and its tasks, in declaration order.
public struct TaskSetSpec: Hashable, Sendable, Codable {
    public var name: String
    /// Share of the dispatcher under the `fair-share` policy, relative to other tasksets.
    public var weight: Double
    public var tasks: [TaskSpec]
    /// Run the optional tasks too; by default they are skipped (`skipped`).
    public var runOptional: Bool

    public init(name: String, weight: Double = 1, tasks: [TaskSpec], runOptional: Bool = false) {
        self.name = name
        self.weight = weight
        self.tasks = tasks
        self.runOptional = runOptional
    }
}
