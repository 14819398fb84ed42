import AsyncHTTPClient
import Foundation
public import NecroCore
import NIOCore
import Synchronization

/// Runs runners as Docker containers, through the engine's API: one container per attempt, made
/// from its pool's image, labelled with this registry, its runner, task and attempt; its output
/// read into the runner's capped log; its exit code taken from the engine before the container is
/// removed (once the dispatcher has recorded the end: `ended`).
public final class DockerLauncher: RunnerLauncher, Sendable {
    public var poolType: PoolType { .docker }
    public let events: AsyncStream<RunnerEvent>
    private let continuation: AsyncStream<RunnerEvent>.Continuation
    let engine: DockerEngine
    /// Each docker pool's settings, by pool name.
    let pools: [String: ContainerSettings]
    /// Every container of this registry carries `necro.registry=<this>`: recovery finds them by it.
    public let registryLabel: String
    private let logLimitBytes: Int
    private let outputInterval: Duration
    /// The uid and gid containers run as when their pool names no user.
    private let defaultUser: String
    /// A `necro` that runs in any image with a C library (built with `--static-swift-stdlib`),
    /// mounted read-only at `containerBinary`: `necro heartbeat` works inside.
    let necroBinary: String?
    public static let containerBinary = "/usr/local/bin/necro"
    private let state = Mutex(State())
    private let handler = Mutex<EventHandler?>(nil)

    public static let labelPrefix = "necro."
    static let runnerLabel = labelPrefix + "runner-id"

    /// Every container of this registry, whatever its state.
    private func listed() async throws(DockerError) -> [DockerEngine.Listed] {
        try await engine.containers(label: Self.labelPrefix + "registry", value: registryLabel)
    }

