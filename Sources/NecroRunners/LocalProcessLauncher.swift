import CNecroSystem
import Foundation
public import NecroCore
import Synchronization

/// Runs runners as local processes.
///
/// Each runner gets a process group of its own (so a stop reaches everything it started), its stdout
/// and stderr through one pipe into a log file capped at `logLimitBytes`, and a pidfd. One thread
/// waits on all pipes and pidfds with epoll: output and exits are reported as they happen, with no
/// polling and no thread per runner.
public final class LocalProcessLauncher: RunnerLauncher, Sendable {
    public var poolType: PoolType { .localProcess }
    public let events: AsyncStream<RunnerEvent>
    private let continuation: AsyncStream<RunnerEvent>.Continuation
    private let logLimitBytes: Int
    /// Output is reported at most this often per runner (it renews a lease; more is noise).
    private let outputInterval: Duration
    private let epoll: Int32
    /// Runners' standard input.
    private let devNull: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let state = Mutex(State())
    private let spawnQueue = Mutex<[RunnerLaunch]>([])
    private let spawnWake = DispatchSemaphore(value: 0)
    private let createdFolders = Mutex<Set<String>>([])
    private let freeBlocks = Mutex<[SupervisorBlock]>([])
    private let ownNiceness = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    /// Tells when adopted runners' logs grow.
    private let inotify: Int32
    private static let inotifyToken: UInt64 = 1 << 1

    private struct Watched {
        var runner: RunnerID
        var pid: pid_t
        var pidfd: Int32
        var pipe: Int32
        /// Opened at the first output: a silent runner leaves no empty file behind.
        var log: Int32 = -1
        var logPath: String
        var written = 0
        var dropped = 0
        var output = LastOutputLine()
        var lastReport: ContinuousClock.Instant?
        var exited = false
        /// The supervisor's memory (its stacks and what it reads), free again once it is reaped.
        var supervisorBlock: SupervisorBlock?
        /// Where its supervisor records how it ended.
        var status: StatusRecord?
        /// Started by an earlier dispatcher: not our child; its output is read from its log (an
        /// inotify watch), its exit status from its status record.
        var adopted: (watch: Int32, logOffset: Int)?
    }

    private struct State {
        var byToken: [UInt64: Watched] = [:]
        var tokenByRunner: [RunnerID: UInt64] = [:]
        /// Adopted runners by their log's inotify watch.
        var tokenByWatch: [Int32: UInt64] = [:]
        var nextToken: UInt64 = 2  // 1 is the inotify descriptor's
        var stopping = false
        /// Runners signalled while still queued: they never start.
        var stoppedBeforeStart: Set<RunnerID> = []
    }

    /// - Parameters:
    ///   - logLimitBytes: output kept per runner; the rest is counted and dropped.
    ///   - outputInterval: how often, at most, output is reported per runner.
    /// Where events go instead of `events`, if set (`deliver(to:)`). Boxed: a closure kept in a
    /// generic container is wrapped in conversion thunks each time it goes in and out.
    private let handler = Mutex<EventHandler?>(nil)

    private final class EventHandler: Sendable {
        let call: @Sendable (RunnerEvent) -> Void
        init(_ call: @escaping @Sendable (RunnerEvent) -> Void) { self.call = call }
    }

    private func report(_ event: RunnerEvent) {
        if let handler = handler.withLock({ $0 }) {
            handler.call(event)
        } else {
            continuation.yield(event)
        }
    }

    public func deliver(to handler: (@Sendable (RunnerEvent) -> Void)?) {
        let box = handler.map(EventHandler.init)
        self.handler.withLock { $0 = box }
    }

    public init(logLimitBytes: Int = 8 << 20, outputInterval: Duration = .milliseconds(250)) {
        (events, continuation) = AsyncStream.makeStream(of: RunnerEvent.self)
        self.logLimitBytes = logLimitBytes
        self.outputInterval = outputInterval
        epoll = necro_epoll_create()
        devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = necro_epoll_add(epoll, wakeRead, 0)
        inotify = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        _ = necro_epoll_add(epoll, inotify, Self.inotifyToken)
        let thread = Thread { [self] in self.loop() }
        thread.name = "necro-runners"
        thread.start()
        // One thread starts runners: a supervised start does not wait for the runner's exec, so one
        // keeps up with many exits a second (two contend in the kernel and are slower).
        let spawner = Thread { [self] in self.spawnLoop() }
        spawner.name = "necro-spawner"
        spawner.start()
    }

