import Foundation
public import NecroCore
import NecroRunners
import Synchronization

/// Runs tasksets: the engine's decisions carried out with a registry and a launcher.
///
/// One loop owns the engine. Inputs — runner events, commands, the timer of the next deadline —
/// arrive in an inbox and are handled in batches: each batch is one turn, whose record is written
/// to the journal (one line) before its runners are launched or signalled, and taken into the
/// registry right after by the `RecordWriter`, in one transaction with the turns that came meanwhile.
public final class Dispatcher<C: Clock>: Sendable where C.Duration == Duration, C.Instant: Sendable {
    /// Where runners work and write.
    public struct Paths: Sendable {
        /// Runner logs, `<logs>/<runner-id>.log`.
        public var logs: String
        /// Per-task working folders, `<work>/<spec>/<task-id>`, until tasks get git worktrees.
        public var work: String
        /// The registry's path (never given to runners).
        public var registry: String
        /// Where runners' supervisors record how they ended, so that it outlives the dispatcher: a
        /// table per dispatcher start (`RunnerStatusTable`); nil runs runners unsupervised.
        public var status: String?

        public init(logs: String, work: String, registry: String, status: String? = nil) {
            self.logs = logs
            self.work = work
            self.registry = registry
            self.status = status
        }

        /// The task's working folder, inside `work` whatever its spec name and id.
        public func workFolder(for task: TaskKey) -> String {
            "\(work)/\(Self.fileName(task.spec))/\(Self.fileName(task.id.rawValue))"
        }

        /// The runner's log, inside `logs` whatever its id.
        public func logFile(for runner: RunnerID) -> String { "\(logs)/\(Self.fileName(runner.rawValue)).log" }

        /// A name that stays one path component (`PathComponent.safe`).
        static func fileName(_ text: String) -> String { PathComponent.safe(text) }
    }

    /// What observers see: the events each turn recorded, in order, and runners' output.
    public enum Update: Sendable {
        case events([EventRecord])
        case output(RunnerID, lastLine: String)
        case finished(RunOutcome)
    }

    enum Inbound: Sendable {
        /// With what to call once the turn that handles it is recorded and carried out.
        case input(EngineInput, done: (@Sendable () -> Void)? = nil)
        case runner(RunnerEvent, received: ContinuousClock.Instant)
        case tick
    }

    /// Exit-to-start latencies: from the moment a runner's exit is seen (its process reaped) to the
    /// moment the processes of the runners it led to are started (their spawn returned), both
    /// stamped on the launcher's threads as they happen. For benchmarks.
    public var startLatencies: [Duration] { latencies.withLock { $0 } }
    private let latencies = Mutex<[Duration]>([])

    public let configuration: DispatcherConfiguration
    let registry: any Registry
    /// A launcher per pool type.
    let launchers: [PoolType: any RunnerLauncher]
    let clock: C
    let paths: Paths
    let options: DispatchEngine<C.Instant>.Options
    let baseEnvironment: [String: String]
    /// Git worktrees for runners, with a repo pool; its work runs on `workspaceQueue`, one call
    /// at a time, off the loop.
    public let workspaces: (any Workspaces)?
    let workspaceQueue = DispatchQueue(label: "necro.workspaces")
    /// The slot each runner with one works in, until its exit is handed to the engine.
    private let slotUsers = Mutex<[RunnerID: (slot: TaskSlot, user: SlotUser)]>([:])
    let inbox = Inbox<Inbound>()
    let journal: EventJournal
    /// Each observer's stream (see `updates(buffer:)`).
    private let subscribers = Mutex<(next: UInt64, streams: [UInt64: AsyncStream<Update>.Continuation], outcome: RunOutcome?)>(
        (0, [:], nil))
    /// What the engine's state was after the last turn.
    private let lastSnapshot = Mutex(DispatchSnapshot())
    /// How runners reach the API, if it is served: its address and each runner's token.
    let runnerAPI: RunnerAPI?
    /// `necro runner`'s argv (this executable's path, `runner`): the command of a local pool that
    /// names none. Nil: such a pool's tasks fail, saying so.
    let runnerCommand: [String]?

    // Per runner, while it runs: what its gates need, what it reported, its last failure.
    /// How each runner running now was launched (its gates run the same way).
    let launched = Mutex<[RunnerID: (launch: RunnerLaunch, gates: [[String]], type: PoolType)]>([:])
    /// The gates being run for runners that exited 0, by runner; and each gate's runner.
    let gateRuns = Mutex<(byRunner: [RunnerID: GateRun], byGate: [RunnerID: RunnerID])>(([:], [:]))
    /// The gate results each runner reported itself (`necro runner`), by gate name.
    let reportedGates = Mutex<[RunnerID: [String: GateReport]]>([:])
    /// The last `runner_seq` taken from each runner: a report sent again is not recorded twice.
    let reportSeqs = Mutex<[RunnerID: Int]>([:])
    /// Runners adopted from an earlier dispatcher: their last `runner_seq` is looked up.
    let adoptedRunners = Mutex<Set<RunnerID>>([])
    /// How each task's last attempt failed, for the next one's `previous_failure`.
    let lastFailures = Mutex<[TaskKey: [String: JSONValue]]>([:])
    /// The agents' costs, limits and spec documents.
    let agents = AgentLedger()

