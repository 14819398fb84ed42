import HeapModule

/// The dispatcher's decisions, as a state machine: the driver feeds it what happened and the time,
/// and it answers with what to record and what to do. No I/O, no clock of its own.
///
/// Event-driven: a runner's exit makes its dependents ready and dispatches them within the same
/// `handle` call. Every deadline (retry backoff, leases, task timeouts, kill grace, shutdown) lives
/// in one heap; the driver sleeps until `nextDeadline` and sends `.tick`.
public struct DispatchEngine<Instant: InstantProtocol & Sendable>: Sendable where Instant.Duration == Duration {
    public struct Options: Sendable {
        /// Wait between SIGTERM and SIGKILL.
        public var killGrace: Duration = .seconds(10)
        /// The same wait when the user asks a second time (a second Ctrl-C): stop now.
        public var hurriedKillGrace: Duration = .seconds(1)
        /// End the run when nothing is left to do (`necro run`); keep waiting for work (`necro serve`).
        public var finishWhenIdle = true
        /// Seeds the jitter of retry delays.
        public var randomSeed: UInt64 = 0x5eed
        /// Appended to runner ids: a token per dispatcher start keeps them unique across restarts.
        public var runnerIDSuffix: String?
        /// Why a task may not start now that its turn has come (its agents' budget is spent), asked
        /// before each assignment; nil: it may. A refused task fails, not retried, and no attempt
        /// is counted.
        public var refuseStart: (@Sendable (TaskKey) -> String?)?

        public init(
            killGrace: Duration = .seconds(10), finishWhenIdle: Bool = true, randomSeed: UInt64 = 0x5eed,
            runnerIDSuffix: String? = nil
        ) {
            self.killGrace = killGrace
            self.finishWhenIdle = finishWhenIdle
            self.randomSeed = randomSeed
            self.runnerIDSuffix = runnerIDSuffix
        }
    }

    struct TaskSetState: Sendable {
        var spec: TaskSetSpec
        var tracker: ReadyTracker
        var states: [TaskState]
        var attempts: [Int]
        var reasons: [String?]
        /// How many tasks (not groups) are in each state, kept as states change.
        var counts: [TaskState: Int] = [:]
    }

    struct RunnerState: Sendable {
        var key: TaskKey
        var index: Int
        var assignment: Scheduler.Assignment
        var attempt: Int
        /// Its worktree, with a repo pool.
        var slot: (number: Int, slot: TaskSlot)?
        var started: Instant
        var leaseExpiresAt: Instant
        var checkingLease = false
        /// Why the dispatcher is stopping it, once it is.
        var stopReason: String?
        /// Stopped by a shutdown: its task goes back to ready without spending the attempt.
        var interrupted = false
        var cancelled = false
        /// Started by a dispatcher that stopped, and taken over by this one.
        var recovered = false
        /// It reports its own leases (`necro runner`): the dispatcher records none for it.
        var reportsOwnLease = false
        /// When the dispatcher last recorded a lease event for it (renewals are coalesced).
        var leaseNoted: Instant
    }

    enum DeadlineKind: Hashable, Sendable {
        case lease(RunnerID)
        case taskTimeout(RunnerID)
        case killGrace(RunnerID)
        case retry(TaskKey)
        case shutdown
        /// Records have failed for the timeout: the run may give up.
        case recordsFailing

        /// Whether it is about runner `id`.
        func concerns(_ id: RunnerID) -> Bool {
            switch self {
            case .lease(let runner), .taskTimeout(let runner), .killGrace(let runner): runner == id
            default: false
            }
        }
    }

    struct Deadline: Comparable, Sendable {
        var at: Instant
        var order: UInt64
        var kind: DeadlineKind
        static func < (a: Deadline, b: Deadline) -> Bool { a.at != b.at ? a.at < b.at : a.order < b.order }
        static func == (a: Deadline, b: Deadline) -> Bool { a.at == b.at && a.order == b.order }
    }

    enum Phase: Sendable {
        case running, draining, stopping, finished
    }