    /// This process's own executable if it can run in a container (the Swift runtime linked into
    /// it, not loaded from this machine's toolchain); nil otherwise.
    public static func portableExecutable() -> String? {
        // Read to its end (a /proc file says it is empty).
        let file = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var maps: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(file, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            maps += buffer[..<count]
        }
        guard !String(decoding: maps, as: UTF8.self).contains("libswiftCore.so") else { return nil }
        return try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    private struct State {
        /// Each runner's container, once created.
        var containers: [RunnerID: String] = [:]
        /// Stops asked for before the container existed or started.
        var stopRequested: [RunnerID: RunnerSignal] = [:]
        /// Runners being started or watched.
        var active: Set<RunnerID> = []
        var signalled: Set<RunnerID> = []
        /// Containers whose end was reported, kept until it is recorded.
        var ended: [RunnerID: String] = [:]
        /// Removals under way: `shutdown` waits for them.
        var removals: [UInt64: Task<Void, Never>] = [:]
        var nextRemoval: UInt64 = 0
    }

    private final class EventHandler: Sendable {
        let call: @Sendable (RunnerEvent) -> Void
        init(_ call: @escaping @Sendable (RunnerEvent) -> Void) { self.call = call }
    }

    /// - Parameters:
    ///   - registryLabel: what marks this registry's containers (a hash of its path).
    public init(
        engine: DockerEngine, pools: [String: ContainerSettings], registryLabel: String, logLimitBytes: Int = 8 << 20,
        outputInterval: Duration = .milliseconds(250), necroBinary: String? = nil
    ) {
        self.necroBinary = necroBinary
        (events, continuation) = AsyncStream.makeStream(of: RunnerEvent.self)
        self.engine = engine
        self.pools = pools
        self.registryLabel = registryLabel
        self.logLimitBytes = logLimitBytes
        self.outputInterval = outputInterval
        self.defaultUser = "\(getuid()):\(getgid())"
    }

    public func deliver(to handler: (@Sendable (RunnerEvent) -> Void)?) {
        let box = handler.map(EventHandler.init)
        self.handler.withLock { $0 = box }
    }

    private func report(_ event: RunnerEvent) {
        if let handler = handler.withLock({ $0 }) {
            handler.call(event)
        } else {
            continuation.yield(event)
        }
    }

    /// Stops reporting. Containers of this registry left in `created` (a dispatcher killed
    /// between their creation and their start) and not being started here are removed.
    public func shutdown() async {
        continuation.finish()
        for removal in state.withLock({ Array($0.removals.values) }) { await removal.value }
        if let listed = try? await listed() {
            let active = state.withLock { Set($0.containers.values) }
            for container in listed where container.State == "created" && !active.contains(container.Id) {
                try? await engine.remove(container.Id)
            }
        }
        await engine.shutdown()
    }

    // MARK: Launch

    public func launch(_ launch: RunnerLaunch) {
        state.withLock { _ = $0.active.insert(launch.runner) }
        Task { await run(launch) }
    }

    private func run(_ launch: RunnerLaunch) async {
        let runner = launch.runner
        guard let settings = pools[launch.pool] else {
            finish(runner, .launchFailed("pool \(launch.pool) is not a docker pool"))
            return
        }
        let id: String
        do {
            try await ensureImage(settings)
            try await Self.offThePool { [self] in
                if settings.mountRepoPool { try prepareFolder(launch.workingDirectory, for: settings.user ?? defaultUser) }
                try openSocketFolder(launch.sharedPaths, for: settings.user ?? defaultUser)
            }
            id = try await engine.createContainer(containerBody(launch, settings))
        } catch {
            finish(runner, .launchFailed(Self.text(error)))
            return
        }
        let stopped = state.withLock { state -> Bool in
            state.containers[runner] = id
            return state.stopRequested[runner] != nil
        }
        if stopped {
            try? await engine.remove(id)
            state.withLock { $0.containers[runner] = nil }
            finish(runner, .signalled(SIGTERM))
            return
        }
        let output: Task<Void, Never>
        do {
            let body = try await engine.attach(id)
            output = Task { await self.follow(body, of: runner, logPath: launch.logPath) }
            try await engine.start(id)
        } catch {
            try? await engine.remove(id)
            state.withLock { $0.containers[runner] = nil }
            finish(runner, .launchFailed("container \(id.prefix(12)) of image \(settings.image) did not start: \(Self.text(error))"))
            return
        }
        report(.started(runner, RunnerHandle(id)))
        // A stop asked for while it started is carried out now.
        if let signal = state.withLock({ $0.stopRequested[runner] }) { self.signal(runner, signal) }
        await watch(runner, container: id, output: output, memoryLimitMB: launch.resources.memoryMB)
    }

    /// Waits for the container's end, its output read to the end; reports how it ended.
    private func watch(_ runner: RunnerID, container id: String, output: Task<Void, Never>?, memoryLimitMB: Int?) async {
        var code: Int32?
        var lastError = ""
        // A wait cut off (the engine restarted) is made again while the engine says the container
        // runs: its end is reported only once known, for 5 minutes of trying at most.
        for attempt in 0..<150 where code == nil {
            do {
                code = try await engine.wait(id)
            } catch {
                lastError = error.message
                if let state = try? await engine.state(id), !state.Running, state.Status != "created" {
                    code = state.ExitCode
                    break
                }
                if attempt < 149 { try? await Task.sleep(for: .seconds(2)) }
            }
        }
        guard let code else {
            output?.cancel()
            finish(runner, .launchFailed("lost the Docker engine while the container ran: \(lastError)"), keep: id)
            return
        }
        if let output {
            // The output stream ends with the container; should the engine keep it open, what
            // it had is kept, 2 s at most after the exit.
            let cutOff = Task {
                try await Task.sleep(for: .seconds(2))
                output.cancel()
            }
            await output.value
            cutOff.cancel()
        }
        var engineState = try? await engine.state(id)
        // The engine learns of an OOM kill from its own event, which may come just after the
        // exit: a failed container with a memory limit is looked at again, for 1 s at most, or
        // 5 s when it died of SIGKILL, as the kernel's OOM killer kills (a busy engine is slow).
        if memoryLimitMB != nil, code != 0 {
            for _ in 0..<(code == 137 ? 50 : 10) where engineState?.OOMKilled == false {
                try? await Task.sleep(for: .milliseconds(100))
                engineState = try? await engine.state(id)
            }
        }
        let signalled = state.withLock { $0.signalled.contains(runner) }
        finish(runner, Self.exit(code: code, oomKilled: engineState?.OOMKilled == true, signalled: signalled, memoryLimitMB: memoryLimitMB), keep: id)
    }

    private func finish(_ runner: RunnerID, _ exit: RunnerExit, keep container: String? = nil) {
        state.withLock { state in
            state.active.remove(runner)
            state.stopRequested[runner] = nil
            state.signalled.remove(runner)
            state.containers[runner] = nil
            if let container { state.ended[runner] = container }
        }
        report(.exited(runner, exit))
    }

    /// How a container ended, in the dispatcher's terms: an exit code above 128 of a container
    /// the dispatcher signalled is the signal (its init reports a killed child so).
    /// An OOM kill of some process in it counts only if the container failed: an agent whose
    /// child was killed may go on and succeed.
    static func exit(code: Int32, oomKilled: Bool, signalled: Bool, memoryLimitMB: Int?) -> RunnerExit {
        if oomKilled && code != 0 { return .outOfMemory(limitMB: memoryLimitMB) }
        if signalled, code > 128, code < 128 + 65 { return .signalled(code - 128) }
        return .exited(code: code)
    }

    public func ended(_ runner: RunnerID) {
        state.withLock { state in
            guard let id = state.ended.removeValue(forKey: runner) else { return }
            let number = state.nextRemoval
            state.nextRemoval += 1
            state.removals[number] = Task { [engine, weak self] in
                try? await engine.remove(id)
                _ = self?.state.withLock { $0.removals.removeValue(forKey: number) }
            }
        }
    }

    // MARK: Signals

    public func signal(_ runner: RunnerID, _ signal: RunnerSignal) {
        let container = state.withLock { state -> String? in
            guard state.active.contains(runner) else { return nil }
            if state.stopRequested[runner] == nil || signal == .kill { state.stopRequested[runner] = signal }
            state.signalled.insert(runner)
            return state.containers[runner]
        }
        guard let container else { return }
        Task { try? await engine.kill(container, signal: signal == .kill ? "SIGKILL" : "SIGTERM") }
    }

    // MARK: Adoption

    public func adopt(_ adoption: RunnerAdoption) {
        let runner = adoption.runner
        let id = adoption.handle.value
        state.withLock { state in
            state.active.insert(runner)
            state.containers[runner] = id
        }
        Task {
            // Its whole output from the engine's log, followed to its end (running or not): what
            // the earlier dispatcher wrote to the runner's log is skipped, what came while no
            // dispatcher watched is added.
            var info = stat()
            let kept = stat(adoption.logPath, &info) == 0 ? Int(info.st_size) : 0
            let output: Task<Void, Never>?
            if let body = try? await engine.logs(id) {
                output = Task { await self.follow(body, of: runner, logPath: adoption.logPath, skipping: kept) }
            } else {
                output = nil
            }
            await watch(runner, container: id, output: output, memoryLimitMB: nil)
        }
    }

    /// The containers of this registry: those of `runners` still running are adopted; those that
    /// ended are taken at their exit code; those never started, and those of `specs` that no
    /// runner left running names (their end recorded, their removal not done), are removed.
    public func sortOut(_ runners: [RunnerRecord], specs: Set<String>) async throws -> RecoveredRunners {
        var recovered = RecoveredRunners()
        var listed: [DockerEngine.Listed]
        do {
            listed = try await self.listed()
            // A create or a start the dead dispatcher sent may still be under way in the engine: a
            // runner recorded without its container, or with it still `created`, is looked at
            // again (all of them at once, every 100 ms, for 3 s at most) before it is taken as
            // never started, and its container removed so that it never does (else its task
            // could run twice).
            let wanted = Set(runners.map(\.id.rawValue))
            for _ in 0..<30 {
                let mine = listed.filter { wanted.contains($0.Labels?[Self.runnerLabel] ?? "") }
                let found = Set(mine.compactMap { $0.Labels?[Self.runnerLabel] })
                guard found != wanted || mine.contains(where: { $0.State == "created" }) else { break }
                try await Task.sleep(for: .milliseconds(100))
                listed = try await self.listed()
            }
        } catch {
            throw DockerError(status: 0, message: "cannot list the Docker engine's containers to sort out the runners left running: \(Self.text(error))")
        }
        var byRunner: [String: DockerEngine.Listed] = [:]
        for container in listed {
            if let runner = container.Labels?[Self.runnerLabel] { byRunner[runner] = container }
        }
        var claimed: Set<String> = []
        for var runner in runners {
            guard let container = byRunner[runner.id.rawValue] else {
                recovered.ended.append(EndedRunner(runner: runner, exit: nil))
                continue
            }
            claimed.insert(container.Id)
            runner.handle = container.Id
            switch container.State {
            case "running", "paused", "restarting":
                recovered.adopted.append(runner)
            case "created":
                try? await engine.remove(container.Id)
                recovered.ended.append(EndedRunner(runner: runner, exit: nil))
            default:
                let engineState = try? await engine.state(container.Id)
                let exit = engineState.map { Self.exit(code: $0.ExitCode, oomKilled: $0.OOMKilled, signalled: false, memoryLimitMB: nil) }
                state.withLock { $0.ended[runner.id] = container.Id }
                recovered.ended.append(EndedRunner(runner: runner, exit: exit))
            }
        }
        for container in listed where !claimed.contains(container.Id) {
            guard let spec = container.Labels?[Self.labelPrefix + "spec"], specs.contains(spec) else { continue }
            try? await engine.remove(container.Id)
        }
        return recovered
    }

    // MARK: Output

    /// Reads the container's output to its end: into its log (capped); any output is a sign of
    /// life, reported (with its last line) at most every `outputInterval`, as for a local runner.
    private func follow(_ body: HTTPClientResponse.Body, of runner: RunnerID, logPath: String, skipping: Int = 0) async {
        var frames = FrameReader()
        var log = CappedLog(path: logPath, limit: logLimitBytes, written: skipping)
        var skip = skipping
        var output = LastOutputLine()
        var lastReport: ContinuousClock.Instant?
        do {
            for try await buffer in body {
                var payload = frames.take(buffer.readableBytesView)
                if skip > 0 {
                    let skipped = min(skip, payload.count)
                    payload.removeFirst(skipped)
                    skip -= skipped
                }
                guard !payload.isEmpty else { continue }
                log.write(payload)
                output.take(payload[...])
                let now = ContinuousClock.now
                if lastReport.map({ now - $0 >= outputInterval }) ?? true {
                    lastReport = now
                    report(.output(runner, lastLine: output.line))
                }
            }
        } catch {
            // The stream broke off: the exit still comes from the engine's wait.
        }
        log.close()
    }

    // MARK: The container

    private func ensureImage(_ settings: ContainerSettings) async throws {
        if try await engine.hasImage(settings.image) { return }
        switch settings.pull {
        case .never:
            throw DockerError(
                status: 404,
                message: "image \(settings.image) is not on the Docker engine, and the pool's pull is never: build or load it there (docker build -t \(settings.image) .), or set config.pull: missing")
        case .missing:
            try await engine.pull(settings.image)
        }
    }

    /// The task's folder, made if missing; when the container runs as another uid than the
    /// folder's owner, the folder (and what is in it) is given to that uid, so that the runner can
    /// write there and what it writes is its own.
    private func prepareFolder(_ path: String, for user: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DockerError(status: 0, message: "cannot create the task's folder \(path): \(error.localizedDescription)")
        }
        guard let (uid, gid) = Self.numericUser(user) else { return }  // a user name: the image knows it, we do not
        var info = stat()
        guard stat(path, &info) == 0, info.st_uid != uid else { return }
        try Self.chownTree(path, uid: uid, gid: gid)
    }