    public init(
        configuration: DispatcherConfiguration, registry: any Registry, launchers: [any RunnerLauncher], clock: C,
        paths: Paths, options: DispatchEngine<C.Instant>.Options = .init(),
        environment: [String: String]? = nil, workspaces: (any Workspaces)? = nil, runnerAPI: RunnerAPI? = nil,
        runnerCommand: [String]? = nil
    ) {
        self.runnerCommand = runnerCommand
        self.workspaces = workspaces
        self.configuration = configuration
        self.registry = registry
        self.launchers = Dictionary(launchers.map { ($0.poolType, $0) }) { first, _ in first }
        self.clock = clock
        self.paths = paths
        self.options = options
        self.baseEnvironment = environment ?? ProcessInfo.processInfo.environment
        self.journal = EventJournal(path: Self.journalPath(registry: paths.registry, configuration: configuration))
        self.runnerAPI = runnerAPI
    }

    // MARK: Commands, from any thread

    /// Start nothing new; let runners finish until the graceful timeout.
    public func shutdown() { inbox.post(.input(.shutdown)) }
    /// Stop runners now.
    public func shutdownNow() { inbox.post(.input(.shutdownNow)) }
    public func send(_ input: EngineInput) { inbox.post(.input(input)) }

    /// Sends `input` and returns once the turn that handled it is recorded and its effects started
    /// (at once if the dispatcher is not running).
    public func apply(_ input: EngineInput) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !inbox.post(.input(input, done: { continuation.resume() })) { continuation.resume() }
        }
    }

    /// A new observer's stream of what happens from now on: each turn's events as recorded, runners'
    /// output, the end. It holds up to `buffer` updates; an observer that falls further behind is
    /// dropped (its stream ends) rather than slowing the dispatcher, and may subscribe again and
    /// read what it missed from the registry.
    public func updates(buffer: Int = 10_000) -> AsyncStream<Update> {
        let (stream, continuation) = AsyncStream.makeStream(of: Update.self, bufferingPolicy: .bufferingOldest(max(1, buffer)))
        let (id, ended) = subscribers.withLock { subscribers -> (UInt64, RunOutcome?) in
            if let outcome = subscribers.outcome { return (0, outcome) }
            subscribers.next += 1
            subscribers.streams[subscribers.next] = continuation
            return (subscribers.next, nil)
        }
        if let ended {
            continuation.yield(.finished(ended))
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.streams.removeValue(forKey: id) }
        }
        return stream
    }

    private func publish(_ update: Update) {
        let streams = subscribers.withLock { $0.streams }
        for (id, stream) in streams {
            if case .dropped = stream.yield(update) {
                stream.finish()
                _ = subscribers.withLock { $0.streams.removeValue(forKey: id) }
            }
        }
    }

    /// The pools' use, the queue and the tasks' states after the last turn.
    public var snapshot: DispatchSnapshot { lastSnapshot.withLock { $0 } }

    /// Takes in a taskset to run from now on, with the states the registry holds (a dispatcher
    /// that keeps running: `necro serve`).
    public func load(_ spec: TaskSetSpec, records: [TaskRecord]) { inbox.post(.input(.load(spec, records))) }

    /// The task of a runner running now (started or adopted here), nil once it has ended.
    public func task(ofRunner id: RunnerID) -> TaskKey? { runnerRows.withLock { $0.all[id]?.task } }

    /// Whether records wait in the journal for the registry to take them.
    public var hasUnreplayedRecords: Bool { journal.hasPending }

    /// Why no record can be written now (neither the registry nor the journal takes them): nothing
    /// starts until one is. Nil while records are written.
    public var recordFailure: String? { failures.withLock { $0.text } }

    /// What cannot be written now: the turns' records (registry and journal), the runner status
    /// table. While either cannot, the engine starts nothing.
    private struct Failures {
        var records: String?
        var statusTable: String?
        /// Whether a probe of the status table is waiting.
        var probing = false
        var text: String? {
            let parts = [records, statusTable].compactMap { $0 }
            return parts.isEmpty ? nil : parts.joined(separator: "; ")
        }
    }

    private let failures = Mutex(Failures())

    /// Notes what failed or works again, and tells the engine when that changes what it may do.
    private func noteFailure(_ change: (inout Failures) -> Void) {
        let (before, after) = failures.withLock { failures in
            let before = failures.text
            change(&failures)
            return (before, failures.text)
        }
        if let after, after != before {
            FileHandle.standardError.write(Data("necro: \(after); nothing new starts until they are\n".utf8))
            inbox.post(.input(.recordsFailing(after)))
        } else if after == nil, before != nil {
            FileHandle.standardError.write(Data("necro: records are written again\n".utf8))
            inbox.post(.input(.recordsWritten))
        }
    }

    /// The status table had no room for a runner's record: looked at again every second until it has.
    private func probeStatusTable(_ table: RunnerStatusTable) {
        guard failures.withLock({ failures in defer { failures.probing = true }; return !failures.probing }) else { return }
        Task { [weak self, clock] in
            while true {
                try? await clock.sleep(for: .seconds(1))
                guard let self, !Task.isCancelled, inbox.isOpen else { return }
                if table.canClaim {
                    noteFailure {
                        $0.statusTable = nil
                        $0.probing = false
                    }
                    return
                }
            }
        }
    }

    /// Why the registry refused (its error names it), and the journal.
    private func failureText(_ registryError: String) -> String {
        "records cannot be written: \(registryError); nor its journal \(journal.path): \(journal.failure ?? "not tried")"
    }

    /// A name for the registry at `registry` that does not reveal its path (a hash of it): the
    /// runners' socket folder is named after it.
    public static func runnerMarker(registry: String) -> String {
        String(FNV1a.hash(Array(registry.utf8)), radix: 16)
    }

    /// Where the journal of the registry at `registry` lives.
    public static func journalPath(registry: String, configuration: DispatcherConfiguration) -> String {
        configuration.journalPath ?? EventJournal.path(beside: registry)
    }

    // MARK: The loop

    /// Runs the tasksets until the engine finishes: every task done or stuck, or a shutdown.
    /// Runners a previous dispatcher left (`recovered`) are taken over: those still running are
    /// watched as if started here, their tasks left running; those that ended meanwhile count by
    /// how they ended.
    public func run(
        _ tasksets: [(spec: TaskSetSpec, records: [TaskRecord])], recovered: RecoveredRunners = RecoveredRunners()
    ) async throws -> RunOutcome {
        try journal.replay(into: registry)
        subscribers.withLock { $0.outcome = nil }
        if let folder = paths.status {
            statusTable.withLock { $0 = nil }
            let table = try RunnerStatusTable(folder: folder, name: options.runnerIDSuffix.map { "runners-\($0)" } ?? "runners")
            statusTable.withLock { $0 = table }
        }
        var engineOptions = options
        if configuration.budget.taskUSD != nil || configuration.budget.tasksetUSD != nil {
            // What the agents cost so far, asked as each task's turn comes.
            engineOptions.refuseStart = { [weak self] task in self?.budgetRefusal(for: task) }
        }
        var engine = DispatchEngine<C.Instant>(configuration: configuration, options: engineOptions, now: clock.now)
        let writer = RecordWriter(
            registry: registry, journal: journal,
            observers: .init(
                recorded: { [weak self] events, statusRecords in self?.recorded(events, freeing: statusRecords) },
                notRecorded: { [weak self] transitions in self?.publishUnrecorded(transitions) },
                failing: { [weak self] error in
                    guard let self else { return }
                    let text = failureText(error)
                    noteFailure { $0.records = text }
                },
                caughtUp: { [weak self] in self?.noteFailure { $0.records = nil } }))
        self.writer.withLock { $0 = writer }
        let handler: @Sendable (RunnerEvent) -> Void = { [self] event in
            if takeGateEvent(event) { return }
            if case .exited(let id, let exit) = event {
                // A runner that exited 0 is done only once its task's gates pass.
                if exit.succeeded, startGates(of: id) { return }
                finishExit(id, exit.succeeded ? exit : reportedGateFailure(of: id).map(RunnerExit.gateFailed) ?? exit)
                return
            }
            inbox.post(.runner(event, received: .now))
        }
        for launcher in launchers.values { launcher.deliver(to: handler) }
        defer { for launcher in launchers.values { launcher.deliver(to: nil) } }
        var timer: (deadline: C.Instant, task: Task<Void, Never>)?
        defer { timer?.task.cancel() }

        for ended in recovered.ended { recordSpool(of: ended.runner, tasksets) }
        seedCheckpoints(tasksets.map(\.spec.name))
        seedAgentUsage(tasksets.map(\.spec.name))
        var recovered = recovered
        for index in recovered.ended.indices { recovered.ended[index].exit = gatedExit(recovered.ended[index], tasksets) }
        for runner in recovered.adopted { adopt(runner, tasksets) }
        for ended in recovered.ended {
            endedRunners.withLock { $0.append((ended.runner.id, ended.runner.poolType)) }
            var row = ended.runner
            row.state = .exited
            row.endedAt = wallNow()
            row.exit = ended.exit?.reason ?? "ended while no dispatcher was running, without a recorded status"
            saveRunner(row)
        }
        var actions: [EngineAction] = []
        for taskset in tasksets {
            actions += engine.load(taskset.spec, records: taskset.records, recovered: recovered, now: clock.now)
        }
        lastSnapshot.withLock { $0 = engine.snapshot }
        var outcome = perform(actions)

        while outcome == nil {
            // Arm the timer for the next deadline, if it moved.
            if let deadline = engine.nextDeadline {
                if timer?.deadline != deadline {
                    timer?.task.cancel()
                    timer = (deadline, Task { [inbox, clock] in
                        try? await clock.sleep(until: deadline, tolerance: nil)
                        if !Task.isCancelled { inbox.post(.tick) }
                    })
                }
            } else if let current = timer {
                current.task.cancel()
                timer = nil
            }
            let batch = await inbox.takeBatch()
            if batch.isEmpty && Task.isCancelled {
                actions = engine.handle(.shutdownNow, now: clock.now)
                outcome = perform(actions)
                continue
            }
            actions = []
            for inbound in batch { actions += handle(inbound, &engine) }
            if let current = timer, current.deadline <= clock.now { timer = nil }  // it fired: re-arm next turn
            // The snapshot before the effects: a runner that starts finds itself in it.
            lastSnapshot.withLock { $0 = engine.snapshot }
            outcome = perform(actions, done: batch.compactMap { if case .input(_, let done?) = $0 { done } else { nil } })
            noteLatency(of: batch, actions)
        }
        // Nothing more is taken; whoever waits on a request left in the inbox is let go.
        for case .input(_, let done?) in inbox.close() { done() }
        if runnerRows.withLock({ !$0.dirty.isEmpty }) { record([]) }
        // Every turn into the registry; what it cannot take stays in the journal for the next start.
        writer.finish()
        self.writer.withLock { $0 = nil }
        journal.close()
        try? journal.replay(into: registry)  // (nothing to do unless the writer's last try failed)
        // Every runner's exit is recorded: nothing needs the table any more.
        statusTable.withLock { $0 }?.removeIfUnused()
        publish(.finished(outcome!))
        // Finished outside the lock: a stream's end calls back to unsubscribe. Observers that come
        // later are told at once that it is over.
        let streams = subscribers.withLock { subscribers in
            defer { subscribers.streams.removeAll() }
            subscribers.outcome = outcome
            return Array(subscribers.streams.values)
        }
        for stream in streams { stream.finish() }
        return outcome!
    }

    private func handle(_ inbound: Inbound, _ engine: inout DispatchEngine<C.Instant>) -> [EngineAction] {
        let now = clock.now
        switch inbound {
        case .tick:
            return engine.handle(.tick, now: now)
        case .input(.heartbeat(let id), _):
            // A heartbeat through the API: kept on the runner's row, saved with the turn.
            updateRunner(id) { $0.lastHeartbeat = self.wallNow() }
            return engine.handle(.heartbeat(id), now: now)
        case .input(.runnerReported(let id, let events), _):
            return engine.handle(.runnerReported(id, takeReports(id, events)), now: now)
        case .input(let input, _):
            return engine.handle(input, now: now)
        case .runner(.started(let id, let handle), let received):
            noteStarted(id, at: received)
            updateRunner(id) {
                $0.handle = handle.value
                $0.pid = handle.pid
                $0.processStartTime = handle.processStartTime
            }
            return engine.handle(.runnerStarted(id, pid: handle.pid), now: now)
        case .runner(.output(let id, let line), _):
            publish(.output(id, lastLine: line))
            return engine.handle(.heartbeat(id), now: now)
        case .runner(.exited(let id, let ended), _):
            // An agent stopped by its provider's usage limit (it said so before its runner ended,
            // so its report was taken first): tried again after the reset.
            var limited: RunnerExit?
            if case .exited(let code) = ended, code != 0 { limited = limitedExit(of: id) }
            let exit = limited ?? ended
            // Once this turn is committed, the supervisor's record of the status is not needed any
            // more; until then it is what recovery would go by.
            if let (record, type) = runnerRows.withLock({ rows in rows.all[id].map { ($0.status, $0.poolType) } }) {
                if let record { consumedStatusRecords.withLock { $0.append(record) } }
                endedRunners.withLock { $0.append((id, type)) }
            }
            updateRunner(id) {
                $0.state = .exited
                $0.endedAt = self.wallNow()
                $0.exit = exit.reason
            }
            forgetRunner(id, exit)
            return engine.handle(.runnerExited(id, exit), now: now)
        }
    }

    /// Remembers when the exits that led to this turn's launches arrived; each launch's latency is
    /// taken when its process has started (`noteStarted`).
    private func noteLatency(of batch: [Inbound], _ actions: [EngineAction]) {
        let exits = batch.compactMap { inbound -> ContinuousClock.Instant? in
            if case .runner(.exited, let received) = inbound { return received }
            return nil
        }
        guard let first = exits.min() else { return }
        let launched = actions.compactMap { action -> RunnerID? in
            if case .launch(let request) = action { return request.runner }
            return nil
        }
        guard !launched.isEmpty else { return }
        latencyStarts.withLock { starts in for id in launched { starts[id] = first } }
    }

    private func noteStarted(_ id: RunnerID, at received: ContinuousClock.Instant) {
        guard let start = latencyStarts.withLock({ $0.removeValue(forKey: id) }) else { return }
        latencies.withLock { $0.append(received - start) }
    }

    private let latencyStarts = Mutex<[RunnerID: ContinuousClock.Instant]>([:])

    /// Carries out one turn: its record, journalled, then its effects. `done` is called once the
    /// record is in the registry.
    /// A turn whose record could not be written anywhere starts no runner: its launches are
    /// withdrawn (the engine queues their tasks again), and nothing starts until a record is
    /// written. Its other effects (stopping runners) are carried out.
    private func perform(_ actions: [EngineAction], done: [@Sendable () -> Void] = []) -> RunOutcome? {
        var transitions: [Transition] = []
        var withdrawn: [RunnerID: String] = [:]
        let at = wallNow()
        for action in actions {
            switch action {
            case .record(var batch):
                for index in batch.indices { batch[index].at = at }
                transitions += batch
                noteCheckpoints(batch)
                noteAgentUsage(batch)
            // Its row, with the record its supervisor will write its status to, is saved with its
            // assignment: recovery finds every runner that may have started.
            case .launch(let request):
                switch runnerRow(request) {
                case .success(let row): saveRunner(row)
                case .failure(let error):
                    saveRunner(
                        RunnerRecord(
                            id: request.runner, task: request.task, attempt: request.attempt, pool: request.pool, startedAt: at,
                            poolType: poolType(of: request.pool)))
                    withdrawn[request.runner] = error.message
                    noteFailure { $0.statusTable = error.message }
                    if let table = statusTable.withLock({ $0 }) { probeStatusTable(table) }
                }
            default: break
            }
        }
        var durable = true
        if !transitions.isEmpty || !done.isEmpty || runnerRows.withLock({ !$0.dirty.isEmpty }) {
            durable = record(transitions, done: done)
        }
        var outcome: RunOutcome?
        for action in actions {
            switch action {
            case .record: break
            case .launch(let request) where !durable || withdrawn[request.runner] != nil:
                withdraw(request, because: withdrawn[request.runner] ?? recordFailure ?? "its record could not be written")
            case .launch(let request): launch(request)
            case .signal(let id, let signal): self.signal(id, signal)
            case .checkLease(let id): inbox.post(.input(leaseAnswer(id)))
            case .finished(let result): outcome = result
            }
        }
        return outcome
    }

    /// A launch not carried out: its runner's row says so, its status record is freed once that is
    /// recorded, and the engine is told.
    private func withdraw(_ request: LaunchRequest, because reason: String) {
        if let status = runnerRows.withLock({ $0.all[request.runner]?.status }) {
            consumedStatusRecords.withLock { $0.append(status) }
        }
        updateRunner(request.runner) {
            $0.state = .exited
            $0.endedAt = self.wallNow()
            $0.exit = "not started: \(reason)"
        }
        inbox.post(.input(.launchWithdrawn(request.runner, reason: reason)))
    }

    /// Records a turn: its transitions and the runner rows it changed go to the journal, then, off
    /// the loop, to the registry (`RecordWriter`). Should the journal not take them, the writer
    /// tries the registry at once, with what came before; should that fail too, records are
    /// failing: the turn, and every turn after it until one is recorded, waits in memory, tried
    /// again and again. Returns whether the turn is durably written (journal or registry).
    @discardableResult
    private func record(_ transitions: [Transition], done: [@Sendable () -> Void] = []) -> Bool {
        let rows = runnerRows.withLock { rows -> [RunnerRecord] in
            defer {
                rows.dirty.removeAll()
                rows.ended.removeAll()
            }
            return rows.dirty.compactMap { rows.all[$0] ?? rows.ended[$0] }
        }
        let consumed = consumedStatusRecords.withLock { records in defer { records.removeAll() }; return records }
        let ended = endedRunners.withLock { runners in defer { runners.removeAll() }; return runners }
        guard let writer = writer.withLock({ $0 }) else { return recordNow(transitions, rows, consumed, done) }
        if transitions.isEmpty && rows.isEmpty {
            writer.enqueue(.init(batch: nil, statusRecords: consumed, done: done))
            return true
        }
        let unjournalled = { RecordWriter.Turn(batch: JournalBatch(id: "", transitions: transitions, runners: rows), statusRecords: consumed, done: done, journalled: false) }
        if writer.enqueueIfFailing(unjournalled) { return false }
        let journalled = journal.append(transitions, runners: rows, reason: "turn") { batch in
            writer.enqueue(.init(batch: batch, done: done))
        }
        if journalled {
            // The exits this turn records are durable now (replayed from the journal should the
            // registry not have them): their status records may serve other runners, though the
            // registry may take the turn much later (its disk full, the journal on another).
            if let table = statusTable.withLock({ $0 }) { consumed.forEach(table.release) }
            for (runner, type) in ended { launchers[type]?.ended(runner) }
            return true
        }
        writer.enqueue(unjournalled())
        return writer.flush()
    }

    /// Writes a turn to the registry at once (no writer: the dispatcher is not running).
    private func recordNow(
        _ transitions: [Transition], _ rows: [RunnerRecord], _ consumed: [StatusRecord], _ done: [@Sendable () -> Void]
    ) -> Bool {
        defer { done.forEach { $0() } }
        do {
            recorded(try registry.apply(transitions, saving: rows), freeing: consumed)
            return true
        } catch {
            FileHandle.standardError.write(Data("necro: a turn's records were lost: the registry did not take them: \(error)\n".utf8))
            publishUnrecorded(transitions)
            return false
        }
    }

    /// A turn is in the registry: observers are told its events, and the supervisors' status
    /// records of the exits it recorded are free for other runners.
    private func recorded(_ events: [EventRecord], freeing statusRecords: [StatusRecord]) {
        if !events.isEmpty { publish(.events(events)) }
        if let table = statusTable.withLock({ $0 }) { statusRecords.forEach(table.release) }
    }

    /// Tells observers of events the registry could not take yet (they have no id: 0).
    private func publishUnrecorded(_ transitions: [Transition]) {
        let now = wallNow()
        publish(
            .events(
                transitions.flatMap { transition in
                    let stamp = transition.at ?? now
                    return transition.events.map { event in
                        EventRecord(
                            id: 0, spec: transition.spec, taskID: transition.task, seq: 0, type: event.type,
                            actor: event.actor, spanID: event.spanID, parentSpanID: event.parentSpanID, phase: event.phase,
                            payload: event.payload, timestamp: stamp)
                    }
                }))
    }

    /// A new runner's row: where it logs, and where its supervisor will record how it ended; an
    /// error if that record cannot be written (the disk is full): the runner must not start.
    private func runnerRow(_ request: LaunchRequest) -> Result<RunnerRecord, RunnerStatusTableError> {
        var status: StatusRecord?
        let type = poolType(of: request.pool)
        // A status record is a local supervisor's: other launchers learn how a runner ended from their engine.
        if type == .localProcess, let table = statusTable.withLock({ $0 }) {
            switch table.claim(request.runner) {
            case .success(let record): status = record
            case .failure(let error): return .failure(error)
            }
        }
        return .success(
            RunnerRecord(
                id: request.runner, task: request.task, attempt: request.attempt, pool: request.pool,
                logPath: paths.logFile(for: request.runner), status: status, startedAt: wallNow(), poolType: type))
    }

    private func poolType(of pool: String) -> PoolType { configuration.pool(named: pool)?.type ?? .localProcess }

    /// The launcher of a runner running now (by its pool's type).
    private func launcher(of runner: RunnerID) -> (any RunnerLauncher)? {
        launchers[runnerRows.withLock { $0.all[runner]?.poolType } ?? .localProcess]
    }

    private func launch(_ request: LaunchRequest) {
        guard let slot = request.slot, let workspaces else {
            start(request, in: paths.workFolder(for: request.task))  // the launcher creates it
            return
        }
        let user = SlotUser(runner: request.runner, task: request.task, attempt: request.attempt, title: request.spec.title)
        slotUsers.withLock { $0[request.runner] = (slot, user) }
        workspaceQueue.async { [self] in
            switch workspaces.prepare(slot, for: user, merging: request.dependencyBranches) {
            case .ready(let report):
                inbox.post(.input(.slot(request.runner, report)))
                start(request, in: slot.path)
            case .conflict(let dependency, let files):
                slotUsers.withLock { $0[request.runner] = nil }
                inbox.post(.runner(.exited(request.runner, .mergeConflict(dependency: dependency, files: files)), received: .now))
            case .failed(let reason):
                slotUsers.withLock { $0[request.runner] = nil }
                inbox.post(.input(.slot(request.runner, .allocationFailed(reason))))
                inbox.post(.runner(.exited(request.runner, .launchFailed("slot allocation failed: \(reason)")), received: .now))
            }
        }
    }

    /// Watches a runner an earlier dispatcher started; with a repo pool, its slot is released when
    /// it ends, as for runners started here.
    private func adopt(_ runner: RunnerRecord, _ tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]) {
        guard let handle = runner.handle, let launcher = launchers[runner.poolType] else { return }
        saveRunner(runner)
        adoptedRunners.withLock { _ = $0.insert(runner.id) }
        let record = tasksets.lazy.flatMap(\.records).first { $0.key == runner.task }
        if let record, !record.task.gates.isEmpty, let pool = configuration.pool(named: runner.pool) {
            // Its gates run as they would have, should it exit 0: in its folder, with the
            // environment it was given.
            let work = record.slot.map(\.path) ?? paths.workFolder(for: runner.task)
            let request = LaunchRequest(
                runner: runner.id, task: runner.task, spec: record.task, attempt: runner.attempt, pool: pool.name, dependencies: [],
                slot: record.slot)
            let contract = RunnerContract(request: request, pool: pool, work: work, api: runnerAPI, checkpoint: nil)
            launched.withLock {
                $0[runner.id] = (
                    RunnerLaunch(
                        runner: runner.id, argv: [], environment: contract.environment(base: baseEnvironment), workingDirectory: work,
                        logPath: runner.logPath ?? paths.logFile(for: runner.id), task: runner.task, attempt: runner.attempt, pool: pool.name,
                        resources: TaskResources(
                            cpu: record.task.resources.cpu ?? pool.limits.defaultResources.cpu,
                            memoryMB: record.task.resources.memoryMB ?? pool.limits.defaultResources.memoryMB),
                        sharedPaths: [record.slot == nil ? nil : workspaces?.gitDirectory, runnerAPI?.socket].compactMap { $0 }),
                    record.task.gates, pool.type
                )
            }
        }
        if workspaces != nil, let slot = record?.slot {
            let user = SlotUser(runner: runner.id, task: runner.task, attempt: runner.attempt, title: record?.task.title ?? "")
            slotUsers.withLock { $0[runner.id] = (slot, user) }
        }
        launcher.adopt(
            RunnerAdoption(
                runner: runner.id, handle: RunnerHandle(handle, pid: runner.pid, processStartTime: runner.processStartTime),
                logPath: runner.logPath ?? paths.logFile(for: runner.id), status: runner.status))
    }

    /// Hands a runner's exit to the repo pool first, if it had a slot: what it left is committed or
    /// saved before the engine hears of the exit (and before dependents merge its branch).
    private func releaseSlot(of id: RunnerID, succeeded: Bool, then event: RunnerEvent) -> Bool {
        guard let workspaces, let (slot, user) = slotUsers.withLock({ $0.removeValue(forKey: id) }) else { return false }
        workspaceQueue.async { [inbox] in
            for report in workspaces.release(slot, of: user, succeeded: succeeded) { inbox.post(.input(.slot(id, report))) }
            inbox.post(.runner(event, received: .now))
        }
        return true
    }

    /// Signals a runner; before a stop, its uncommitted work is saved under its attempt's ref.
    /// A runner with a slot is signalled from the workspace queue, after its slot is prepared.
    private func signal(_ id: RunnerID, _ signal: RunnerSignal) {
        guard let launcher = launcher(of: id) else { return }
        if signalGate(of: id, signal) { return }  // it exited 0: its gate is what runs now
        guard let workspaces, let (slot, user) = slotUsers.withLock({ $0[id] }) else {
            launcher.signal(id, signal)
            return
        }
        workspaceQueue.async { [inbox] in
            if signal == .terminate, let saved = workspaces.saveAttempt(slot, of: user) { inbox.post(.input(.slot(id, saved))) }
            launcher.signal(id, signal)
        }
    }

    private func start(_ request: LaunchRequest, in work: String) {
        guard let pool = configuration.pool(named: request.pool), let launcher = launchers[pool.type] else {
            let type = configuration.pool(named: request.pool)?.type.name ?? "?"
            return failLaunch(request.runner, "no launcher for pool type \(type) (pool \(request.pool))")
        }
        let agent = AgentConfiguration.forTask(request.spec.metadata, configured: configuration.agent)
        var argv: [String]?
        if pool.command.argv.isEmpty && pool.type == .localProcess {
            let place = pool.location.map { " (\($0))" } ?? ""
            guard let runnerCommand else {
                return failLaunch(
                    request.runner, refused: "pool \(pool.name)\(place) has no config.command: say what its runners run (agent_pools.\(pool.name).config.command)")
            }
            guard agent != nil else {
                return failLaunch(
                    request.runner,
                    refused: "pool \(pool.name)\(place) has no config.command, so it runs `necro runner`, and no agent is configured for it to run: add a top-level agent: {command: [...]} to the configuration, or an _Agent:_ line to the task")
            }
            argv = runnerCommand
        }
        // An attempt goes on from where an earlier one left off: the task's last checkpoint (an
        // attempt given back by recovery keeps its number, and still resumes).
        var context: [String: JSONValue] = [
            "heartbeat_timeout_seconds": .double(configuration.heartbeatTimeout.seconds),
            "gate_timeout_seconds": .double(configuration.gateTimeout.seconds),
            "previous_failure": previousFailure(of: request.task, attempt: request.attempt).map(JSONValue.object) ?? .null,
        ]
        context.merge(agentContext(request, agent)) { own, _ in own }
        let contract = RunnerContract(
            request: request, pool: pool, work: work, api: runnerAPI, checkpoint: lastCheckpoint(of: request.task), context: context)
        let row = runnerRows.withLock { $0.all[request.runner] }
        var shared: [String] = []
        if request.slot != nil, let workspaces { shared.append(workspaces.gitDirectory) }
        if let socket = runnerAPI?.socket { shared.append(socket) }
        let launch = RunnerLaunch(
            runner: request.runner, argv: argv ?? contract.argv, environment: contract.environment(base: baseEnvironment),
            workingDirectory: work, logPath: row?.logPath ?? paths.logFile(for: request.runner), status: row?.status,
            nice: pool.nice, task: request.task, attempt: request.attempt, pool: pool.name,
            resources: TaskResources(
                cpu: request.spec.resources.cpu ?? pool.limits.defaultResources.cpu,
                memoryMB: request.spec.resources.memoryMB ?? pool.limits.defaultResources.memoryMB),
            sharedPaths: shared)
        if !request.spec.gates.isEmpty { launched.withLock { $0[request.runner] = (launch, request.spec.gates, pool.type) } }
        launcher.launch(launch)
    }

    /// A launch that failed before a launcher had it: reported as a launcher reports one (its
    /// slot released first). One `refused` is not retried: the configuration must change.
    private func failLaunch(_ id: RunnerID, _ reason: String = "", refused: String? = nil) {
        finishExit(id, refused.map(RunnerExit.refused) ?? .launchFailed(reason))
    }

    /// Hands a runner's exit on: its slot released first, if it had one.
    func finishExit(_ id: RunnerID, _ exit: RunnerExit) {
        let event = RunnerEvent.exited(id, exit)
        if releaseSlot(of: id, succeeded: exit.succeeded, then: event) { return }
        inbox.post(.runner(event, received: .now))
    }

    /// The task's last checkpoint not found invalid, if a runner reported one: as read from the
    /// registry at the start (the journal replayed first) and recorded by this dispatcher's turns
    /// since, without waiting for them to reach the registry.
    private func lastCheckpoint(of task: TaskKey) -> [String: JSONValue]? {
        checkpoints.withLock { $0[task]?.last }
    }

    /// Keeps the checkpoints of each task a turn records.
    private func noteCheckpoints(_ transitions: [Transition]) {
        for transition in transitions {
            guard let id = transition.task else { continue }
            for event in transition.events where checkpointEventTypes.contains(event.type) {
                noteCheckpoint(TaskKey(spec: transition.spec, id: id), event.type, event.payload)
            }
        }
    }

    /// A `checkpoint_commit` is a task's checkpoint from then on, until a `checkpoint_invalid` of
    /// the same id says it cannot be read back: then the one before it is. A task whose
    /// definition changed starts afresh: its checkpoints were of other work.
    private func noteCheckpoint(_ task: TaskKey, _ type: EventType, _ payload: [String: JSONValue]) {
        checkpoints.withLock { checkpoints in
            if type == .checkpointCommit {
                checkpoints[task, default: []].append(payload)
            } else if type == .taskSpecChanged {
                checkpoints[task] = nil
            } else if let id = payload["checkpoint_id"], id != .null {
                checkpoints[task]?.removeAll { $0["checkpoint_id"] == id }
            }
        }
    }

    /// The checkpoints the registry holds for the tasks of `specs` (the journal is replayed first).
    private func seedCheckpoints(_ specs: [String]) {
        checkpoints.withLock { $0.removeAll() }
        for spec in specs {
            let found = checkpointEventTypes.flatMap { (try? registry.events(EventQuery(spec: spec, type: $0))) ?? [] }
            for event in found.sorted(by: { $0.id < $1.id }) {
                guard let id = event.taskID else { continue }
                noteCheckpoint(TaskKey(spec: spec, id: id), event.type, event.payload)
            }
        }
    }

    /// Each task's checkpoints, oldest first, as recorded.
    private let checkpoints = Mutex<[TaskKey: [[String: JSONValue]]]>([:])

    /// A lease ran out: a heartbeat recorded in the registry (`necro heartbeat`) since the lease
    /// began keeps the runner; none means it is lost.
    private func leaseAnswer(_ id: RunnerID) -> EngineInput {
        let runner = try? registry.runners(runningOnly: true).first { $0.id == id }
        if let heartbeat = runner?.lastHeartbeat,
            wallNow().secondsSince1970 - heartbeat.secondsSince1970 < configuration.heartbeatTimeout.seconds
        {
            return .heartbeat(id)
        }
        return .leaseLost(id)
    }

    /// Runner rows as known here; changed ones are saved with the turn's record, in its transaction.
    private struct RunnerRows {
        var all: [RunnerID: RunnerRecord] = [:]
        var ended: [RunnerID: RunnerRecord] = [:]
        var dirty: Set<RunnerID> = []
    }

    private let runnerRows = Mutex(RunnerRows())
    /// Takes journalled turns into the registry, while `run` runs.
    private let writer = Mutex<RecordWriter?>(nil)
    /// This dispatcher's runner status table, with runners supervised.
    private let statusTable = Mutex<RunnerStatusTable?>(nil)
    /// Status records whose exits are recorded in this turn: free once it is committed.
    private let consumedStatusRecords = Mutex<[StatusRecord]>([])
    /// Runners whose exits this turn records: their launchers may let go of what they kept to
    /// recover them once it is journalled. (Should the journal fail, a later start's recovery
    /// does it.)
    private let endedRunners = Mutex<[(RunnerID, PoolType)]>([])

    /// Replays what a previous dispatcher left in the journal of this registry: before
    /// recovery looks at the registry, so that nothing is recorded twice.
    public static func replayFallbackJournal(
        registryPath: String, configuration: DispatcherConfiguration = DispatcherConfiguration(), into registry: any Registry
    ) throws {
        try EventJournal(path: journalPath(registry: registryPath, configuration: configuration)).replay(into: registry)
    }

    private func saveRunner(_ runner: RunnerRecord) {
        runnerRows.withLock {
            if runner.state == .exited { $0.ended[runner.id] = runner } else { $0.all[runner.id] = runner }
            $0.dirty.insert(runner.id)
        }
    }

    /// A runner's row as known here, running or just ended.
    func runnerRow(of id: RunnerID) -> RunnerRecord? { runnerRows.withLock { $0.all[id] ?? $0.ended[id] } }

    private func updateRunner(_ id: RunnerID, _ change: @Sendable (inout RunnerRecord) -> Void) {
        runnerRows.withLock { rows in
            guard var row = rows.all[id] else { return }
            change(&row)
            if row.state == .exited {
                rows.all[id] = nil
                rows.ended[id] = row
            } else {
                rows.all[id] = row
            }
            rows.dirty.insert(id)
        }
    }

    private func wallNow() -> Timestamp { Timestamp(secondsSince1970: Date().timeIntervalSince1970) }
}