    public let configuration: DispatcherConfiguration
    public let options: Options
    public internal(set) var scheduler: Scheduler
    var sets: [String: TaskSetState] = [:]
    var runners: [RunnerID: RunnerState] = [:]
    var deadlines = Heap<Deadline>()
    var deadlineOrder: UInt64 = 0
    var pendingRetries: Set<TaskKey> = []
    /// Attempts given back after a usage limit, per task: their runners need ids of their own.
    var limitedAttempts: [TaskKey: Int] = [:]
    /// How many times a task's attempt is given back for a usage limit before a limit counts as a
    /// failure.
    static var limitedAttemptsAllowed: Int { 20 }
    /// Slot numbers free for the next runner, with a repo pool.
    var freeSlots = Heap<Int>()
    /// When each queued task was queued: its wait is recorded when it is assigned.
    var queuedSince: [TaskKey: Instant] = [:]
    /// Skills already warned of, once per run: no pool serves them.
    var warnedSkills: Set<String> = []
    var random: SplitMix64
    var phase = Phase.running
    /// The disabled pools the queued tasks were last said to wait on (said once per situation).
    var waitingOnPools: [[String]: [TaskKey]]?
    /// Since when, and why, records cannot be written: nothing starts meanwhile.
    var recordsFailing: (since: Instant, error: String)?
    var now: Instant
    // What one `handle` call produces.
    var transitions: [Transition] = []
    var effects: [EngineAction] = []

    public init(configuration: DispatcherConfiguration, options: Options = Options(), now: Instant) {
        self.configuration = configuration
        self.options = options
        self.now = now
        self.random = SplitMix64(seed: options.randomSeed)
        self.scheduler = Scheduler(policy: configuration.schedulingPolicy, pools: configuration.admission)
        if let count = configuration.slotCount { freeSlots = Heap(1...count) }
    }

    /// The earliest time something is due, for the driver to sleep until.
    public var nextDeadline: Instant? { deadlines.min?.at }

    /// The pools' use, the queue and the tasks' states, as of now.
    public var snapshot: DispatchSnapshot {
        DispatchSnapshot(
            pools: scheduler.pools.pools.map { DispatchSnapshot.Pool(limits: $0, usage: scheduler.pools.usage[$0.name] ?? .init()) },
            queueDepth: scheduler.queue.count, tasks: sets.mapValues(\.counts), running: runners.count,
            waitingOnDisabledPools: waitingOnPools ?? [:])
    }

    /// Whether the run is over.
    public var isFinished: Bool { phase == .finished }

    /// Attempts started so far for a task.
    public func attempts(of key: TaskKey) -> Int? {
        guard let set = sets[key.spec], let index = set.tracker.graph.index(of: key.id) else { return nil }
        return set.attempts[index]
    }

    // MARK: Driving

