/// Everything needed to start one runner process.
public struct RunnerLaunch: Hashable, Sendable {
    public var runner: RunnerID
    /// The program and its arguments; never passed through a shell.
    public var argv: [String]
    /// The whole environment of the runner.
    public var environment: [String: String]
    public var workingDirectory: String
    /// Where its stdout and stderr go, capped in size.
    public var logPath: String
    /// Where its exit status is written when it ends, whether or not the dispatcher is still
    /// there to see it; nil for none.
    public var status: StatusRecord?
    /// Added to the dispatcher's own niceness for the runner (capped at 19).
    public var nice: Int
    /// Its task, attempt and pool: what a container or a Job is labelled with.
    public var task: TaskKey
    public var attempt: Int
    public var pool: String
    /// The task's resources, the pool's defaults filled in: a container's hard limits.
    public var resources: TaskResources
    /// Host folders the runner needs besides its working folder, at the same path: the
    /// repository's git folder for a worktree, the runner API's socket folder.
    public var sharedPaths: [String]

    public init(
        runner: RunnerID, argv: [String], environment: [String: String], workingDirectory: String, logPath: String,
        status: StatusRecord? = nil, nice: Int = 0, task: TaskKey = TaskKey(spec: "", id: TaskID("")), attempt: Int = 1,
        pool: String = "", resources: TaskResources = .unspecified, sharedPaths: [String] = []
    ) {
        self.runner = runner
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.logPath = logPath
        self.status = status
        self.nice = nice
        self.task = task
        self.attempt = attempt
        self.pool = pool
        self.resources = resources
        self.sharedPaths = sharedPaths
    }
}

/// Where a launcher finds its runner again: recorded by the dispatcher as the launcher gave it,
/// handed back at adoption, never looked into.
public struct RunnerHandle: Hashable, Sendable {
    /// The launcher's own reference: a container's id, a Job's namespace/name/uid, a local
    /// process's `pid@start-time`.
    public var value: String
    /// For a runner that is a process on this machine: its pid and the process's start time (to
    /// tell it from a later process with the same pid), as `necro status` shows them.
    public var pid: Int32?
    public var processStartTime: UInt64?

    public init(_ value: String, pid: Int32? = nil, processStartTime: UInt64? = nil) {
        self.value = value
        self.pid = pid
        self.processStartTime = processStartTime
    }
}

/// A runner's record in a status table: where its supervisor writes how it ended.
public struct StatusRecord: Hashable, Sendable {
    /// The table file.
    public var path: String
    /// The record's byte offset in it.
    public var offset: Int

    public init(path: String, offset: Int) {
        self.path = path
        self.offset = offset
    }
}

/// What a launcher reports about its runners.
public enum RunnerEvent: Hashable, Sendable {
    /// Running, found again by its handle.
    case started(RunnerID, RunnerHandle)
    /// It wrote output (a sign of life); the last complete line, for progress displays.
    case output(RunnerID, lastLine: String)
    case exited(RunnerID, RunnerExit)
}

/// A runner a previous dispatcher started and left running: watched from now on as if started here.
public struct RunnerAdoption: Hashable, Sendable {
    public var runner: RunnerID
    /// What its launcher gave when it started (a local runner: its supervisor, the leader of its
    /// process group).
    public var handle: RunnerHandle
    /// Where its output goes (a local runner's supervisor writes it there).
    public var logPath: String
    /// Where a local runner's supervisor writes its exit status.
    public var status: StatusRecord?

    public init(runner: RunnerID, handle: RunnerHandle, logPath: String, status: StatusRecord? = nil) {
        self.runner = runner
        self.handle = handle
        self.logPath = logPath
        self.status = status
    }
}

/// Starts and stops runners somewhere: local processes, containers, cluster jobs. A dispatcher
/// holds one per pool type it runs.
public protocol RunnerLauncher: Sendable {
    /// The pool type whose runners this launcher starts.
    var poolType: PoolType { get }
    /// Every runner's start, output and exit, in order per runner (unless `deliver(to:)` has a
    /// handler take them).
    var events: AsyncStream<RunnerEvent> { get }
    /// Hands every event to `handler`, on the launcher's own threads, as it happens, instead of
    /// to `events` (nil: back to `events`): no hop through a task for a dispatcher that has its
    /// own queue.
    func deliver(to handler: (@Sendable (RunnerEvent) -> Void)?)
    /// Starts a runner; a start that fails comes back as `.exited(_, .launchFailed)`.
    func launch(_ launch: RunnerLaunch)
    /// Signals the runner and everything it started.
    func signal(_ runner: RunnerID, _ signal: RunnerSignal)
    /// Watches a runner a previous dispatcher started: its output (as it reaches its log) and its
    /// exit (as its supervisor recorded it). One that has already ended is reported as ended.
    func adopt(_ adoption: RunnerAdoption)
    /// Sorts out the runners of its pool type that a dispatcher that stopped left `running` in the
    /// registry: those alive are to be adopted (their rows completed with what was not recorded),
    /// the others ended meanwhile, with how if it is known. What the launcher finds of theirs
    /// (their tasksets are `specs`) that is not among `runners` (a container whose end was
    /// recorded but which was not removed yet) is removed. Called before `adopt`, off the
    /// dispatcher's loop; it may wait on its engine. Throws when it cannot tell (its engine does
    /// not answer): nothing may start then, or a task could run twice.
    func sortOut(_ runners: [RunnerRecord], specs: Set<String>) async throws -> RecoveredRunners
    /// The runner's end is recorded (durably): what the launcher kept so that a later dispatcher
    /// could learn how it ended (a stopped container) may go.
    func ended(_ runner: RunnerID)
    /// Stops watching (running runners are left alone) and lets go of what it holds.
    func shutdown() async
}

extension RunnerLauncher {
    /// The runner's end is recorded: what the launcher kept so that a later dispatcher could learn
    /// how it ended (a stopped container) may go. Nothing, for launchers that keep nothing.
    public func ended(_ runner: RunnerID) {}
}