/// The events that say which checkpoint a task goes on from (looked for in every turn's events).
private let checkpointEventTypes: Set<EventType> = [.checkpointCommit, .checkpointInvalid, .taskSpecChanged]

/// How runners reach the dispatcher's HTTP API: its address (known once the server listens), and
/// the token that lets each runner (and only it, while it runs) report on its task.
public final class RunnerAPI: Sendable {
    private let address: Mutex<String>
    private let socketPath = Mutex<String?>(nil)
    public let token: @Sendable (RunnerID) -> String

    public init(url: String = "", token: @escaping @Sendable (RunnerID) -> String) {
        self.address = Mutex(url)
        self.token = token
    }

    /// The API's base URL, given to runners as `NECRO_API_URL`.
    public var url: String {
        get { address.withLock { $0 } }
        set { address.withLock { $0 = newValue } }
    }

    /// The unix socket the API is served on for runners, given to them as `NECRO_API_SOCKET`.
    public var socket: String? {
        get { socketPath.withLock { $0 } }
        set { socketPath.withLock { $0 = newValue } }
    }
}

/// The `TASK_CONTEXT` a runner gets: its task, dependencies, slot and metadata, as JSON.
enum TaskContext {
    static func json(
        _ request: LaunchRequest, slotPath: String, checkpoint: [String: JSONValue]? = nil, more: [String: JSONValue] = [:]
    ) -> String {
        let t = request.spec
        let task: [String: JSONValue] = [
            "id": .string(t.id.rawValue), "title": .string(t.title), "description": .string(t.description),
            "required_skill": t.requiredSkill.map(JSONValue.string) ?? .null, "priority": .int(t.priority),
            "optional": .bool(t.optional), "timeout_seconds": t.timeoutSeconds.map(JSONValue.int) ?? .null,
            "gates": .array(t.gates.map { .array($0.map(JSONValue.string)) }), "metadata": .object(t.metadata),
            "steps": .array(t.steps.map(\.json)),
        ]
        let slot: [String: JSONValue] = [
            "id": request.slot.map { .string($0.id) } ?? .null, "path": .string(slotPath),
            "branch": request.slot.map { .string($0.branch) } ?? .null,
        ]
        let context: [String: JSONValue] = [
            "spec": .string(request.task.spec), "runner_id": .string(request.runner.rawValue), "attempt": .int(request.attempt),
            "pool": .string(request.pool), "task": .object(task), "dependencies": .array(request.dependencies.map { .string($0.rawValue) }),
            "slot": .object(slot), "checkpoint": checkpoint.map(JSONValue.object) ?? .null,
        ]
        return JSONValue.object(context.merging(more) { own, _ in own }).jsonText
    }
}