    /// Takes in a taskset with the states the registry holds, and starts what can start.
    /// Tasks left `running` by a dispatcher that died are taken over (recovery): a runner still
    /// running (`recovered.adopted`) is watched as if started here; one that ended meanwhile counts
    /// by how it ended, as its supervisor recorded it; the rest are requeued, the interrupted
    /// attempt given back.
    public mutating func load(
        _ spec: TaskSetSpec, records: [TaskRecord], recovered: RecoveredRunners = RecoveredRunners(), now: Instant
    ) -> [EngineAction] {
        self.now = now
        let (graph, _) = TaskGraph.build(spec.tasks)
        let byID = Dictionary(records.map { ($0.task.id, $0) }, uniquingKeysWith: { first, _ in first })
        var states = spec.tasks.map { byID[$0.id]?.state ?? ($0.markedDone ? .done : .blocked) }
        let attempts = spec.tasks.map { byID[$0.id]?.attempts ?? 0 }
        let reasons = spec.tasks.map { byID[$0.id]?.reason }
        // Done, skipped, and optional tasks that failed for good: what waits on them goes on.
        let finished = states.indices.filter {
            states[$0] == .done || states[$0] == .skipped || (states[$0] == .failed && spec.tasks[$0].optional)
        }
        let adoptedByTask = Dictionary(
            recovered.adopted.filter { $0.task.spec == spec.name }.map { ($0.task.id, $0) }, uniquingKeysWith: { first, _ in first })
        let endedByTask = Dictionary(
            recovered.ended.filter { $0.runner.task.spec == spec.name && $0.exit != nil }.map { ($0.runner.task.id, $0) },
            uniquingKeysWith: { _, last in last })
        // A task still `running` without a runner, or with one whose end nobody recorded, goes
        // back to the queue.
        let orphaned = states.indices.filter {
            states[$0] == .running && adoptedByTask[spec.tasks[$0].id] == nil && endedByTask[spec.tasks[$0].id] == nil
        }
        for index in orphaned { states[index] = .blocked }
        var counts: [TaskState: Int] = [:]
        for index in states.indices where !graph.isGroup[index] { counts[states[index], default: 0] += 1 }
        sets[spec.name] = TaskSetState(
            spec: spec, tracker: ReadyTracker(graph: graph, finished: finished), states: states, attempts: attempts,
            reasons: reasons, counts: counts)
        scheduler.queue.setWeight(spec.weight, forSpec: spec.name)
        record(
            spec.name, nil,
            events: [
                NewEvent(.dispatcherStarted, payload: [
                    "scheduling_policy": .string(configuration.schedulingPolicy.name),
                    "pools": .array(configuration.pools.map { .string($0.name) }),
                    "tasks": .int(spec.tasks.count),
                ])
            ])
        if !orphaned.isEmpty {
            record(
                spec.name, nil,
                events: [
                    NewEvent(
                        .recoveryDetected, actor: "recovery_sweep", spanID: "recovery_sweep", phase: "recovery",
                        payload: [
                            "expired_count": .int(orphaned.count),
                            "task_ids": .array(orphaned.map { .string(spec.tasks[$0].id.rawValue) }),
                            "explanation": "tasks left running by a dispatcher that stopped without finishing them",
                        ])
                ])
            for index in orphaned {
                let key = TaskKey(spec: spec.name, id: spec.tasks[index].id)
                // The attempt was cut short by the dispatcher, not by the task: it is given back.
                let refunded = max(0, attempts[index] - 1)
                change(
                    key, index, to: .blocked, attempts: refunded, reason: .some(nil),
                    events: [
                        NewEvent(
                            .recoveryRequeued, actor: "recovery_sweep", spanID: "recovery_sweep", phase: "recovery",
                            payload: [
                                "task_id": .string(key.id.rawValue), "retry_count": .int(refunded),
                                "max_retries": .int(maxAttempts(spec.tasks[index])),
                                "explanation": "requeued after recovery; the interrupted attempt is not counted",
                            ])
                    ])
            }
        }
        for index in states.indices where states[index] == .running {
            let id = spec.tasks[index].id
            if let runner = adoptedByTask[id] {
                adopt(runner, index, spec, slot: byID[id]?.slot)
            } else if let ended = endedByTask[id], let exit = ended.exit {
                // As if its exit had just come in: done, retried or failed, with its events.
                takeOver(ended.runner, index, spec, slot: byID[id]?.slot)
                runnerExited(ended.runner.id, exit)
            }
        }
        // Failures block what depends on them; groups whose tasks are all done are done.
        for index in graph.ids.indices
        where (states[index] == .failed && !spec.tasks[index].optional) || states[index] == .cancelled {
            blockDependents(of: TaskKey(spec: spec.name, id: graph.ids[index]), index)
        }
        for index in sets[spec.name]!.tracker.groupsReadyToFinish {
            finishGroups([index], spec: spec.name)
        }
        for index in graph.ids.indices where !graph.isGroup[index] {
            let state = sets[spec.name]!.states[index]
            guard state == .blocked || state == .ready, sets[spec.name]!.tracker.isReady(index) else { continue }
            if state == .blocked, let reason = sets[spec.name]!.reasons[index], reason.hasPrefix("dependency ") { continue }
            let key = TaskKey(spec: spec.name, id: graph.ids[index])
            if pendingRetries.contains(key) { continue }  // a recovered failure: queued after its backoff
            makeReady(key, index)
        }
        return settle()
    }