    /// Stops watching; running processes are left alone.
    public func shutdown() {
        state.withLock { $0.stopping = true }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        spawnWake.signal()
    }

    deinit {
        close(inotify)
        close(epoll)
        close(devNull)
        close(wakeRead)
        close(wakeWrite)
    }

    // MARK: RunnerLauncher

    /// Queues the start: the spawn, its folder and log file are made on the launcher's own thread,
    /// so that the caller (the dispatcher's loop) never waits on the file system.
    public func launch(_ launch: RunnerLaunch) {
        spawnQueue.withLock { $0.append(launch) }
        spawnWake.signal()
    }

    private func spawnLoop() {
        while true {
            spawnWake.wait()
            if state.withLock({ $0.stopping }) { return }
            while let next = spawnQueue.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                let stopped = state.withLock { $0.stoppedBeforeStart.remove(next.runner) != nil }
                if stopped {
                    report(.exited(next.runner, .signalled(SIGTERM)))
                } else {
                    spawn(next)
                }
            }
        }
    }

    private func spawn(_ launch: RunnerLaunch) {
        guard let program = launch.argv.first, !program.isEmpty else {
            report(.exited(launch.runner, .launchFailed("empty command")))
            return
        }
        // The supervisor runs a path, not a name: find it here, and say plainly when it is not there.
        guard let executable = Self.executablePath(program, path: launch.environment["PATH"]) else {
            report(.exited(launch.runner, .launchFailed("command not found: \(program)")))
            return
        }
        var fds: [Int32] = [0, 0]
        guard necro_pipe(&fds) == 0 else {
            report(.exited(launch.runner, .launchFailed("cannot create a pipe: \(errnoText())")))
            return
        }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
        ensureFolder(of: launch.logPath)
        // A supervisor makes its runner's folder itself, on the runner's time (on some file systems
        // a mkdir costs more than all the rest of a start); its parent is made here, once.
        ensureFolder(of: launch.workingDirectory)

        var pid: pid_t = 0
        var pidfd: Int32 = -1
        var block: SupervisorBlock?
        let before = ProcessIdentity.bootTicks()
        let error = withCStrings(launch.argv) { argv in
            withCEnvironment(launch.environment) { envp in
                // The supervisor works in the runner's folder: its paths must not depend on ours.
                let statusPath = launch.status.map { Self.absolute($0.path) }
                let logPath = Self.absolute(launch.logPath)
                // (0: no supervisor for this processor; then as unsupervised, below.)
                let needed = statusPath.map { necro_supervisor_block_size(executable, argv, envp, launch.workingDirectory, $0, logPath) } ?? 0
                if let status = launch.status, let statusPath, needed > 0 {
                    guard let taken = takeBlock(size: needed) else { return ENOMEM }
                    // Locked before the supervisor exists, held by it until it ends: whoever finds
                    // the runner not recorded as started knows from the lock whether it lives.
                    let lock = necro_lock_status_record(statusPath, status.offset)
                    defer { if lock >= 0 { close(lock) } }
                    let error = necro_spawn_supervised(
                        executable, argv, envp, launch.workingDirectory, devNull, writeEnd, readEnd, statusPath,
                        status.offset, lock, logPath, logLimitBytes, niceness(launch) ?? NECRO_NICE_UNCHANGED, taken.memory,
                        taken.size, &pid, &pidfd)
                    guard error == 0 else {
                        giveBack(taken)
                        return error
                    }
                    block = taken
                    return 0
                }
                // Unsupervised, or no supervisor for this processor: the status will not outlive us.
                mkdir(launch.workingDirectory, PrivateFiles.folderMode)
                let error = necro_spawn(executable, argv, envp, launch.workingDirectory, writeEnd, &pid)
                if error == 0 {
                    pidfd = necro_pidfd_open(pid)
                    // Just after its start (posix_spawn cannot set it): the supervisor sets it before the exec.
                    if let nice = niceness(launch) { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(pid), nice) }
                }
                return error
            }
        }
        let after = ProcessIdentity.bootTicks()
        close(writeEnd)
        guard error == 0 else {
            close(readEnd)
            let why = error == ENOENT ? "command not found: \(program)" : "\(program): \(String(cString: strerror(error)))"
            report(.exited(launch.runner, .launchFailed(why)))
            return
        }
        // The process started between the two readings of the boot clock: when both fall in the
        // same tick, that is its start time, with no read of /proc on every start.
        let startTime = before == after ? before : ProcessIdentity.startTime(of: pid)
        report(.started(launch.runner, Self.handle(pid: pid, startTime: startTime)))
        let token = state.withLock { state -> UInt64 in
            let token = state.nextToken
            state.nextToken += 1
            state.byToken[token] = Watched(
                runner: launch.runner, pid: pid, pidfd: pidfd, pipe: readEnd, logPath: launch.logPath,
                supervisorBlock: block, status: block == nil ? nil : launch.status)
            state.tokenByRunner[launch.runner] = token
            return token
        }
        _ = necro_epoll_add(epoll, readEnd, token << 1)
        _ = necro_epoll_add(epoll, pidfd, token << 1 | 1)
    }

    /// The runner's niceness: the dispatcher's own plus the launch's, capped at 19; nil for the
    /// dispatcher's own.
    private func niceness(_ launch: RunnerLaunch) -> Int32? {
        guard launch.nice > 0 else { return nil }
        return min(19, ownNiceness + Int32(launch.nice))
    }

    /// A supervisor's memory block. Blocks of the usual size are kept for the next start once their
    /// supervisor is reaped: a fresh mapping per start costs page faults, and unmapping one a TLB
    /// flush on every core this process (with its supervisors) runs on.
    struct SupervisorBlock: @unchecked Sendable {  // the memory is the supervisor's until reaped
        var memory: UnsafeMutableRawPointer
        var size: Int
    }

    static let usualBlockSize = 256 << 10

    private func takeBlock(size: Int) -> SupervisorBlock? {
        if size <= Self.usualBlockSize, let kept = freeBlocks.withLock({ $0.popLast() }) { return kept }
        let size = max(size, Self.usualBlockSize)
        return necro_supervisor_block_allocate(size).map { SupervisorBlock(memory: $0, size: size) }
    }

    private func giveBack(_ block: SupervisorBlock) {
        if block.size == Self.usualBlockSize {
            freeBlocks.withLock { $0.append(block) }
        } else {
            necro_supervisor_block_free(block.memory, block.size)
        }
    }

    /// Creates the folder of `file` the first time it is seen (few such folders: logs, statuses).
    private func ensureFolder(of file: String) {
        guard let slash = file.utf8.lastIndex(of: UInt8(ascii: "/")) else { return }
        let folder = slash == file.startIndex ? "/" : String(file[..<slash])
        if createdFolders.withLock({ $0.insert(folder).inserted }) {
            try? PrivateFiles.makeFolder(folder)
        }
    }

    public func signal(_ runner: RunnerID, _ signal: RunnerSignal) {
        let queued = spawnQueue.withLock { queue in queue.contains { $0.runner == runner } }
        state.withLock { state in
            // Only while the process is ours and unreaped: its group id cannot have been reused.
            guard let token = state.tokenByRunner[runner], let watched = state.byToken[token], !watched.exited else {
                if queued { state.stoppedBeforeStart.insert(runner) }
                return
            }
            _ = kill(-watched.pid, signal == .terminate ? SIGTERM : SIGKILL)
        }
    }

    // MARK: The watching thread

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        // What pipes hold is read into this, one buffer for the thread (not a new one per read).
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = tokens.withUnsafeMutableBufferPointer { necro_epoll_wait(epoll, $0.baseAddress, 64, -1) }
            if state.withLock({ $0.stopping }) { return }
            guard count > 0 else { continue }
            for token in tokens[0..<Int(count)] where token != 0 {
                if token == Self.inotifyToken {
                    logsGrew()
                } else if token & 1 == 0 {
                    drain(token >> 1, into: &buffer)
                } else {
                    reap(token >> 1, buffer: &buffer)
                }
            }
        }
    }

    /// Reads what the pipe holds into the log; returns false at end of file.
    @discardableResult
    private func drain(_ token: UInt64, into buffer: inout [UInt8]) -> Bool {
        var pipeOpen = true
        var report: (RunnerID, String)?
        state.withLock { state in
            guard var watched = state.byToken[token] else { return }
            var gotOutput = false
            while true {
                let count = buffer.withUnsafeMutableBytes { read(watched.pipe, $0.baseAddress, $0.count) }
                if count == 0 { pipeOpen = false }
                guard count > 0 else { break }
                gotOutput = true
                let chunk = buffer[0..<count]
                if watched.log < 0 { watched.log = open(watched.logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, PrivateFiles.fileMode) }
                let keep = min(count, max(0, logLimitBytes - watched.written))
                if keep > 0 { _ = chunk.withUnsafeBytes { write(watched.log, $0.baseAddress, keep) } }
                watched.written += keep
                watched.dropped += count - keep
                watched.output.take(chunk)
            }
            // Output, not the pipe's end, is a sign of life (a silent runner's end reports nothing).
            let now = ContinuousClock.now
            if gotOutput, watched.lastReport.map({ now - $0 >= outputInterval }) ?? true {
                watched.lastReport = now
                report = (watched.runner, watched.output.line)
            }
            state.byToken[token] = watched
        }
        if let (runner, line) = report { self.report(.output(runner, lastLine: line)) }
        if !pipeOpen { stopWatchingPipe(token) }
        return pipeOpen
    }

    private func stopWatchingPipe(_ token: UInt64) {
        state.withLock { state in
            guard let watched = state.byToken[token], watched.pipe >= 0 else { return }
            _ = necro_epoll_remove(epoll, watched.pipe)
            close(watched.pipe)
            state.byToken[token]!.pipe = -1
        }
    }

    private func reap(_ token: UInt64, buffer: inout [UInt8]) {
        if state.withLock({ $0.byToken[token]?.adopted }) != nil {
            finishAdopted(token)
            return
        }
        guard let pid = state.withLock({ $0.byToken[token]?.pid }) else { return }
        var status: Int32 = 0
        let reaped = waitpid(pid, &status, WNOHANG)
        guard reaped == pid else { return }
        // What it wrote before exiting is in the pipe: take it (a background child may keep the
        // pipe open, so read what is there, do not wait for the end).
        if state.withLock({ ($0.byToken[token]?.pipe ?? -1) >= 0 }) {
            drain(token, into: &buffer)
            stopWatchingPipe(token)
        }
        var exit: RunnerExit = (status & 0x7f) == 0 ? .exited(code: (status >> 8) & 0xff) : .signalled(status & 0x7f)
        let finished: Watched? = state.withLock { state in
            guard var watched = state.byToken.removeValue(forKey: token) else { return nil }
            watched.exited = true
            state.tokenByRunner[watched.runner] = nil
            return watched
        }
        guard let watched = finished else { return }
        if let block = watched.supervisorBlock { giveBack(block) }
        // A supervisor ends with 127 also when its runner could not start; its record says why.
        if exit == .exited(code: 127), let record = watched.status,
            case .launchFailed(let why)? = RunnerStatusTable.exit(of: watched.runner, in: record)
        {
            exit = .launchFailed(why)
        }
        _ = necro_epoll_remove(epoll, watched.pidfd)
        close(watched.pidfd)
        if watched.dropped > 0 {
            let note = RunnerLog.droppedNote(dropped: watched.dropped, limit: logLimitBytes)
            _ = note.withCString { write(watched.log, $0, strlen($0)) }
        }
        if watched.log >= 0 { close(watched.log) }
        report(.exited(watched.runner, exit))
    }

    // MARK: Adoption

    /// A local runner's handle: its supervisor's pid and start time.
    public static func handle(pid: Int32, startTime: UInt64?) -> RunnerHandle {
        RunnerHandle("\(pid)@\(startTime.map(String.init) ?? "")", pid: pid, processStartTime: startTime)
    }

    public func adopt(_ adoption: RunnerAdoption) {
        guard let pid = adoption.handle.pid, let status = adoption.status else {
            report(.exited(adoption.runner, .launchFailed("not adoptable: no process or status record was recorded")))
            return
        }
        let pidfd = necro_pidfd_open(pid)
        // The pidfd names the process only if it is still the one recorded (pids are reused).
        guard pidfd >= 0, ProcessIdentity.startTime(of: pid) == adoption.handle.processStartTime else {
            if pidfd >= 0 { close(pidfd) }
            report(.exited(adoption.runner, Self.recordedExit(of: adoption.runner, in: status)))
            return
        }
        // Its supervisor appends to the log from now on; start from its current end.
        ensureFolder(of: adoption.logPath)
        let log = open(adoption.logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, PrivateFiles.fileMode)
        let offset = log >= 0 ? Int(lseek(log, 0, SEEK_END)) : 0
        if log >= 0 { close(log) }
        let watch = inotify_add_watch(inotify, adoption.logPath, UInt32(IN_MODIFY))
        let token = state.withLock { state -> UInt64 in
            let token = state.nextToken
            state.nextToken += 1
            state.byToken[token] = Watched(
                runner: adoption.runner, pid: pid, pidfd: pidfd, pipe: -1, logPath: adoption.logPath,
                status: status, adopted: (watch, offset))
            state.tokenByRunner[adoption.runner] = token
            if watch >= 0 { state.tokenByWatch[watch] = token }
            return token
        }
        _ = necro_epoll_add(epoll, pidfd, token << 1 | 1)
    }

    /// Adopted runners wrote to their logs: a sign of life, and their last line.
    private func logsGrew() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var grown: Set<UInt64> = []
        while true {
            let count = buffer.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= count {
                let event = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: inotify_event.self) }
                if let token = state.withLock({ $0.tokenByWatch[event.wd] }) { grown.insert(token) }
                offset += MemoryLayout<inotify_event>.size + Int(event.len)
            }
        }
        for token in grown {
            let report: (RunnerID, String)? = state.withLock { state in
                guard var watched = state.byToken[token], let adopted = watched.adopted else { return nil }
                let file = open(watched.logPath, O_RDONLY | O_CLOEXEC)
                guard file >= 0 else { return nil }
                defer { close(file) }
                var chunk = [UInt8](repeating: 0, count: 65_536)
                var position = adopted.logOffset
                while true {
                    let got = chunk.withUnsafeMutableBytes { pread(file, $0.baseAddress, $0.count, off_t(position)) }
                    guard got > 0 else { break }
                    watched.output.take(chunk[0..<got])
                    position += got
                }
                watched.adopted!.logOffset = position
                let now = ContinuousClock.now
                guard watched.lastReport.map({ now - $0 >= outputInterval }) ?? true else {
                    state.byToken[token] = watched
                    return nil
                }
                watched.lastReport = now
                state.byToken[token] = watched
                return (watched.runner, watched.output.line)
            }
            if let (runner, line) = report { self.report(.output(runner, lastLine: line)) }
        }
    }

    /// An adopted runner ended: its supervisor wrote how (it is not our child to wait for).
    private func finishAdopted(_ token: UInt64) {
        let finished: Watched? = state.withLock { state in
            guard var watched = state.byToken.removeValue(forKey: token) else { return nil }
            watched.exited = true
            state.tokenByRunner[watched.runner] = nil
            if let watch = watched.adopted?.watch, watch >= 0 { state.tokenByWatch[watch] = nil }
            return watched
        }
        guard let watched = finished else { return }
        if let watch = watched.adopted?.watch, watch >= 0 { _ = inotify_rm_watch(inotify, watch) }
        _ = necro_epoll_remove(epoll, watched.pidfd)
        close(watched.pidfd)
        report(.exited(watched.runner, watched.status.map { Self.recordedExit(of: watched.runner, in: $0) } ?? .signalled(SIGKILL)))
    }

    /// How a runner ended, as its supervisor recorded it. None: its supervisor was killed before
    /// it could write (SIGKILL to the group).
    static func recordedExit(of runner: RunnerID, in record: StatusRecord) -> RunnerExit {
        RunnerStatusTable.exit(of: runner, in: record) ?? .signalled(SIGKILL)
    }
}

