/// One launch of a task: `spec.task.aN`, with a suffix that tells dispatcher starts apart (an
/// attempt cut short by a dispatcher's death is given back, so its number comes again).
public struct RunnerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(task: TaskKey, attempt: Int, suffix: String? = nil) {
        rawValue = "\(task.spec).\(task.id).a\(attempt)" + (suffix.map { "-\($0)" } ?? "")
    }
    public var description: String { rawValue }
    public static func < (a: RunnerID, b: RunnerID) -> Bool { a.rawValue < b.rawValue }
}

/// How a runner ended.
public enum RunnerExit: Hashable, Sendable {
    case exited(code: Int32)
    case signalled(Int32)
    /// It never ran: command not found, not executable, bad working directory.
    case launchFailed(String)
    /// It never ran: merging a dependency's branch into the task's conflicted. Not retried: the
    /// user must look at it.
    case mergeConflict(dependency: TaskID, files: [String])
    /// Killed for going over its memory limit (in MB, if known).
    case outOfMemory(limitMB: Int?)
    /// The runner exited 0, but one of the task's DONE gates did not pass.
    case gateFailed(GateFailure)
    /// It could not be run as configured (no agent to run, no command): not retried, since
    /// another attempt would meet the same configuration.
    case refused(String)
    /// A provider's rate or usage limit stopped the agent: tried again after `retryAfter` (else
    /// the backoff), and the attempt does not count.
    case usageLimited(retryAfter: Duration?, message: String)

    public var succeeded: Bool { self == .exited(code: 0) }

    /// The failure reason as events and `necro status` show it.
    public var reason: String {
        switch self {
        case .exited(let code): return "exit code \(code)"
        case .signalled(let signal): return "killed by signal \(signal)"
        case .launchFailed(let why): return "launch failed: \(why)"
        case .mergeConflict(let dependency, let files):
            return "merge conflict with \(dependency) (files: \(files.joined(separator: ", ")))"
        case .outOfMemory(let limit?): return "out of memory (limit \(limit) MB)"
        case .outOfMemory(nil): return "out of memory"
        case .gateFailed(let failure): return failure.reason
        case .refused(let why): return why
        case .usageLimited(_, let message): return "usage limit: \(message)"
        }
    }
}

/// A DONE gate that did not pass: which, how it ended, and the end of what it printed.
public struct GateFailure: Hashable, Sendable {
    /// The gate's command, as written (its argv joined by spaces).
    public var gate: String
    /// Its exit code; nil if it was killed or could not start.
    public var exitCode: Int32?
    /// How it ended, in words: `exit code 1`, `timed out after 1800 s`…
    public var ending: String
    /// The last lines it printed.
    public var outputTail: String

    public init(gate: String, exitCode: Int32?, ending: String, outputTail: String) {
        self.gate = gate
        self.exitCode = exitCode
        self.ending = ending
        self.outputTail = outputTail
    }

    public var reason: String { "gate `\(gate)` failed: \(ending)" }

    /// A gate's name: its argv, joined by spaces.
    public static func name(_ argv: [String]) -> String { argv.joined(separator: " ") }
}

/// Which signal to send to a runner's process group.
public enum RunnerSignal: Hashable, Sendable {
    /// SIGTERM: stop, cleanly.
    case terminate
    /// SIGKILL: stop now.
    case kill
}

/// What the driver must start.
public struct LaunchRequest: Hashable, Sendable {
    public var runner: RunnerID
    public var task: TaskKey
    public var spec: TaskSpec
    public var attempt: Int
    public var pool: String
    /// The task's direct dependencies, groups expanded.
    public var dependencies: [TaskID]
    /// Its worktree, with a repo pool.
    public var slot: TaskSlot?
    /// The branches of its dependencies, in dependency order, to merge into its own.
    public var dependencyBranches: [DependencyBranch] = []

    public init(
        runner: RunnerID, task: TaskKey, spec: TaskSpec, attempt: Int, pool: String, dependencies: [TaskID], slot: TaskSlot? = nil,
        dependencyBranches: [DependencyBranch] = []
    ) {
        self.runner = runner
        self.task = task
        self.spec = spec
        self.attempt = attempt
        self.pool = pool
        self.dependencies = dependencies
        self.slot = slot
        self.dependencyBranches = dependencyBranches
    }
}

/// A dependency's branch, to merge into a dependent's.
public struct DependencyBranch: Hashable, Sendable {
    public var task: TaskID
    public var branch: String
    public init(task: TaskID, branch: String) {
        self.task = task
        self.branch = branch
    }
}

/// Why a task waits forever: what `necro run` prints when it can go no further.
public struct StuckTask: Hashable, Sendable {
    public var task: TaskKey
    public var waitingOn: [TaskID]
    public var reason: String
}