    /// Handles one input at time `now`, with whatever deadlines are due by then.
    public mutating func handle(_ input: EngineInput, now: Instant) -> [EngineAction] {
        self.now = now
        switch input {
        case .runnerReported(let id, let events):
            // What a runner says of its own work (through the API); any report is a sign of life.
            if let runner = runners[id] {
                record(runner.key.spec, runner.key.id, events: events)
                // `necro runner` says so first: from then on, it reports its own leases.
                if events.contains(where: { $0.type == .runnerSpawn }) { runners[id]!.reportsOwnLease = true }
                renewLease(id)
            }
        case .load(let spec, let records):
            return load(spec, records: records, now: now)
        case .runnerStarted(let id, let pid):
            if let runner = runners[id] {
                var payload = runnerPayload(id, runner)
                if let pid { payload["pid"] = .int(Int(pid)) }
                record(runner.key.spec, runner.key.id, events: [NewEvent(.runnerStarted, payload: payload)])
            }
        case .runnerExited(let id, let exit):
            runnerExited(id, exit)
        case .heartbeat(let id):
            renewLease(id)
        case .slot(let id, let report):
            slotReported(id, report)
        case .leaseLost(let id):
            if let runner = runners[id] {
                let silence = Int(configuration.heartbeatTimeout.seconds)
                runners[id]!.checkingLease = false
                stop(id, reason: "no heartbeat for \(silence) s", event: runner)
            }
        case .tick:
            break
        case .setPriority(let key, let priority):
            setPriority(key, priority)
        case .cancel(let key):
            cancel(key)
        case .retry(let key):
            retry(key)
        case .setPoolEnabled(let pool, let enabled):
            scheduler.pools.setEnabled(enabled, pool: pool)
            waitingOnPools = nil
        case .shutdown:
            if phase == .running {
                phase = .draining
                schedule(.shutdown, at: now.advanced(by: configuration.gracefulShutdownTimeout))
            }
        case .recordsFailing(let error):
            if recordsFailing == nil {
                recordsFailing = (now, error)
                schedule(.recordsFailing, at: now.advanced(by: configuration.recordFailureTimeout))
            } else {
                recordsFailing!.error = error
            }
        case .recordsWritten:
            recordsFailing = nil
        case .launchWithdrawn(let id, let reason):
            withdraw(id, reason: reason)
        case .shutdownNow:
            switch phase {
            case .running, .draining: stopAll(grace: options.hurriedKillGrace)
            case .stopping:
                // Already asked to stop: now they are killed.
                for id in runners.keys.sorted() { effects.append(.signal(id, .kill)) }
            case .finished: break
            }
        }
        return settle()
    }

    // MARK: The turn

    /// Handles due deadlines, dispatches what can run, ends the run if nothing is left, and hands
    /// back the turn's actions: the record first, then the effects.
    mutating func settle() -> [EngineAction] {
        fireDueDeadlines()
        // A launch whose record cannot be written is not carried out: none is asked for.
        if phase == .running && recordsFailing == nil { dispatch() }
        noteDisabledPools()
        finishIfDone()
        var actions: [EngineAction] = []
        if !transitions.isEmpty { actions.append(.record(transitions)) }
        actions += effects
        transitions = []
        effects = []
        return actions
    }

    mutating func fireDueDeadlines() {
        while let first = deadlines.min, first.at <= now {
            deadlines.removeMin()
            switch first.kind {
            case .lease(let id):
                guard let runner = runners[id], runner.stopReason == nil else { continue }
                if runner.leaseExpiresAt > now {
                    schedule(.lease(id), at: runner.leaseExpiresAt)  // renewed since: look again then
                } else if !runner.checkingLease {
                    runners[id]!.checkingLease = true
                    effects.append(.checkLease(id))
                }
            case .taskTimeout(let id):
                guard let runner = runners[id] else { continue }
                let limit = sets[runner.key.spec]?.spec.tasks[runner.index].timeoutSeconds ?? 0
                stop(id, reason: "timed out after \(limit) s", event: runner)
            case .killGrace(let id):
                if runners[id] != nil { effects.append(.signal(id, .kill)) }
            case .retry(let key):
                guard pendingRetries.remove(key) != nil, let index = sets[key.spec]?.tracker.graph.index(of: key.id),
                    sets[key.spec]!.states[index] == .ready
                else { continue }
                if phase == .running { enqueue(key, index) }
            case .shutdown:
                // The graceful period is over: said (on the first taskset), then the runners stop.
                if phase == .draining, !runners.isEmpty, let spec = sets.keys.min() {
                    record(
                        spec, nil,
                        events: [
                            NewEvent(.dispatcherStopping, payload: [
                                "runners": .int(runners.count), "kill_grace_seconds": .double(options.killGrace.seconds),
                                "explanation": "graceful_shutdown_timeout is over: running runners get SIGTERM, then SIGKILL after the grace",
                            ])
                        ])
                }
                stopAll()
            case .recordsFailing:
                break  // `finishIfDone` looks at how long
            }
        }
    }