    /// Runs file-system work (a worktree given to another uid may be large) on a thread of its
    /// own, not on the few that every async task shares.
    static func offThePool(_ work: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                do {
                    try work()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// The runner API socket's folder is its owner's alone (0700); a container running as
    /// another uid gets to pass through it (0711: not to list it) to reach the socket.
    private func openSocketFolder(_ shared: [String], for user: String) throws {
        guard let (uid, _) = Self.numericUser(user) else { return }
        for path in shared where Self.isSocket(path) {
            let folder = (path as NSString).deletingLastPathComponent
            var folderInfo = stat()
            guard stat(folder, &folderInfo) == 0, folderInfo.st_uid != uid, folderInfo.st_mode & 0o001 == 0 else { continue }
            chmod(folder, (folderInfo.st_mode & 0o7777) | 0o011)
        }
    }

    /// `uid[:gid]` as numbers (the gid the uid when left out); nil for a user name.
    static func numericUser(_ user: String) -> (uid: UInt32, gid: UInt32)? {
        let parts = user.split(separator: ":", omittingEmptySubsequences: false)
        guard let uid = parts.first.flatMap({ UInt32($0) }) else { return nil }
        return (uid, parts.count > 1 ? UInt32(parts[1]) ?? uid : uid)
    }

    static func isSocket(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK
    }

    static func chownTree(_ path: String, uid: UInt32, gid: UInt32) throws {
        if lchown(path, uid, gid) != 0 {
            throw DockerError(
                status: 0,
                message: "cannot give the task's folder \(path) to uid \(uid) (the pool's user): \(String(cString: strerror(errno))); run necro as root, or leave config.user unset")
        }
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            try chownTree(path + "/" + name, uid: uid, gid: gid)
        }
    }

    /// The engine's container configuration for a launch.
    public func containerBody(_ launch: RunnerLaunch, _ settings: ContainerSettings) -> [String: Any] {
        var environment = launch.environment
        if environment["HOME"] == nil { environment["HOME"] = Self.home }
        var binds: [String] = []
        var tmpfs = [Self.home: "mode=1777"]
        if settings.mountRepoPool {
            binds.append("\(launch.workingDirectory):\(launch.workingDirectory)")
        } else {
            tmpfs[launch.workingDirectory] = "mode=1777"  // an empty folder of its own, at the same path
        }
        for path in launch.sharedPaths where !path.isEmpty {
            if Self.isSocket(path) {
                // The API socket's folder, read-only (connecting needs no write): a socket made
                // anew by a restarted dispatcher is the one an adopted container then reaches.
                let folder = (path as NSString).deletingLastPathComponent
                binds.append("\(folder):\(folder):ro")
            } else if settings.mountRepoPool {
                binds.append("\(path):\(path)")  // a repository's git folder, writable, for commits
            }
        }
        if let necroBinary { binds.append("\(necroBinary):\(Self.containerBinary):ro") }
        var host: [String: Any] = [
            "Binds": binds,
            "NetworkMode": settings.network,
            "Init": true,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": tmpfs,
        ]
        if let memory = launch.resources.memoryMB, memory > 0 {
            host["Memory"] = memory << 20
            host["MemorySwap"] = memory << 20  // no swap beyond the limit: over it is an OOM kill
        }
        if let cpu = launch.resources.cpu, cpu > 0 { host["NanoCpus"] = Int64(cpu * 1e9) }
        if let pids = settings.pidsLimit { host["PidsLimit"] = pids }
        var body: [String: Any] = [
            "Image": settings.image,
            "Env": environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            "WorkingDir": launch.workingDirectory,
            "User": settings.user ?? defaultUser,
            "Labels": [
                Self.labelPrefix + "registry": registryLabel, Self.runnerLabel: launch.runner.rawValue,
                Self.labelPrefix + "spec": launch.task.spec, Self.labelPrefix + "task": launch.task.id.rawValue,
                Self.labelPrefix + "attempt": String(launch.attempt), Self.labelPrefix + "pool": launch.pool,
            ],
            "AttachStdout": true, "AttachStderr": true, "Tty": false, "OpenStdin": false,
            "HostConfig": host,
        ]
        if let program = launch.argv.first {
            // The command runs as given, whatever entrypoint the image has.
            body["Entrypoint"] = [program]
            body["Cmd"] = Array(launch.argv.dropFirst())
        }
        return body
    }

    /// A writable home for whatever uid the container runs as.
    static let home = "/tmp/necro-home"

    static func text(_ error: any Error) -> String {
        (error as? DockerError)?.message ?? "\(error)"
    }
}

/// A runner's log: appended to, up to its limit; what is over it is counted and noted at the end.
struct CappedLog {
    let path: String
    let limit: Int
    private var file: Int32 = -1
    private var written = 0
    private var dropped = 0

    /// `written`: what the log already holds (a runner adopted from an earlier dispatcher).
    init(path: String, limit: Int, written: Int = 0) {
        self.path = path
        self.limit = limit
        self.written = written
    }

    mutating func write(_ bytes: [UInt8]) {
        let room = max(0, limit - written)
        let kept = min(room, bytes.count)
        dropped += bytes.count - kept
        guard kept > 0 else { return }
        if file < 0 {
            let folder = (path as NSString).deletingLastPathComponent
            mkdir(folder, 0o700)
            file = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard file >= 0 else { return }
        }
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < kept {
                let n = Foundation.write(file, raw.baseAddress! + offset, kept - offset)
                if n <= 0 { break }
                offset += n
            }
        }
        written += kept
    }

    mutating func close() {
        if dropped > 0, file >= 0 {
            let note = Array(RunnerLog.droppedNote(dropped: dropped, limit: limit).utf8)
            _ = note.withUnsafeBytes { Foundation.write(file, $0.baseAddress, $0.count) }
        }
        if file >= 0 { Foundation.close(file) }
        file = -1
    }
}
