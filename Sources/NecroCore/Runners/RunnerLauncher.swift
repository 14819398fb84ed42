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

    public init(
        runner: RunnerID, argv: [String], environment: [String: String], workingDirectory: String, logPath: String,
        status: StatusRecord? = nil, nice: Int = 0
    ) {
        self.runner = runner
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.logPath = logPath
        self.status = status
        self.nice = nice
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
    /// Running, with the pid and the process start time (to tell it from a later process with the
    /// same pid).
    case started(RunnerID, pid: Int32, startTime: UInt64?)
    /// It wrote output (a sign of life); the last complete line, for progress displays.
    case output(RunnerID, lastLine: String)
    case exited(RunnerID, RunnerExit)
}

/// A runner a previous dispatcher started and left running: watched from now on as if started here.
public struct RunnerAdoption: Hashable, Sendable {
    public var runner: RunnerID
    /// Its supervisor (the leader of its process group), with its start time.
    public var pid: Int32
    public var startTime: UInt64
    /// Where its supervisor writes its output, and its exit status.
    public var logPath: String
    public var status: StatusRecord

    public init(runner: RunnerID, pid: Int32, startTime: UInt64, logPath: String, status: StatusRecord) {
        self.runner = runner
        self.pid = pid
        self.startTime = startTime
        self.logPath = logPath
        self.status = status
    }
}

/// Starts and stops runners somewhere: local processes, containers, cluster jobs.
public protocol RunnerLauncher: Sendable {
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
}