/// How a run ended.
public struct RunOutcome: Hashable, Sendable {
    /// Every required task is done.
    public var succeeded: Bool
    /// The run stopped on request (a signal) before it could finish.
    public var interrupted: Bool
    public var counts: [TaskState: Int]
    public var failed: [TaskKey]
    public var stuck: [StuckTask]
    /// Why the run gave up: its records could not be written anywhere (the registry nor its
    /// journal) for `record_failure_timeout`, with nothing running. Its counts are the engine's:
    /// more than the registry may hold.
    public var unrecorded: String? = nil
}

/// Something the dispatcher must do, in order.
public enum EngineAction: Hashable, Sendable {
    /// Write these transitions, with their events, in one transaction.
    case record([Transition])
    case launch(LaunchRequest)
    /// The runner's lease ran out: look for a heartbeat it left elsewhere (the registry, its log)
    /// and answer `.heartbeat` or `.leaseLost`.
    case checkLease(RunnerID)
    case signal(RunnerID, RunnerSignal)
    case finished(RunOutcome)
}

/// What happened, as the dispatcher tells the engine.
public enum EngineInput: Hashable, Sendable {
    case runnerStarted(RunnerID, pid: Int32?)
    case runnerExited(RunnerID, RunnerExit)
    /// A sign of life: a heartbeat call, or output.
    case heartbeat(RunnerID)
    case leaseLost(RunnerID)
    /// What the repo pool did with the runner's slot; before the runner's exit.
    case slot(RunnerID, SlotReport)
    /// Time has passed: handle what is due.
    case tick
    case setPriority(TaskKey, Int)
    case cancel(TaskKey)
    /// Puts a failed or cancelled task back, with fresh attempts.
    case retry(TaskKey)
    case setPoolEnabled(String, Bool)
    /// Events a running runner reported of its own work (through the API): recorded on its task,
    /// and its lease renewed.
    case runnerReported(RunnerID, [NewEvent])
    /// A taskset to run from now on (`necro serve`), with the states the registry holds.
    case load(TaskSetSpec, [TaskRecord])
    /// Start nothing new; let running runners finish until the graceful timeout.
    case shutdown
    /// Stop running runners now.
    case shutdownNow
    /// A turn's record could not be written anywhere (neither the journal nor the registry took
    /// it): nothing more starts until one is. Runners running are watched as before.
    case recordsFailing(String)
    /// Records are written again: work starts again.
    case recordsWritten
    /// A launch the engine asked for was not carried out, because its record could not be written:
    /// its task goes back to the queue and the attempt is given back.
    case launchWithdrawn(RunnerID, reason: String)
}

/// The runners a dispatcher that stopped left `running`, as recovery found them.
public struct RecoveredRunners: Hashable, Sendable {
    /// Still running: watched from now on as if started here.
    public var adopted: [RunnerRecord]
    /// Ended while no dispatcher was there, with how, as their supervisors recorded it (nil: not
    /// recorded: never started, or killed with the supervisor).
    public var ended: [EndedRunner]

    public init(adopted: [RunnerRecord] = [], ended: [EndedRunner] = []) {
        self.adopted = adopted
        self.ended = ended
    }
}

/// A runner that ended while no dispatcher was there.
public struct EndedRunner: Hashable, Sendable {
    public var runner: RunnerRecord
    public var exit: RunnerExit?

    public init(runner: RunnerRecord, exit: RunnerExit?) {
        self.runner = runner
        self.exit = exit
    }
}

/// The dispatcher's state as observers see it: pools and their use, the queue, tasks per state.
public struct DispatchSnapshot: Hashable, Sendable {
    public struct Pool: Hashable, Sendable {
        public var limits: PoolLimits
        public var usage: PoolAdmission.Usage

        /// Running runners over the pool's concurrency: 0 to 1.
        public var utilization: Double { limits.maxConcurrency > 0 ? Double(usage.running) / Double(limits.maxConcurrency) : 0 }
    }

    public var pools: [Pool]
    /// Tasks ready and waiting for a place.
    public var queueDepth: Int
    /// Per taskset, how many of its tasks (groups aside) are in each state.
    public var tasks: [String: [TaskState: Int]]
    /// Runners running, in all pools.
    public var running: Int
    /// Tasks that can only go to disabled pools, by those pools (when nothing runs).
    public var waitingOnDisabledPools: [[String]: [TaskKey]] = [:]

    public init(
        pools: [Pool] = [], queueDepth: Int = 0, tasks: [String: [TaskState: Int]] = [:], running: Int = 0,
        waitingOnDisabledPools: [[String]: [TaskKey]] = [:]
    ) {
        self.waitingOnDisabledPools = waitingOnDisabledPools
        self.pools = pools
        self.queueDepth = queueDepth
        self.tasks = tasks
        self.running = running
    }
}
