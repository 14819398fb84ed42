/// What the agents cost, per task and per taskset: the sum of their `agent_usage` events.
public struct AgentUsageTotals: Hashable, Sendable {
    public private(set) var byTask: [TaskKey: AgentUsage] = [:]

    public init() {}

    /// The totals of these events (those not `agent_usage` are passed over).
    public init(_ events: some Sequence<EventRecord>) {
        for event in events { add(event) }
    }

    public mutating func add(_ event: EventRecord) {
        guard event.type == .agentUsage, let task = event.taskID else { return }
        add(TaskKey(spec: event.spec, id: task), event.payload)
    }

    /// Adds an `agent_usage` payload to a task's total.
    public mutating func add(_ task: TaskKey, _ payload: [String: JSONValue]) {
        guard let usage = AgentUsage(payload: payload) else { return }
        byTask[task, default: AgentUsage()] += usage
    }

    public func task(_ key: TaskKey) -> AgentUsage { byTask[key] ?? AgentUsage() }

    public func taskset(_ spec: String) -> AgentUsage {
        byTask.filter { $0.key.spec == spec }.values.reduce(AgentUsage(), +)
    }

    public var all: AgentUsage { byTask.values.reduce(AgentUsage(), +) }
}

extension AgentUsageTotals {
    /// What a taskset's agents cost, from its `agent_usage` events in the registry.
    public init(registry: any Registry, spec: String) throws {
        self.init(try registry.events(EventQuery(spec: spec, type: .agentUsage)))
    }

    /// These totals with a taskset's added (its tasks' totals replaced).
    public mutating func merge(_ other: AgentUsageTotals) {
        byTask.merge(other.byTask) { _, new in new }
    }
}
