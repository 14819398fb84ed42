/// A task with its run state, as the registry holds it.
public struct TaskRecord: Hashable, Sendable {
    public var spec: String
    public var task: TaskSpec
    public var state: TaskState
    /// Attempts started so far.
    public var attempts: Int
    /// Why the task last failed or is blocked.
    public var reason: String?
    public var updatedAt: Timestamp
    /// The worktree of its last attempt, and its branch, with a repo pool.
    public var slot: TaskSlot?

    public init(spec: String, task: TaskSpec, state: TaskState, attempts: Int, reason: String?, updatedAt: Timestamp) {
        self.spec = spec
        self.task = task
        self.state = state
        self.attempts = attempts
        self.reason = reason
        self.updatedAt = updatedAt
    }

    public var key: TaskKey { TaskKey(spec: spec, id: task.id) }
}

/// A taskset as the registry holds it.
public struct TaskSetRecord: Hashable, Sendable {
    public var name: String
    /// Goes up by one each time an import changes the taskset.
    public var version: Int
    public var weight: Double
    public var source: String?
    public var importedAt: Timestamp
    /// Its optional tasks run (`necro run --with-optional`); else they are skipped.
    public var runOptional: Bool

    public init(name: String, version: Int, weight: Double, source: String?, importedAt: Timestamp, runOptional: Bool = false) {
        self.name = name
        self.version = version
        self.weight = weight
        self.runOptional = runOptional
        self.source = source
        self.importedAt = importedAt
    }
}

/// What an import did.
public struct ImportReport: Hashable, Sendable {
    public var spec: String
    public var version: Int
    public var created: Bool
    public var added: [TaskID]
    public var changed: [TaskID]
    public var removed: [TaskID]
    public var unchanged: Int
    /// Tasks that went on under a new id (renumbered), with their history.
    public var renumbered: [ReimportPlan.Rename]
    /// Tasks moved aside, with their history, because their id now names another task.
    public var movedAside: [ReimportPlan.Rename]

    public init(
        spec: String, version: Int, created: Bool, added: [TaskID], changed: [TaskID], removed: [TaskID], unchanged: Int,
        renumbered: [ReimportPlan.Rename] = [], movedAside: [ReimportPlan.Rename] = []
    ) {
        self.spec = spec
        self.version = version
        self.created = created
        self.added = added
        self.changed = changed
        self.removed = removed
        self.unchanged = unchanged
        self.renumbered = renumbered
        self.movedAside = movedAside
    }
}

/// A state change of one task (or, with no task, events about a whole taskset) and the events
/// that record it: written together or not at all.
public struct Transition: Hashable, Sendable {
    public var spec: String
    public var task: TaskID?
    /// The states the task must be in for the change to apply; nil accepts any.
    public var expected: Set<TaskState>?
    public var newState: TaskState?
    public var attempts: Int?
    /// Sets the reason; `.some(nil)` clears it.
    public var reason: String??
    /// Records the task's worktree and branch, when set.
    public var slot: TaskSlot?
    public var events: [NewEvent]
    /// When it happened; nil: when it is written. The dispatcher stamps each turn as it makes it,
    /// so that a registry that takes the record late (locked, full) does not date it late.
    public var at: Timestamp?

    public init(
        spec: String,
        task: TaskID?,
        expected: Set<TaskState>? = nil,
        to newState: TaskState? = nil,
        attempts: Int? = nil,
        reason: String?? = nil,
        slot: TaskSlot? = nil,
        events: [NewEvent] = [],
        at: Timestamp? = nil
    ) {
        self.at = at
        self.spec = spec
        self.task = task
        self.expected = expected
        self.newState = newState
        self.attempts = attempts
        self.reason = reason
        self.slot = slot
        self.events = events
    }
}

/// Which tasks to read.
public struct TaskFilter: Hashable, Sendable {
    public var spec: String?
    /// Only tasks in one of these states.
    public var states: Set<TaskState>?
    /// Only tasks that need this skill.
    public var skill: String?
    public var limit: Int?

    public init(spec: String? = nil, states: Set<TaskState>? = nil, skill: String? = nil, limit: Int? = nil) {
        self.spec = spec
        self.states = states
        self.skill = skill
        self.limit = limit
    }
}

/// Which events to read.
public struct EventQuery: Hashable, Sendable {
    /// Only events with a greater global id.
    public var after: Int64
    public var spec: String?
    public var task: TaskID?
    /// Only events of this type.
    public var type: EventType?
    public var limit: Int?
    /// The newest first (the `limit` newest, with a limit), instead of the oldest.
    public var newestFirst: Bool

    public init(
        after: Int64 = 0, spec: String? = nil, task: TaskID? = nil, type: EventType? = nil, limit: Int? = nil,
        newestFirst: Bool = false
    ) {
        self.after = after
        self.spec = spec
        self.task = task
        self.type = type
        self.limit = limit
        self.newestFirst = newestFirst
    }
}