    mutating func dispatch() {
        while let assignment = scheduler.nextAssignment() {
            let key = assignment.task.key
            // No copy of the taskset's state is held while its arrays change: each would be copied.
            guard let index = sets[key.spec]?.tracker.graph.index(of: key.id) else {
                scheduler.release(assignment)
                continue
            }
            if let refusal = options.refuseStart?(key) {
                scheduler.release(assignment)
                refuseStart(key, index, refusal)
                continue
            }
            var slot: (number: Int, slot: TaskSlot)?
            if let repoPool = configuration.repoPool {
                // Admission never lets more runners run than there are slots.
                guard let number = freeSlots.popMin() else {
                    scheduler.release(assignment)
                    scheduler.queue.push(assignment.task)
                    break
                }
                let folder = repoPool.slotsDirectory ?? "slots"
                slot = (number, TaskSlot(
                    id: TaskSlot.id(number), path: "\(folder)/\(TaskSlot.id(number))",
                    branch: repoPool.branchTemplate.render(spec: key.spec, task: key.id)))
            }
            let attempt = sets[key.spec]!.attempts[index] + 1
            let waits = limitedAttempts[key].map { "w\($0)" }
            let suffix = [options.runnerIDSuffix, waits].compactMap { $0 }.joined(separator: "-")
            let id = RunnerID(task: key, attempt: attempt, suffix: suffix.isEmpty ? nil : suffix)
            let runner = RunnerState(
                key: key, index: index, assignment: assignment, attempt: attempt, slot: slot, started: now,
                leaseExpiresAt: now.advanced(by: configuration.heartbeatTimeout), reportsOwnLease: ownLease(assignment.pool), leaseNoted: now)
            runners[id] = runner
            var assigned = runnerPayload(id, runner)
            assigned["attempt"] = .int(attempt)
            if let since = queuedSince.removeValue(forKey: key) {
                assigned["wait_seconds"] = .double((since.duration(to: now).seconds * 1000).rounded() / 1000)
            }
            var events = [NewEvent(.taskAssigned, payload: assigned)]
            if !runner.reportsOwnLease { events.append(leaseEvent(.leaseAcquired, id)) }
            change(key, index, to: .running, attempts: attempt, reason: .some(nil), slot: slot?.slot, events: events)
            schedule(.lease(id), at: runner.leaseExpiresAt)
            let task = sets[key.spec]!.spec.tasks[index]
            if let timeout = task.timeoutSeconds {
                schedule(.taskTimeout(id), at: now.advanced(by: .seconds(timeout)))
            }
            let graph = sets[key.spec]!.tracker.graph
            let dependencies = graph.taskDependencies(of: index).map { graph.ids[$0] }
            var request = LaunchRequest(
                runner: id, task: key, spec: task, attempt: attempt, pool: assignment.pool,
                dependencies: dependencies, slot: slot?.slot)
            if let template = configuration.repoPool?.branchTemplate {
                request.dependencyBranches = dependencies.map {
                    DependencyBranch(task: $0, branch: template.render(spec: key.spec, task: $0))
                }
            }
            effects.append(.launch(request))
        }
    }

    /// A task whose turn came and that may not start: failed with the reason, its attempts as
    /// they were; what waits on it is blocked (or goes on, for an optional task).
    mutating func refuseStart(_ key: TaskKey, _ index: Int, _ reason: String) {
        let task = sets[key.spec]!.spec.tasks[index]
        let attempts = sets[key.spec]!.attempts[index]
        queuedSince[key] = nil
        var payload: [String: JSONValue] = [
            "failure_reason": .string(reason), "attempts": .int(attempts), "retry_count": .int(max(0, attempts - 1)), "retryable": false,
            "not_started": true, "explanation": .string("not started: \(reason)"),
        ]
        if task.optional { payload["optional"] = true }
        change(key, index, to: .failed, reason: .some(reason), events: [NewEvent(.taskFailed, payload: payload)])
        if task.optional { releaseDependents(of: key, index) } else { blockDependents(of: key, index) }
    }