extension LocalProcessLauncher {
    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// The executable file `program` names, directly or through `path`, or nil.
    static func executablePath(_ program: String, path: String?) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        return (path ?? "/usr/bin:/bin").split(separator: ":").lazy.map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 }
    }
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    withCArray(strings.count, { index, bytes in bytes.append(contentsOf: strings[index].utf8) }, body)
}

/// Calls `body` with the environment as a NULL-terminated C array of `NAME=value` strings.
func withCEnvironment<R>(_ environment: [String: String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let variables = Array(environment)
    return withCArray(
        variables.count,
        { index, bytes in
            bytes.append(contentsOf: variables[index].key.utf8)
            bytes.append(UInt8(ascii: "="))
            bytes.append(contentsOf: variables[index].value.utf8)
        }, body)
}

/// A NULL-terminated C array of `count` strings, each written by `write`, all in one buffer: one
/// allocation per start instead of one per string (a runner's environment has dozens).
private func withCArray<R>(
    _ count: Int, _ write: (Int, inout [UInt8]) -> Void, _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R
) -> R {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(4096)
    var offsets: [Int] = []
    offsets.reserveCapacity(count)
    for index in 0..<count {
        offsets.append(bytes.count)
        write(index, &bytes)
        bytes.append(0)
    }
    return bytes.withUnsafeMutableBufferPointer { buffer in
        let base = UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
        let pointers: [UnsafeMutablePointer<CChar>?] = offsets.map { base + $0 } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Tells a process from a later one with the same pid.
public enum ProcessIdentity {
    /// The boot clock in the ticks of `/proc/PID/stat`'s start time (which the kernel takes from
    /// this clock as it creates a process).
    public static func bootTicks() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return (UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)) / nanosecondsPerTick
    }

    private static let nanosecondsPerTick = 1_000_000_000 / UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))

    /// The process's start time in clock ticks since boot (`/proc/PID/stat`, field 22). Read with
    /// plain system calls: recovery reads it for every runner it finds, a start when its spawn
    /// straddles a tick of the boot clock.
    public static func startTime(of pid: Int32) -> UInt64? {
        let file = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1024) { buffer -> UInt64? in
            let count = read(file, buffer.baseAddress, buffer.count)
            guard count > 0 else { return nil }
            let text = UnsafeBufferPointer(rebasing: buffer[0..<count])
            // Fields after the command name (which may hold spaces and parentheses): state is field
            // 3, start time field 22.
            guard let close = text.lastIndex(of: UInt8(ascii: ")")) else { return nil }
            var field = 2
            var value: UInt64 = 0
            var index = close + 1
            while index < text.count {
                let byte = text[index]
                if byte == UInt8(ascii: " ") {
                    if field == 22 { return value }
                    field += 1
                    value = 0
                } else if field == 22 {
                    guard byte >= 48 && byte <= 57 else { return nil }
                    value = value * 10 + UInt64(byte - 48)
                }
                index += 1
            }
            return field == 22 ? value : nil
        }
    }

    /// Whether `pid` is still the process that started at `startTime`.
    /// A zombie (ended, not reaped yet: its parent died, and nothing reaps it soon in a container
    /// whose first process is not an init) is not alive.
    public static func isAlive(pid: Int32, startTime: UInt64) -> Bool {
        kill(pid, 0) == 0 && self.startTime(of: pid) == startTime && !isZombie(pid)
    }

    /// Whether `pid` has ended and waits to be reaped (state `Z` in `/proc/PID/stat`).
    public static func isZombie(_ pid: Int32) -> Bool {
        let file = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return false }
        defer { close(file) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1024) { buffer -> Bool in
            let count = read(file, buffer.baseAddress, buffer.count)
            guard count > 0, let close = UnsafeBufferPointer(rebasing: buffer[0..<count]).lastIndex(of: UInt8(ascii: ")")),
                close + 2 < count
            else { return false }
            return buffer[close + 2] == UInt8(ascii: "Z")
        }
    }
}