/// Why the registry refused a request.
public struct RegistryError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let unknownTask = Code(rawValue: "unknown-task")
        public static let unknownSpec = Code(rawValue: "unknown-spec")
        public static let stateConflict = Code(rawValue: "state-conflict")
        public static let invalidSpec = Code(rawValue: "invalid-spec")
        public static let storage = Code(rawValue: "storage")
        /// Another spec of the same name is already in the registry.
        public static let specConflict = Code(rawValue: "spec-conflict")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// One launch of a task, as the registry keeps it.
public struct RunnerRecord: Hashable, Sendable {
    public enum State: String, Hashable, Sendable {
        case running, exited
    }

    public var id: RunnerID
    public var task: TaskKey
    public var attempt: Int
    public var pool: String
    /// Where it runs: what launcher started it, and so which one adopts it after a restart.
    public var poolType: PoolType
    /// What its launcher finds it by (`RunnerHandle.value`): a container's id…; nil until it started.
    public var handle: String?
    public var state: State
    public var pid: Int32?
    /// With the pid, identifies the process across pid reuse.
    public var processStartTime: UInt64?
    public var logPath: String?
    /// Where its supervisor records how it ended, whether or not a dispatcher is there.
    public var status: StatusRecord?
    public var startedAt: Timestamp
    public var lastHeartbeat: Timestamp?
    public var endedAt: Timestamp?
    /// How it ended: "exit code 1", "killed by signal 9"…
    public var exit: String?

    public init(
        id: RunnerID, task: TaskKey, attempt: Int, pool: String, state: State = .running, pid: Int32? = nil,
        processStartTime: UInt64? = nil, logPath: String? = nil, status: StatusRecord? = nil, startedAt: Timestamp,
        lastHeartbeat: Timestamp? = nil, endedAt: Timestamp? = nil, exit: String? = nil, poolType: PoolType = .localProcess,
        handle: String? = nil
    ) {
        self.id = id
        self.task = task
        self.attempt = attempt
        self.pool = pool
        self.poolType = poolType
        self.handle = handle
        self.state = state
        self.pid = pid
        self.processStartTime = processStartTime
        self.logPath = logPath
        self.status = status
        self.startedAt = startedAt
        self.lastHeartbeat = lastHeartbeat
        self.endedAt = endedAt
        self.exit = exit
    }
}

/// The durable truth about tasksets, tasks, runners and events.
public protocol Registry: Sendable {
    /// Imports a validated taskset, or updates it: changed tasks take their new definition, the
    /// state and events of unchanged ones are kept, and removed ones are cancelled.
    @discardableResult
    func importTaskSet(_ spec: TaskSetSpec, source: String?) throws -> ImportReport
    func taskSets() throws -> [TaskSetRecord]
    func tasks(spec: String) throws -> [TaskRecord]
    /// Applies transitions in one transaction, appending their events, and saves runner rows in
    /// the same transaction; all or nothing.
    @discardableResult
    func apply(_ transitions: [Transition], saving runners: [RunnerRecord]) throws -> [EventRecord]
    func events(_ query: EventQuery) throws -> [EventRecord]

    /// Applies batches that were written to the journal, in order, each at most once ever: a
    /// batch whose id was applied before is skipped. One transaction for all. The ids in
    /// `forgetting` belong to batches no journal holds any more: their marks are dropped.
    @discardableResult
    func applyOnce(_ batches: [JournalBatch], forgetting: ClosedRange<String>?) throws -> [EventRecord]

    /// Creates or updates a runner's row; a heartbeat already recorded is kept.
    func saveRunner(_ runner: RunnerRecord) throws
    /// Runners, the running ones only if asked.
    func runners(runningOnly: Bool) throws -> [RunnerRecord]
    /// Records a sign of life from a running runner; false if no such runner is running.
    func heartbeat(runner: RunnerID) throws -> Bool
}

extension Registry {
    /// Applies transitions in one transaction, appending their events; all or nothing.
    @discardableResult
    public func apply(_ transitions: [Transition]) throws -> [EventRecord] {
        try apply(transitions, saving: [])
    }

    /// Applies journal batches, each at most once ever (see `applyOnce(_:forgetting:)`).
    @discardableResult
    public func applyOnce(_ batches: [JournalBatch]) throws -> [EventRecord] {
        try applyOnce(batches, forgetting: nil)
    }
}

/// One turn's records as the journal keeps them until the registry has them: its transitions and
/// the rows of its runners (written before they start, so that a dispatcher killed meanwhile
/// leaves none unknown).
public struct JournalBatch: Sendable {
    public var id: String
    public var transitions: [Transition]
    public var runners: [RunnerRecord]

    public init(id: String, transitions: [Transition], runners: [RunnerRecord] = []) {
        self.id = id
        self.transitions = transitions
        self.runners = runners
    }
}