    /// When nothing runs and what is queued can only go to disabled pools, says so once (per
    /// taskset, which tasks wait on which pools, and the command that enables them): the run
    /// waits, since a pool can be enabled while it goes on.
    mutating func noteDisabledPools() {
        guard phase == .running, runners.isEmpty, recordsFailing == nil, !scheduler.queue.isEmpty else {
            if !runners.isEmpty { waitingOnPools = nil }
            return
        }
        var waiting: [[String]: [TaskKey]] = [:]
        for task in scheduler.queue.tasks {
            let candidates = scheduler.pools.candidatePools(forSkill: task.skill)
            guard !candidates.isEmpty, candidates.allSatisfy({ scheduler.pools.limits(of: $0)?.enabled == false }) else { continue }
            waiting[candidates.sorted(), default: []].append(task.key)
        }
        for pools in waiting.keys { waiting[pools]!.sort { ($0.spec, $0.id.rawValue) < ($1.spec, $1.id.rawValue) } }
        guard waiting != waitingOnPools else { return }
        waitingOnPools = waiting
        for (pools, keys) in waiting.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            for (spec, tasks) in Dictionary(grouping: keys, by: \.spec).sorted(by: { $0.key < $1.key }) {
                record(
                    spec, nil,
                    events: [
                        NewEvent(.tasksWaitingOnPool, payload: [
                            "pools": .array(pools.map { .string($0) }), "count": .int(tasks.count),
                            "tasks": .array(tasks.prefix(20).map { .string($0.id.rawValue) }),
                            "hint": .string("necro pool enable \(pools[0])"),
                            "explanation": "nothing runs, and these tasks can only go to disabled pools: they wait until one is enabled",
                        ])
                    ])
            }
        }
    }

    mutating func finishIfDone() {
        guard phase != .finished else { return }
        let stopping = phase == .draining || phase == .stopping
        guard runners.isEmpty else { return }
        // While records cannot be written, the run claims nothing: it waits for a write to succeed,
        // and gives up once they have failed for the timeout and nothing runs (unless asked to stop).
        let givingUp = recordsFailing.map { now >= $0.since.advanced(by: configuration.recordFailureTimeout) }
        if givingUp == false && !stopping { return }
        if givingUp == true && !stopping {
            guard options.finishWhenIdle else { return }
        } else if !stopping {
            guard options.finishWhenIdle, pendingRetries.isEmpty, scheduler.queue.isEmpty else { return }
        }
        phase = .finished
        var counts: [TaskState: Int] = [:]
        var failed: [TaskKey] = []
        var stuck: [StuckTask] = []
        var succeeded = true
        for name in sets.keys.sorted() {
            let set = sets[name]!
            let graph = set.tracker.graph
            var setCounts: [TaskState: Int] = [:]
            for index in graph.ids.indices where !graph.isGroup[index] {
                let state = set.states[index]
                setCounts[state, default: 0] += 1
                let key = TaskKey(spec: name, id: graph.ids[index])
                if state == .failed { failed.append(key) }
                if state != .done && !set.spec.tasks[index].optional { succeeded = false }
                if !state.isTerminal && !stopping && recordsFailing == nil {
                    let waiting = set.tracker.waitingOn(index).map { graph.ids[$0] }
                    let reason = set.reasons[index] ?? "waiting on \(waiting.map(\.rawValue).joined(separator: ", "))"
                    stuck.append(StuckTask(task: key, waitingOn: waiting, reason: reason))
                }
            }
            counts.merge(setCounts, uniquingKeysWith: +)
            var summary: [String: JSONValue] = [:]
            for (state, count) in setCounts { summary[state.rawValue] = .int(count) }
            record(
                name, nil,
                events: [
                    NewEvent(.dispatcherStopped, payload: [
                        "interrupted": .bool(stopping), "tasks": .object(summary),
                        "left": .array(
                            graph.ids.indices.filter { !graph.isGroup[$0] && !set.states[$0].isTerminal }
                                .map { .string(graph.ids[$0].rawValue) }),
                    ])
                ])
        }
        effects.append(
            .finished(
                RunOutcome(
                    succeeded: succeeded && !stopping && recordsFailing == nil, interrupted: stopping, counts: counts, failed: failed,
                    stuck: stuck, unrecorded: recordsFailing?.error)
            ))
    }
}