/// Why the runners a stopped dispatcher left could not be sorted out.
public struct RecoveryError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension Dispatcher {
    /// Sorts out the runners of `specs` that a dispatcher that stopped left `running` in the
    /// registry (a runner's row is saved before it starts), each by the launcher of its pool's
    /// type: those alive are to be adopted, the others ended meanwhile. Throws if a runner's pool
    /// type has no launcher here, or its launcher cannot tell: taken as ended, its task would
    /// run again while it may still run.
    public static func sortOut(
        _ specs: [String], in registry: any Registry, launchers: [any RunnerLauncher]
    ) async throws -> RecoveredRunners {
        let wanted = Set(specs)
        let left = try registry.runners(runningOnly: true).filter { wanted.contains($0.task.spec) }
        var recovered = RecoveredRunners()
        if let type = Set(left.map(\.poolType)).subtracting(launchers.map(\.poolType)).first {
            throw RecoveryError(
                message: "the previous dispatcher left \(type) runners running (\(left.filter { $0.poolType == type }.map(\.id.rawValue).prefix(5).joined(separator: ", "))), and no \(type) launcher is here to look at them")
        }
        for launcher in launchers {
            let found = try await launcher.sortOut(left.filter { $0.poolType == launcher.poolType }, specs: wanted)
            recovered.adopted += found.adopted
            recovered.ended += found.ended
        }
        return recovered
    }
}
