/// The kind of an event: the dispatcher's own, and the runner's nineteen from the instrumentation
/// design (`runner_spawn` … `recovery_resumed_from_checkpoint`).
public struct EventType: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    // Registry and dispatcher.
    public static let taskImported = EventType("TaskImported")
    public static let taskSpecChanged = EventType("TaskSpecChanged")
    public static let taskRemovedFromSpec = EventType("TaskRemovedFromSpec")
    /// A task renumbered in its spec goes on under its new id, with its history (`from`, `to`).
    public static let taskRenumbered = EventType("TaskRenumbered")
    public static let taskReady = EventType("TaskReady")
    public static let taskAssigned = EventType("TaskAssigned")
    public static let runnerStarted = EventType("RunnerStarted")
    public static let runnerFinished = EventType("RunnerFinished")
    public static let runnerTimedOut = EventType("RunnerTimedOut")
    public static let taskCompleted = EventType("TaskCompleted")
    public static let taskFailed = EventType("TaskFailed")
    public static let taskRetryScheduled = EventType("TaskRetryScheduled")
    public static let taskBlocked = EventType("TaskBlocked")
    public static let taskCancelled = EventType("TaskCancelled")
    /// An optional task reached its turn and was not run.
    public static let taskSkipped = EventType("TaskSkipped")
    public static let taskPriorityChanged = EventType("TaskPriorityChanged")
    /// A warning: no pool is mapped to the task's skill; it waits for the `default` pool.
    public static let taskSkillUnmapped = EventType("TaskSkillUnmapped")
    /// Nothing runs and the tasks left can only go to disabled pools: they wait for one to be
    /// enabled (`pools`, `tasks`, `count`, `hint`).
    public static let tasksWaitingOnPool = EventType("TasksWaitingOnPool")
    public static let dispatcherStarted = EventType("DispatcherStarted")
    /// A runner a previous dispatcher left running, watched by this one.
    public static let runnerAdopted = EventType("RunnerAdopted")
    // Repo pool.
    public static let slotAllocated = EventType("SlotAllocated")
    public static let slotReleased = EventType("SlotReleased")
    public static let slotAllocationFailed = EventType("SlotAllocationFailed")
    public static let slotMergeConflict = EventType("SlotMergeConflict")
    /// The dispatcher committed what a successful agent left uncommitted.
    public static let taskWorkCommitted = EventType("TaskWorkCommitted")
    /// An attempt's uncommitted work, saved under `refs/necro/attempts/…`.
    public static let attemptSaved = EventType("AttemptSaved")
    public static let dispatcherStopped = EventType("DispatcherStopped")
    /// A shutdown's graceful period is over: the runners still running are stopped now.
    public static let dispatcherStopping = EventType("DispatcherStopping")

    // Runner instrumentation.
    public static let runnerSpawn = EventType("runner_spawn")
    public static let runnerExit = EventType("runner_exit")
    public static let phaseEnter = EventType("phase_enter")
    public static let phaseExit = EventType("phase_exit")
    public static let checkpointBegin = EventType("checkpoint_begin")
    public static let checkpointCommit = EventType("checkpoint_commit")
    public static let checkpointVerified = EventType("checkpoint_verified")
    public static let checkpointInvalid = EventType("checkpoint_invalid")
    public static let gateStart = EventType("gate_start")
    public static let gateResult = EventType("gate_result")
    public static let workItemDispatched = EventType("work_item_dispatched")
    public static let workItemStart = EventType("work_item_start")
    public static let workItemDone = EventType("work_item_done")
    public static let workItemFailed = EventType("work_item_failed")
    public static let leaseAcquired = EventType("lease_acquired")
    public static let leaseRenewed = EventType("lease_renewed")
    public static let recoveryDetected = EventType("recovery_detected")
    public static let recoveryRequeued = EventType("recovery_requeued")
    public static let recoveryResumedFromCheckpoint = EventType("recovery_resumed_from_checkpoint")

    // What the agent a runner wraps says of itself (`necro runner` reads its structured output).
    /// The agent's own session id (`session_id`, `agent`, `model`): what resumes its conversation.
    public static let agentSession = EventType("agent_session")
    /// The agent started a tool: a shell command, a file change (`tool`, `detail`).
    public static let agentToolUse = EventType("agent_tool_use")
    /// What a turn or a run of the agent cost (`cost_usd`, `tokens` by kind, `turns`): added up
    /// per task and per taskset.
    public static let agentUsage = EventType("agent_usage")
    /// A provider's rate or usage limit stopped the agent (`message`, `resets_at`): the attempt is
    /// retried after the reset, without counting.
    public static let agentLimit = EventType("agent_limit")

    /// The agent event types a runner may report beside the nineteen.
    public static let agentTypes: [EventType] = [.agentSession, .agentToolUse, .agentUsage, .agentLimit]

    /// The nineteen event types a runner may emit.
    public static let runnerTypes: [EventType] = [
        .runnerSpawn, .runnerExit, .phaseEnter, .phaseExit, .checkpointBegin, .checkpointCommit,
        .checkpointVerified, .checkpointInvalid, .gateStart, .gateResult, .workItemDispatched, .workItemStart,
        .workItemDone, .workItemFailed, .leaseAcquired, .leaseRenewed, .recoveryDetected, .recoveryRequeued,
        .recoveryResumedFromCheckpoint,
    ]
}

/// A point in time, in seconds since 1970 (Core reads no clock: callers pass it in).
public struct Timestamp: Hashable, Sendable, Comparable, Codable {
    public var secondsSince1970: Double
    public init(secondsSince1970: Double) { self.secondsSince1970 = secondsSince1970 }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.secondsSince1970 < b.secondsSince1970 }
}

/// An event to append.
public struct NewEvent: Hashable, Sendable {
    public var type: EventType
    public var actor: String
    public var spanID: String?
    public var parentSpanID: String?
    public var phase: String?
    public var payload: [String: JSONValue]
    /// When it happened, if not when its turn is recorded: a runner's events sent late (spooled
    /// while the dispatcher was away) keep their own time.
    public var timestamp: Timestamp?

    public init(
        _ type: EventType,
        actor: String = "dispatcher",
        spanID: String? = nil,
        parentSpanID: String? = nil,
        phase: String? = nil,
        payload: [String: JSONValue] = [:],
        timestamp: Timestamp? = nil
    ) {
        self.type = type
        self.actor = actor
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.phase = phase
        self.payload = payload
        self.timestamp = timestamp
    }
}

/// An event as recorded: append-only.
public struct EventRecord: Hashable, Sendable {
    /// Global, increasing: the position for resumable streaming.
    public var id: Int64
    public var spec: String
    /// Nil for the dispatcher's own events about a whole taskset.
    public var taskID: TaskID?
    /// Per task, gapless and strictly increasing from 1.
    public var seq: Int64
    public var type: EventType
    public var actor: String
    public var spanID: String?
    public var parentSpanID: String?
    public var phase: String?
    public var payload: [String: JSONValue]
    public var timestamp: Timestamp

    public init(
        id: Int64, spec: String, taskID: TaskID?, seq: Int64, type: EventType, actor: String, spanID: String?,
        parentSpanID: String?, phase: String?, payload: [String: JSONValue], timestamp: Timestamp
    ) {
        self.id = id
        self.spec = spec
        self.taskID = taskID
        self.seq = seq
        self.type = type
        self.actor = actor
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.phase = phase
        self.payload = payload
        self.timestamp = timestamp
    }
}
