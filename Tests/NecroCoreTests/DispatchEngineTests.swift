@testable import NecroCore
import NecroTesting
import Synchronization
import Testing

/// Drives the engine as the dispatcher would, keeping what it asked for.
private struct Harness {
    var engine: DispatchEngine<TestInstant>
    var now = TestInstant()
    var launched: [RunnerID] = []
    var requests: [RunnerID: LaunchRequest] = [:]
    var signals: [(RunnerID, RunnerSignal)] = []
    var leaseChecks: [RunnerID] = []
    var events: [(TaskID?, EventType, [String: JSONValue])] = []
    var states: [TaskID: TaskState] = [:]
    var outcome: RunOutcome?
    var maxRunning = 0
    var running: Set<RunnerID> = []

    init(_ configuration: DispatcherConfiguration, killGrace: Duration = .seconds(10), options: DispatchEngine<TestInstant>.Options? = nil) {
        engine = DispatchEngine(configuration: configuration, options: options ?? .init(killGrace: killGrace), now: now)
    }

    /// The actions of the last call.
    @discardableResult
    mutating func take(_ actions: [EngineAction]) -> [EngineAction] {
        for action in actions {
            switch action {
            case .record(let transitions):
                for t in transitions {
                    if let state = t.newState, let task = t.task { states[task] = state }
                    for e in t.events { events.append((t.task, e.type, e.payload)) }
                }
            case .launch(let request):
                launched.append(request.runner)
                requests[request.runner] = request
                running.insert(request.runner)
                maxRunning = max(maxRunning, running.count)
            case .signal(let id, let signal): signals.append((id, signal))
            case .checkLease(let id): leaseChecks.append(id)
            case .finished(let outcome): self.outcome = outcome
            }
        }
        return actions
    }

    mutating func load(_ spec: TaskSetSpec, records: [TaskRecord] = []) {
        take(engine.load(spec, records: records, now: now))
    }

    @discardableResult
    mutating func send(_ input: EngineInput) -> [EngineAction] {
        if case .runnerExited(let id, _) = input { running.remove(id) }
        return take(engine.handle(input, now: now))
    }

    mutating func exit(_ id: RunnerID, _ code: Int32 = 0) { send(.runnerExited(id, .exited(code: code))) }

    mutating func advance(_ seconds: Double) {
        now = now.advanced(by: .milliseconds(Int64(seconds * 1000)))
        send(.tick)
    }

    func runner(_ id: TaskID, attempt: Int = 1, spec: String = "s") -> RunnerID {
        RunnerID(task: TaskKey(spec: spec, id: id), attempt: attempt)
    }

    func eventTypes(_ task: TaskID?) -> [EventType] { events.filter { $0.0 == task }.map(\.1) }
}

private func pool(_ name: String = "local", _ concurrency: Int = 4) -> PoolConfiguration {
    PoolConfiguration(name: name, limits: PoolLimits(name: name, maxConcurrency: concurrency), command: CommandTemplate(["/bin/true"]))
}

private func configuration(
    concurrency: Int = 4, policy: SchedulingPolicy = .priority, attempts: Int = 3, global: Int? = nil
) -> DispatcherConfiguration {
    DispatcherConfiguration(
        schedulingPolicy: policy, maxGlobalConcurrency: global, heartbeatTimeout: .seconds(60),
        retry: RetryPolicy(maxAttempts: attempts, initialDelay: .seconds(1), base: 2, maxDelay: .seconds(30)),
        gracefulShutdownTimeout: .seconds(300), pools: [pool("local", concurrency)])
}

private func spec(_ tasks: [TaskSpec], name: String = "s") -> TaskSetSpec { TaskSetSpec(name: name, tasks: tasks) }
private func task(_ id: TaskID, _ deps: [TaskID] = [], priority: Int = 0) -> TaskSpec {
    TaskSpec(id: id, title: "Task \(id)", dependencies: deps, priority: priority)
}

@Suite struct DispatchEngineTests {
    @Test func aDependentStartsInTheSameTurnItsDependencyFinishes() {
        var h = Harness(configuration())
        h.load(spec([task("a"), task("b", ["a"]), task("c", ["b"])]))
        #expect(h.launched == [h.runner("a")])
        let actions = h.send(.runnerExited(h.runner("a"), .exited(code: 0)))
        // One turn: the record of a's completion and b's start, then b's launch.
        guard case .record(let transitions) = actions.first, case .launch(let request) = actions.last else {
            Issue.record("expected a record then a launch, got \(actions)")
            return
        }
        #expect(request.runner == h.runner("b"))
        #expect(request.dependencies == ["a"])
        #expect(transitions.flatMap(\.events).map(\.type) == [.runnerFinished, .taskCompleted, .taskReady, .taskAssigned, .leaseAcquired])
        h.exit(h.runner("b"))
        h.exit(h.runner("c"))
        #expect(h.launched == [h.runner("a"), h.runner("b"), h.runner("c")])
        #expect(h.outcome?.succeeded == true)
        #expect(h.outcome?.counts[.done] == 3)
        #expect(h.eventTypes(nil) == [.dispatcherStarted, .dispatcherStopped])
    }

    @Test func concurrencyReachesButNeverExceedsThePoolLimit() {
        var h = Harness(configuration(concurrency: 3))
        h.load(spec((0..<10).map { task(TaskID("t\($0)")) }))
        #expect(h.launched.count == 3)
        while let next = h.running.sorted().first { h.exit(next) }
        #expect(h.launched.count == 10)
        #expect(h.maxRunning == 3)
        #expect(h.outcome?.succeeded == true)
    }

    @Test func theGlobalLimitCapsAllPools() {
        var config = configuration(concurrency: 5, global: 2)
        config.pools.append(pool("other", 5))
        var h = Harness(config)
        h.load(spec((0..<6).map { task(TaskID("t\($0)")) }))
        #expect(h.launched.count == 2)
        while let next = h.running.sorted().first { h.exit(next) }
        #expect(h.maxRunning == 2 && h.launched.count == 6)
    }

    @Test func priorityOrdersStarts() {
        var h = Harness(configuration(concurrency: 1))
        h.load(spec([task("low", priority: 1), task("high", priority: 9), task("mid", priority: 5), task("mid2", priority: 5)]))
        while let next = h.running.first { h.exit(next) }
        #expect(h.launched.map { $0.rawValue } == ["s.high.a1", "s.mid.a1", "s.mid2.a1", "s.low.a1"])
    }

    @Test func aPriorityChangeWhileWaitingReordersStarts() {
        var h = Harness(configuration(concurrency: 1))
        h.load(spec([task("first", priority: 9), task("a", priority: 5), task("b", priority: 1)]))
        h.send(.setPriority(TaskKey(spec: "s", id: "b"), 7))
        while let next = h.running.first { h.exit(next) }
        #expect(h.launched.map { $0.rawValue } == ["s.first.a1", "s.b.a1", "s.a.a1"])
        #expect(h.eventTypes("b").contains(.taskPriorityChanged))
    }

    @Test func aTaskFailsTwiceThenSucceedsWithBackoff() {
        var h = Harness(configuration())
        h.load(spec([task("flaky"), task("after", ["flaky"])]))
        h.exit(h.runner("flaky"), 1)
        #expect(h.states["flaky"] == .ready)
        let retry = h.events.last { $0.1 == .taskRetryScheduled }
        #expect(retry?.2["delay_seconds"] == 1.0)
        h.advance(0.9)
        #expect(h.launched.count == 1, "still backing off")
        h.advance(0.1)
        #expect(h.launched.last == h.runner("flaky", attempt: 2))
        h.exit(h.runner("flaky", attempt: 2), 3)
        #expect(h.events.last { $0.1 == .taskRetryScheduled }?.2["delay_seconds"] == 2.0, "1 s, then 2 s")
        h.advance(2)
        h.exit(h.runner("flaky", attempt: 3), 0)
        #expect(h.states["flaky"] == .done)
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "flaky")) == 3)
        #expect(h.launched.last == h.runner("after"))
        let finished = h.events.filter { $0.0 == "flaky" && $0.1 == .runnerFinished }.map { $0.2["failure_reason"] }
        #expect(finished == ["exit code 1", "exit code 3", nil])
    }

    @Test func anAttemptStoppedByAUsageLimitRunsAgainAfterTheResetWithoutCounting() {
        var h = Harness(configuration(attempts: 1))
        h.load(spec([task("agent")]))
        let first = h.runner("agent")
        h.send(.runnerExited(first, .usageLimited(retryAfter: .seconds(90), message: "You've hit your limit")))
        #expect(h.states["agent"] == .ready, "not failed, though one attempt is all it has")
        let retry = try! #require(h.events.last { $0.1 == .taskRetryScheduled }?.2)
        #expect(retry["delay_seconds"] == 90.0 && retry["usage_limit"] == true && retry["attempt_counted"] == false)
        let finished = try! #require(h.events.last { $0.1 == .runnerFinished }?.2)
        #expect(finished["usage_limit"] == true && finished["failure_reason"] == "usage limit: You've hit your limit")
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "agent")) == 0)
        h.advance(89.9)
        #expect(h.launched.count == 1, "waits for the reset")
        h.advance(0.1)
        #expect(h.launched.count == 2)
        // The same attempt again, under an id of its own.
        let second = h.launched[1]
        #expect(h.requests[second]?.attempt == 1 && second != first && second.rawValue.hasPrefix("s.agent.a1"))
        // Without a reset time, a backoff that grows with each limit met; then a real failure counts.
        h.send(.runnerExited(second, .usageLimited(retryAfter: nil, message: "rate limit")))
        #expect(h.events.last { $0.1 == .taskRetryScheduled }?.2["delay_seconds"] == 2.0)
        h.advance(2)
        let third = h.launched[2]
        #expect(third != second && h.requests[third]?.attempt == 1)
        h.exit(third, 1)
        #expect(h.states["agent"] == .failed, "the one attempt it has, spent")
    }

    @Test func aLimitMetOverAndOverEndsUpCountingAndOneMetInAShutdownIsGivenBack() {
        var h = Harness(configuration(attempts: 1))
        h.load(spec([task("quota"), task("other")]))
        for _ in 0..<20 {
            h.send(.runnerExited(h.launched.first { $0.rawValue.hasPrefix("s.quota") && h.running.contains($0) }!, .usageLimited(retryAfter: .seconds(1), message: "quota exceeded")))
            h.advance(1)
        }
        #expect(h.states["quota"] == .running, "twenty limits, each given back")
        h.send(.runnerExited(h.launched.last { $0.rawValue.hasPrefix("s.quota") }!, .usageLimited(retryAfter: .seconds(1), message: "quota exceeded")))
        #expect(h.states["quota"] == .failed, "the twenty-first counts: its one attempt is spent")
        // In a shutdown, a limited attempt is given back for the next run, not counted.
        var s = Harness(configuration(attempts: 1))
        s.load(spec([task("a")]))
        s.send(.shutdown)
        s.send(.runnerExited(s.runner("a"), .usageLimited(retryAfter: .seconds(60), message: "limit")))
        #expect(s.states["a"] == .ready && s.engine.attempts(of: TaskKey(spec: "s", id: "a")) == 0)
    }

    @Test func aTaskRefusedItsStartFailsUncountedAndBlocksWhatWaitsOnIt() {
        let refused = Mutex<Set<TaskID>>([])
        var options = DispatchEngine<TestInstant>.Options()
        options.refuseStart = { key in refused.withLock { $0.contains(key.id) } ? "budget reached" : nil }
        var h = Harness(configuration(attempts: 3), options: options)
        h.load(spec([task("a"), task("b", ["a"]), task("c")]))
        h.exit(h.runner("a"), 1)
        refused.withLock { _ = $0.insert("a") }
        h.advance(1)
        #expect(h.states["a"] == .failed && h.states["b"] == .blocked)
        let failed = try! #require(h.events.last { $0.0 == "a" && $0.1 == .taskFailed }?.2)
        #expect(failed["failure_reason"] == "budget reached" && failed["not_started"] == true && failed["attempts"] == 1)
        #expect(h.launched == [h.runner("a"), h.runner("c")], "no second attempt of a")
    }

    @Test func aTaskThatFailsForGoodBlocksItsDependentsAndFailsTheRun() {
        var h = Harness(configuration(attempts: 2))
        h.load(spec([task("1.2"), task("b", ["1.2"]), task("c", ["b"]), task("free")]))
        h.exit(h.runner("free"))
        h.exit(h.runner("1.2"), 1)
        h.advance(1)
        h.send(.runnerExited(h.runner("1.2", attempt: 2), .launchFailed("command not found: agent")))
        #expect(h.states["1.2"] == .failed)
        #expect(h.events.last { $0.1 == .taskFailed }?.2["retry_count"] == 1, "one retry")
        #expect(h.events.last { $0.1 == .taskFailed }?.2["attempts"] == 2, "two attempts")
        #expect(h.events.last { $0.1 == .taskFailed }?.2["failure_reason"] == "launch failed: command not found: agent")
        #expect(h.states["b"] == .blocked && h.states["c"] == .blocked)
        #expect(h.events.first { $0.0 == "c" && $0.1 == .taskBlocked }?.2["reason"] == "dependency 1.2 failed")
        let outcome = h.outcome
        #expect(outcome?.succeeded == false)
        #expect(outcome?.failed == [TaskKey(spec: "s", id: "1.2")])
        #expect(outcome?.stuck.map(\.reason) == ["dependency 1.2 failed", "dependency 1.2 failed"])
        #expect(outcome?.stuck.map(\.waitingOn) == [["1.2"], ["b"]])
    }

    @Test func anOptionalTaskIsSkippedAndWhatWaitsOnItWaitsForWhatItWaitedFor() {
        var h = Harness(configuration())
        var optional = task("test", ["build"])
        optional.optional = true
        h.load(spec([task("build"), optional, task("ship", ["test"])]))
        #expect(h.launched == [h.runner("build")], "the optional task waits for its turn like any other")
        h.exit(h.runner("build"))
        #expect(h.states["test"] == .skipped)
        #expect(h.eventTypes("test").last == .taskSkipped)
        #expect(h.launched == [h.runner("build"), h.runner("ship")], "what waits on the skipped task runs")
        h.exit(h.runner("ship"))
        #expect(h.outcome?.succeeded == true)
        #expect(h.outcome?.counts[.skipped] == 1 && h.outcome?.counts[.done] == 2)
    }

    @Test func aTasksetThatRunsOptionalTasksRunsThemAndOneThatFailsHoldsNothingUp() {
        var h = Harness(configuration(attempts: 1))
        var optional = task("test", ["build"])
        optional.optional = true
        var set = spec([task("build"), optional, task("ship", ["test"])])
        set.runOptional = true
        h.load(set)
        h.exit(h.runner("build"))
        #expect(h.launched == [h.runner("build"), h.runner("test")])
        h.exit(h.runner("test"), 1)
        #expect(h.states["test"] == .failed)
        #expect(h.events.last { $0.1 == .taskFailed }?.2["optional"] == true)
        #expect(h.launched.last == h.runner("ship"), "an optional failure does not block what waits on it")
        h.exit(h.runner("ship"))
        #expect(h.outcome?.succeeded == true && h.outcome?.failed == [TaskKey(spec: "s", id: "test")])
    }

    @Test func skippedAndOptionalFailedTasksCountAsFinishedWhenATasksetIsLoadedAgain() {
        var h = Harness(configuration())
        var optional = task("test", ["build"])
        optional.optional = true
        var lint = task("lint", ["build"])
        lint.optional = true
        let tasks = [task("build"), optional, lint, task("ship", ["test", "lint"])]
        let records = [
            TaskRecord(spec: "s", task: tasks[0], state: .done, attempts: 1, reason: nil, updatedAt: Timestamp(secondsSince1970: 0)),
            TaskRecord(spec: "s", task: tasks[1], state: .skipped, attempts: 0, reason: nil, updatedAt: Timestamp(secondsSince1970: 0)),
            TaskRecord(spec: "s", task: tasks[2], state: .failed, attempts: 1, reason: "x", updatedAt: Timestamp(secondsSince1970: 0)),
            TaskRecord(spec: "s", task: tasks[3], state: .blocked, attempts: 0, reason: nil, updatedAt: Timestamp(secondsSince1970: 0)),
        ]
        h.load(spec(tasks), records: records)
        #expect(h.launched == [h.runner("ship")])
    }

    @Test func anOptionalFailureDoesNotFailTheRun() {
        var h = Harness(configuration(attempts: 1))
        var optional = task("extra")
        optional.optional = true
        var set = spec([task("main"), optional])
        set.runOptional = true
        h.load(set)
        h.exit(h.runner("main"))
        h.exit(h.runner("extra"), 1)
        #expect(h.outcome?.succeeded == true)
        #expect(h.outcome?.failed == [TaskKey(spec: "s", id: "extra")])
    }

    @Test func aSilentRunnerIsStoppedAfterTheHeartbeatTimeoutThenKilled() {
        var h = Harness(configuration(attempts: 1))
        h.load(spec([task("hung")]))
        let id = h.runner("hung")
        h.advance(50)
        h.send(.heartbeat(id))  // renewed: now due at 110 s
        h.advance(10)
        #expect(h.leaseChecks.isEmpty)
        h.advance(50)
        #expect(h.leaseChecks == [id], "due: the driver looks for a heartbeat left elsewhere")
        h.send(.leaseLost(id))
        #expect(h.signals.map(\.1) == [.terminate])
        #expect(h.events.last { $0.1 == .runnerTimedOut }?.2["reason"] == "no heartbeat for 60 s")
        h.advance(10)
        #expect(h.signals.map(\.1) == [.terminate, .kill], "it ignored SIGTERM")
        h.send(.runnerExited(id, .signalled(9)))
        #expect(h.states["hung"] == .failed)
        #expect(h.events.last { $0.1 == .runnerFinished }?.2["failure_reason"] == "no heartbeat for 60 s")
        #expect(h.events.last { $0.1 == .runnerFinished }?.2["signal"] == 9)
    }

    @Test func aLeaseFoundRenewedElsewhereKeepsTheRunnerAlive() {
        var h = Harness(configuration())
        h.load(spec([task("slow")]))
        let id = h.runner("slow")
        h.advance(60)
        #expect(h.leaseChecks == [id])
        h.send(.heartbeat(id))
        h.advance(59)
        #expect(h.leaseChecks == [id] && h.signals.isEmpty)
        h.advance(1)
        #expect(h.leaseChecks == [id, id])
    }

    @Test func aTaskPastItsTimeoutIsStopped() {
        var h = Harness(configuration(attempts: 1))
        var timed = task("timed")
        timed.timeoutSeconds = 30
        h.load(spec([timed]))
        h.advance(29)
        #expect(h.signals.isEmpty)
        h.advance(1)
        #expect(h.signals.map(\.1) == [.terminate])
        h.send(.runnerExited(h.runner("timed"), .signalled(15)))
        #expect(h.events.last { $0.1 == .taskFailed }?.2["failure_reason"] == "timed out after 30 s")
        #expect(h.signals.count == 1, "it stopped within the grace period: no SIGKILL")
        h.advance(10)
        #expect(h.signals.count == 1)
    }

    @Test func gracefulShutdownWaitsThenStopsAndGivesBackTheAttempt() {
        var h = Harness(configuration(concurrency: 2))
        h.load(spec([task("a"), task("b"), task("c"), task("d", ["a"])]))
        #expect(h.launched.count == 2)
        h.send(.shutdown)
        h.exit(h.runner("a"))
        #expect(h.launched.count == 2, "nothing new starts, not even a's dependent")
        #expect(h.states["a"] == .done && h.states["d"] == .ready)
        h.advance(299)
        #expect(h.signals.isEmpty)
        h.advance(1)
        #expect(h.signals.map(\.0) == [h.runner("b")])
        #expect(h.events.last { $0.1 == .dispatcherStopping }?.2["runners"] == 1, "said when the graceful period is over")
        h.send(.runnerExited(h.runner("b"), .signalled(15)))
        #expect(h.states["b"] == .ready)
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "b")) == 0, "an interrupted attempt is not spent")
        #expect(h.outcome?.interrupted == true && h.outcome?.succeeded == false)
        #expect(h.events.last { $0.1 == .dispatcherStopped }?.2["left"] == ["b", "c", "d"])
    }

    @Test func whileRecordsFailNothingStartsAWithdrawnLaunchGivesItsAttemptBackAndWorkResumesOnceWritten() {
        var h = Harness(configuration(concurrency: 2))
        h.load(spec([task("a"), task("b"), task("c"), task("d")]))
        #expect(h.launched == [h.runner("a"), h.runner("b")])
        // The turn of b's launch could not be recorded: the dispatcher did not start it.
        h.send(.recordsFailing("disk full"))
        h.send(.launchWithdrawn(h.runner("b"), reason: "disk full"))
        h.running.remove(h.runner("b"))
        #expect(h.states["b"] == .ready)
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "b")) == 0, "the withdrawn attempt is given back")
        h.exit(h.runner("a"))
        #expect(h.launched.count == 2, "nothing starts while records fail, though a pool place is free")
        #expect(h.outcome == nil, "nor does the run end: it waits for a write")
        h.send(.recordsWritten)
        #expect(h.launched.count == 4, "work resumes: both free places are taken")
        while let next = h.running.sorted().first { h.exit(next) }
        #expect(h.launched.filter { $0 == h.runner("b", attempt: 1) }.count == 2, "b again, under the same attempt number")
        #expect(h.outcome?.succeeded == true && h.outcome?.unrecorded == nil)
    }

    @Test func aWithdrawnLaunchOfACancelledTaskLeavesItCancelledAndAGivenBackAttemptMeetsNoOldDeadline() {
        var config = configuration(concurrency: 1)
        config.heartbeatTimeout = .seconds(600)
        var h = Harness(config)
        var slow = task("a")
        slow.timeoutSeconds = 10
        h.load(spec([slow, task("b")]))
        #expect(h.launched == [h.runner("a")])
        // a's launch could not be recorded; b is cancelled meanwhile, a's withdrawal comes after.
        h.send(.recordsFailing("disk full"))
        h.send(.cancel(TaskKey(spec: "s", id: "b")))
        h.advance(8)
        h.send(.launchWithdrawn(h.runner("a"), reason: "disk full"))
        h.running.remove(h.runner("a"))
        h.send(.recordsWritten)
        #expect(h.launched == [h.runner("a"), h.runner("a")], "launched again, under the same id")
        h.advance(5)
        #expect(h.signals.isEmpty, "the first launch's 10 s timeout (due at 10 s) does not stop the second, started at 8 s")
        h.advance(13)
        #expect(h.signals.map(\.0) == [h.runner("a")], "its own timeout does")
    }

    @Test func aCancelThatMeetsAWithdrawnLaunchLeavesTheTaskCancelled() {
        var h = Harness(configuration(concurrency: 1))
        h.load(spec([task("a"), task("b", ["a"])]))
        h.send(.recordsFailing("disk full"))
        h.send(.cancel(TaskKey(spec: "s", id: "a")))
        h.send(.launchWithdrawn(h.runner("a"), reason: "disk full"))
        h.running.remove(h.runner("a"))
        #expect(h.states["a"] == .cancelled && h.states["b"] == .blocked)
        h.send(.recordsWritten)
        #expect(h.launched == [h.runner("a")], "not run again")
    }

    @Test func aRunWhoseRecordsKeepFailingGivesUpOnceTheyHaveFailedForTheTimeoutAndNothingRuns() {
        var configuration = configuration(concurrency: 2)
        configuration.recordFailureTimeout = .seconds(30)
        var h = Harness(configuration)
        h.load(spec([task("a"), task("b"), task("c")]))
        h.send(.recordsFailing("disk full"))
        h.advance(20)
        h.exit(h.runner("a"))
        #expect(h.outcome == nil, "b still runs")
        h.exit(h.runner("b"))
        #expect(h.outcome == nil, "records have failed for 20 s only")
        h.advance(9.9)
        #expect(h.outcome == nil)
        h.advance(0.1)
        #expect(h.outcome?.succeeded == false)
        #expect(h.outcome?.unrecorded == "disk full")
        #expect(h.outcome?.stuck.isEmpty == true, "c is not said to be stuck: it was held back")
        #expect(h.launched.count == 2)
    }

    @Test func aDispatcherThatKeepsRunningNeverGivesUpOnRecords() {
        var h = Harness(configuration(concurrency: 1))
        h.engine = DispatchEngine(configuration: configuration(concurrency: 1), options: .init(finishWhenIdle: false), now: h.now)
        h.load(spec([task("a"), task("b")]))
        h.send(.recordsFailing("disk full"))
        h.exit(h.runner("a"))
        h.advance(3600)
        #expect(h.outcome == nil && h.launched.count == 1)
        h.send(.recordsWritten)
        #expect(h.launched.count == 2)
    }

    @Test func tasksThatCanOnlyGoToADisabledPoolAreSaidToWaitOnItOnceAndStartWhenItIsEnabled() {
        var config = configuration(concurrency: 1)
        config.pools[0].limits.enabled = false
        var h = Harness(config)
        h.load(spec([task("a"), task("b")]))
        #expect(h.launched.isEmpty)
        let said = h.events.filter { $0.1 == .tasksWaitingOnPool }
        #expect(said.count == 1)
        #expect(said.first?.2["pools"] == ["local"] && said.first?.2["tasks"] == ["a", "b"] && said.first?.2["hint"] == "necro pool enable local")
        #expect(h.engine.snapshot.waitingOnDisabledPools == [["local"]: [TaskKey(spec: "s", id: "a"), TaskKey(spec: "s", id: "b")]])
        h.advance(60)
        #expect(h.events.filter { $0.1 == .tasksWaitingOnPool }.count == 1, "said once")
        #expect(h.outcome == nil, "the run waits: the pool may be enabled")
        h.send(.setPoolEnabled("local", true))
        #expect(h.launched == [h.runner("a")])
        #expect(h.engine.snapshot.waitingOnDisabledPools.isEmpty)
        h.exit(h.runner("a"))
        h.exit(h.runner("b"))
        #expect(h.outcome?.succeeded == true)
    }

    @Test func shutdownNowStopsAtOnce() {
        var h = Harness(configuration(concurrency: 2))
        h.load(spec([task("a"), task("b")]))
        h.send(.shutdown)
        h.send(.shutdownNow)
        #expect(Set(h.signals.map(\.0)) == [h.runner("a"), h.runner("b")])
        h.send(.runnerExited(h.runner("a"), .signalled(15)))
        h.send(.runnerExited(h.runner("b"), .exited(code: 0)))
        #expect(h.states["a"] == .ready && h.states["b"] == .done, "b finished on its own before the signal landed")
        #expect(h.outcome?.interrupted == true)
    }

    @Test func aSecondSignalKillsAfterAShortGraceAndAThirdAtOnce() {
        var h = Harness(configuration(concurrency: 2))
        h.load(spec([task("a"), task("b")]))
        h.send(.shutdown)
        h.send(.shutdownNow)
        #expect(h.signals.map(\.1) == [.terminate, .terminate])
        h.advance(1)
        #expect(h.signals.map(\.1) == [.terminate, .terminate, .kill, .kill], "a second Ctrl-C does not wait the ten seconds again")

        // Past the graceful wait, runners got SIGTERM with the long grace: asked again, they die now.
        var g = Harness(configuration(concurrency: 1))
        g.load(spec([task("a")]))
        g.send(.shutdown)
        g.advance(300)
        #expect(g.signals.map(\.1) == [.terminate])
        g.send(.shutdownNow)
        #expect(g.signals.map(\.1) == [.terminate, .kill])
    }

    @Test func tasksLeftRunningByADeadDispatcherAreRequeued() {
        var h = Harness(configuration())
        let tasks = [task("done"), task("was-running", ["done"]), task("next", ["was-running"])]
        let now = Timestamp(secondsSince1970: 0)
        let records = [
            TaskRecord(spec: "s", task: tasks[0], state: .done, attempts: 1, reason: nil, updatedAt: now),
            TaskRecord(spec: "s", task: tasks[1], state: .running, attempts: 2, reason: nil, updatedAt: now),
            TaskRecord(spec: "s", task: tasks[2], state: .blocked, attempts: 0, reason: nil, updatedAt: now),
        ]
        h.load(spec(tasks), records: records)
        #expect(h.eventTypes(nil).contains(.recoveryDetected))
        #expect(h.eventTypes("was-running") == [.recoveryRequeued, .taskReady, .taskAssigned, .leaseAcquired])
        #expect(h.launched == [h.runner("was-running", attempt: 2)], "attempt 2 again: the interrupted one is given back")
    }

    @Test func aGroupIsDoneWithItsLastTaskAndReleasesWhatWaitsOnIt() {
        var h = Harness(configuration())
        h.load(
            spec([
                TaskSpec(id: "1", title: "G", isGroup: true), TaskSpec(id: "1.1", title: "A", parent: "1"),
                TaskSpec(id: "1.2", title: "B", dependencies: ["1.1"], parent: "1"), task("2", ["1"]),
            ]))
        h.exit(h.runner("1.1"))
        #expect(h.states["1"] != .done)
        h.exit(h.runner("1.2"))
        #expect(h.states["1"] == .done)
        #expect(h.launched.last == h.runner("2"))
    }

    @Test func aTaskNoPoolCanTakeIsReportedNotLeftWaiting() {
        var config = configuration()
        config.skillMapping = ["backend": ["local"]]
        var h = Harness(config)
        var ml = task("train")
        ml.requiredSkill = "ml"
        var huge = task("huge")
        huge.resources = TaskResources(cpu: 64)
        h.pools(cpuQuota: 8)
        h.load(spec([ml, huge]))
        #expect(h.launched.isEmpty)
        #expect(h.outcome?.stuck.map(\.reason).first == "no pool serves skill ml and there is no default pool")
        #expect(h.outcome?.stuck.count == 2)
        #expect(h.outcome?.succeeded == false)
    }

    @Test func aSkillNoPoolServesIsWarnedAndGoesToTheDefaultPool() {
        var config = configuration(attempts: 1)
        config.pools.append(pool("gpu", 1))
        config.skillMapping = ["ml": ["gpu"], "default": ["local"]]
        var h = Harness(config)
        var design = task("design")
        design.requiredSkill = "ux"
        var train = task("train")
        train.requiredSkill = "ml"
        var review = task("review")
        review.requiredSkill = "ux"
        h.load(spec([design, train, review]))
        #expect(h.events.filter { $0.1 == .taskSkillUnmapped }.count == 1, "said once per skill")
        #expect(h.eventTypes("design").contains(.taskSkillUnmapped))
        #expect(h.events.first { $0.1 == .taskSkillUnmapped }?.2["pools"] == ["local"])
        #expect(!h.eventTypes("train").contains(.taskSkillUnmapped), "ml has a pool")
        #expect(h.launched.count == 3, "all run: design and review on the default pool")
        #expect(h.events.first { $0.0 == "design" && $0.1 == .taskAssigned }?.2["pool_name"] == "local")
        #expect(h.events.first { $0.0 == "train" && $0.1 == .taskAssigned }?.2["pool_name"] == "gpu")
    }

    @Test func cancelAndRetry() {
        var h = Harness(configuration(attempts: 1))
        h.load(spec([task("a"), task("b", ["a"])]))
        h.send(.cancel(TaskKey(spec: "s", id: "a")))
        #expect(h.signals.map(\.1) == [.terminate])
        h.send(.runnerExited(h.runner("a"), .signalled(15)))
        #expect(h.states["a"] == .cancelled && h.states["b"] == .blocked)
        #expect(h.outcome?.succeeded == false)
    }

    @Test func aCancelledQueuedTaskLeavesNoRecordOfItsWaitBehind() {
        var config = configuration(attempts: 1)
        config.pools = [pool("local", 1)]
        var h = Harness(config)
        h.load(spec([task("a"), task("b"), task("c")]))
        let running = Set(h.requests.values.map(\.task.id.rawValue))
        let queued = ["a", "b", "c"].filter { !running.contains($0) }
        #expect(running.count == 1 && queued.count == 2, "one runs, two wait in the queue")
        #expect(Set(h.engine.queuedSince.keys.map(\.id.rawValue)) == Set(queued))
        for id in queued { h.send(.cancel(TaskKey(spec: "s", id: TaskID(id)))) }
        #expect(queued.allSatisfy { h.states[TaskID($0)] == .cancelled })
        #expect(h.engine.scheduler.queue.count == 0)
        #expect(h.engine.queuedSince.isEmpty, "\(h.engine.queuedSince)")
    }

    @Test func retryPutsAFailedTaskBackWithFreshAttempts() {
        var config = configuration(attempts: 1)
        config.pools = [pool("local", 1)]
        var h = Harness(config)
        h.engine = DispatchEngine(configuration: config, options: .init(finishWhenIdle: false), now: h.now)
        h.load(spec([task("a"), task("b", ["a"])]))
        h.exit(h.runner("a"), 1)
        #expect(h.states["a"] == .failed && h.states["b"] == .blocked)
        h.send(.retry(TaskKey(spec: "s", id: "a")))
        #expect(h.launched.last == h.runner("a"), "attempts start again from 1")
        h.exit(h.runner("a"))
        #expect(h.launched.last == h.runner("b"))
    }
}

extension Harness {
    /// Rebuilds the engine with a CPU quota on the pool.
    fileprivate mutating func pools(cpuQuota: Double) {
        var config = engine.configuration
        config.pools = config.pools.map {
            var pool = $0
            pool.limits.cpuQuota = cpuQuota
            return pool
        }
        engine = DispatchEngine(configuration: config, options: engine.options, now: now)
    }
}

@Suite struct RepoPoolEngineTests {
    private func withRepoPool(slots: Int?, concurrency: Int = 4, global: Int? = nil) -> DispatcherConfiguration {
        var c = configuration(concurrency: concurrency, global: global)
        c.repoPool = RepoPoolConfiguration(repository: "/repo", slotsDirectory: "/slots", maxSlots: slots)
        return c
    }

    @Test func runnersNeverOutnumberTheSlotsAndEachRunningOneHasASlotOfItsOwn() {
        var h = Harness(withRepoPool(slots: 2, concurrency: 4))
        h.load(spec((0..<6).map { task(TaskID("t\($0)")) }))
        #expect(h.launched.count == 2)
        let slots = h.launched.compactMap { h.requests[$0]?.slot }
        #expect(slots.map(\.id) == ["slot-1", "slot-2"])
        #expect(slots.map(\.path) == ["/slots/slot-1", "/slots/slot-2"])
        #expect(slots.map(\.branch) == ["necro/s/t0", "necro/s/t1"])
        // A freed slot goes to the next task.
        h.exit(h.runner("t0"))
        #expect(h.requests[h.runner("t2")]?.slot?.id == "slot-1")
        while let next = h.running.sorted().first { h.exit(next) }
        #expect(h.maxRunning == 2 && h.outcome?.succeeded == true)
        // TaskAssigned names the slot, its path and the branch.
        let assigned = h.events.first { $0.0 == "t2" && $0.1 == .taskAssigned }?.2
        #expect(assigned?["slot_id"] == "slot-1" && assigned?["slot_path"] == "/slots/slot-1" && assigned?["branch"] == "necro/s/t2")
    }

    @Test func withoutMaxSlotsTheGlobalConcurrencyOrThePoolsDecide() {
        #expect(withRepoPool(slots: nil, concurrency: 4, global: 3).slotCount == 3)
        #expect(withRepoPool(slots: nil, concurrency: 4).slotCount == 4)
        #expect(withRepoPool(slots: 7, concurrency: 4, global: 3).slotCount == 7)
        #expect(configuration().slotCount == nil)
    }

    @Test func aDependentIsToldTheBranchesToMergeWithGroupsExpandedToTheirTasks() {
        var group = task("g")
        group.isGroup = true
        var g1 = task("g.1")
        g1.parent = "g"
        var g2 = task("g.2")
        g2.parent = "g"
        var h = Harness(withRepoPool(slots: 4))
        h.load(spec([task("a"), group, g1, g2, task("z", ["a", "g"])]))
        for id in ["a", "g.1", "g.2"] as [TaskID] { h.exit(h.runner(id)) }
        let request = h.requests[h.runner("z")]
        #expect(request?.dependencies == ["a", "g.1", "g.2"])
        #expect(request?.dependencyBranches.map(\.branch) == ["necro/s/a", "necro/s/g.1", "necro/s/g.2"])
    }

    @Test func aMergeConflictFailsTheTaskAtOnceAndBlocksItsDependents() {
        var h = Harness(withRepoPool(slots: 2))
        h.load(spec([task("x"), task("y", ["x"]), task("after", ["y"])]))
        h.exit(h.runner("x"))
        h.send(.runnerExited(h.runner("y"), .mergeConflict(dependency: "x", files: ["a.txt", "b.txt"])))
        #expect(h.states["y"] == .failed, "attempts were left, but a conflict is not retried")
        #expect(h.states["after"] == .blocked)
        let conflict = h.events.first { $0.1 == .slotMergeConflict }
        #expect(conflict?.0 == "y" && conflict?.2["files"] == .array(["a.txt", "b.txt"]) && conflict?.2["dependency"] == "x")
        let failed = h.events.first { $0.1 == .taskFailed }?.2
        #expect(failed?["failure_reason"] == "merge conflict with x (files: a.txt, b.txt)")
        #expect(h.launched.count == 2)
        #expect(h.outcome?.succeeded == false)
    }

    @Test func whatTheRepoPoolDidIsRecordedOnTheRunnersTask() {
        var h = Harness(withRepoPool(slots: 1))
        h.load(spec([task("a")]))
        let id = h.runner("a")
        h.send(.slot(id, .prepared(created: true, merged: [], head: "abc")))
        h.send(.slot(id, .workCommitted(commit: "def", message: "necro: task a Task a")))
        h.send(.slot(id, .released))
        h.exit(id)
        #expect(h.eventTypes("a") == [.taskReady, .taskAssigned, .leaseAcquired, .slotAllocated, .taskWorkCommitted, .slotReleased, .runnerFinished, .taskCompleted])
        #expect(h.events.first { $0.1 == .taskWorkCommitted }?.2["commit"] == "def")
    }
}

@Suite struct AdoptionTests {
    private func record(_ id: TaskID, _ state: TaskState, attempts: Int = 0) -> TaskRecord {
        TaskRecord(spec: "s", task: task(id), state: state, attempts: attempts, reason: nil, updatedAt: Timestamp(secondsSince1970: 0))
    }

    @Test func anAdoptedRunnerKeepsItsTaskRunningHoldsItsPoolAndItsExitCountsAsIfStartedHere() {
        var h = Harness(configuration(concurrency: 1))
        let adopted = RunnerRecord(
            id: RunnerID("s.a.a1-old1"), task: TaskKey(spec: "s", id: "a"), attempt: 1, pool: "local", pid: 4242, processStartTime: 7,
            startedAt: Timestamp(secondsSince1970: 0))
        h.take(h.engine.load(
            spec([task("a"), task("b"), task("c", ["a"])]), records: [record("a", .running, attempts: 1), record("b", .ready), record("c", .blocked)],
            recovered: RecoveredRunners(adopted: [adopted]), now: h.now))
        #expect(h.launched.isEmpty, "a is not run again, and it holds the pool's only place: b waits")
        #expect(h.eventTypes("a") == [.runnerAdopted])
        #expect(!h.eventTypes("a").contains(.recoveryRequeued))
        h.send(.runnerExited(adopted.id, .exited(code: 0)))
        #expect(h.states["a"] == .done)
        #expect(h.launched == [h.runner("b")], "its place goes to b; c is ready too and waits for a place")
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "a")) == 1)
    }

    @Test func anAdoptedRunnerThatFallsSilentIsStoppedAfterItsLease() {
        var h = Harness(configuration())
        let adopted = RunnerRecord(
            id: RunnerID("s.a.a1-old1"), task: TaskKey(spec: "s", id: "a"), attempt: 1, pool: "local", pid: 4242, processStartTime: 7,
            startedAt: Timestamp(secondsSince1970: 0))
        h.take(h.engine.load(spec([task("a")]), records: [record("a", .running, attempts: 1)], recovered: RecoveredRunners(adopted: [adopted]), now: h.now))
        h.advance(60)
        #expect(h.leaseChecks == [adopted.id])
        h.send(.leaseLost(adopted.id))
        #expect(h.signals.map(\.0) == [adopted.id])
    }

    private func previous(_ id: TaskID, attempt: Int = 1) -> RunnerRecord {
        RunnerRecord(
            id: RunnerID("s.\(id).a\(attempt)-old1"), task: TaskKey(spec: "s", id: id), attempt: attempt, pool: "local",
            startedAt: Timestamp(secondsSince1970: 0))
    }

    @Test func runnersThatEndedWhileNoDispatcherRanCountByTheStatusTheirSupervisorsRecorded() {
        var h = Harness(configuration(concurrency: 4, attempts: 2))
        let tasks = [task("ok"), task("failed"), task("last"), task("unknown"), task("after", ["ok"])]
        let records = [
            record("ok", .running, attempts: 1), record("failed", .running, attempts: 1), record("last", .running, attempts: 2),
            record("unknown", .running, attempts: 1), record("after", .blocked),
        ]
        let ended = [
            EndedRunner(runner: previous("ok"), exit: .exited(code: 0)),
            EndedRunner(runner: previous("failed"), exit: .exited(code: 3)),
            EndedRunner(runner: previous("last", attempt: 2), exit: .signalled(9)),
            EndedRunner(runner: previous("unknown"), exit: nil),
        ]
        h.take(h.engine.load(spec(tasks), records: records, recovered: RecoveredRunners(ended: ended), now: h.now))
        // Done, and not run again; its dependent starts.
        #expect(h.states["ok"] == .done)
        #expect(h.eventTypes("ok") == [.runnerFinished, .taskCompleted])
        #expect(h.events.first { $0.0 == "ok" && $0.1 == .taskCompleted }?.2["recovered"] == true)
        #expect(h.launched.contains(h.runner("after")))
        // A failed attempt counts as one: retried after its backoff, as if seen here.
        #expect(h.eventTypes("failed") == [.runnerFinished, .taskRetryScheduled])
        #expect(h.events.first { $0.0 == "failed" && $0.1 == .runnerFinished }?.2["failure_reason"] == "exit code 3")
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "failed")) == 1)
        // Its last attempt: failed for good.
        #expect(h.states["last"] == .failed)
        // Nothing recorded: requeued, the attempt given back.
        #expect(h.eventTypes("unknown") == [.recoveryRequeued, .taskReady, .taskAssigned, .leaseAcquired])
        #expect(h.engine.attempts(of: TaskKey(spec: "s", id: "unknown")) == 1)
    }
}

@Suite struct BranchTemplateTests {
    @Test func aTemplateMustNameOneValidBranchPerTask() {
        #expect((try? BranchTemplate.parse("necro/{spec}/{task.id}").get())?.render(spec: "app", task: "1.2") == "necro/app/1.2")
        func problem(_ text: String) -> String? {
            if case .failure(let error) = BranchTemplate.parse(text) { return error.message }
            return nil
        }
        #expect(problem("necro/{spec}") == "must contain {task.id}, or every task would share one branch")
        #expect(problem("necro/{task.title}/{task.id}") == "unknown placeholder {task.title} (known: {spec}, {task.id})")
        #expect(problem("necro//{task.id}")?.hasSuffix("which git refuses: it contains //") == true)
        #expect(problem("necro {task.id}")?.hasSuffix("it contains ' '") == true)
        #expect(problem("-x/{task.id}")?.hasSuffix("it starts with -") == true)
    }

    @Test func refNamesFollowGitsRules() {
        for good in ["necro/app/1.2", "a", "feature/x-y_z"] { #expect(RefName.problem(good) == nil, "\(good)") }
        for bad in ["", "@", "a..b", "a/.hidden", "x.lock", "a/b.lock/c", "end.", "a@{b", "tab\tname", "q?", "star*", "br[", "back\\slash", "/lead", "trail/", "co:lon", "ti~lde", "car^et"] {
            #expect(RefName.problem(bad) != nil, "\(bad)")
        }
        for text in ["a b", "..", ".x", "x.lock", "a/b", "-q", "", "ok"] {
            #expect(RefName.problem("refs/x/\(RefName.component(text))/1") == nil, "\(text) -> \(RefName.component(text))")
        }
    }

    @Test func aSpecWhoseTasksWouldGetBadOrClashingBranchesIsNamedTaskByTask() {
        var repoPool = RepoPoolConfiguration(repository: "/r")
        #expect(repoPool.branchProblems(in: spec([task("1"), task("1.1")])).isEmpty)
        #expect(repoPool.branchProblems(in: spec([task("x.lock")])) == ["task x.lock would get branch necro/s/x.lock, which git refuses: a part ends with .lock"])
        repoPool.branchTemplate = (try? BranchTemplate.parse("t-{task.id}").get())!
        // Git keeps refs as files: t-a and t-a/b cannot both exist.
        #expect(repoPool.branchProblems(in: spec([task("a/b"), task("a"), task("b")])) == [
            "tasks a and a/b would get branches t-a and t-a/b, which git cannot hold together (one is a folder of the other)"
        ])
    }
}

@Suite struct LeaseEventTests {
    /// A plain agent's lease is the dispatcher's: acquired at assignment, renewed on any sign of
    /// life, at most once a third of the heartbeat timeout; none once the runner says it is
    /// `necro runner` (`runner_spawn`), and none for a pool that runs it.
    @Test func theDispatcherRecordsLeaseEventsOnlyForRunnersThatDoNotReportTheirOwn() {
        var c = configuration()
        c.heartbeatTimeout = .seconds(30)
        var h = Harness(c)
        h.load(spec([task("a")]))
        let a = h.runner("a")
        #expect(h.eventTypes("a") == [.taskReady, .taskAssigned, .leaseAcquired])
        let acquired = h.events.first { $0.1 == .leaseAcquired }!.2
        #expect(acquired["lease_holder"] == .string(a.rawValue) && acquired["lease_duration_seconds"] == .double(30))
        // Heartbeats every 4 s for 24 s: renewals recorded at 12 and 24 s (a third of 30 s apart).
        for _ in 0..<6 {
            h.now = h.now.advanced(by: .seconds(4))
            h.send(.heartbeat(a))
        }
        #expect(h.eventTypes("a").filter { $0 == .leaseRenewed }.count == 2)
        // From runner_spawn on, the runner reports its own.
        h.send(.runnerReported(a, [NewEvent(.runnerSpawn)]))
        h.now = h.now.advanced(by: .seconds(20))
        h.send(.heartbeat(a))
        #expect(h.eventTypes("a").filter { $0 == .leaseRenewed }.count == 2)

        var wrapped = configuration()
        wrapped.pools[0].command = CommandTemplate(["/usr/local/bin/necro", "runner", "--", "agent"])
        var w = Harness(wrapped)
        w.load(spec([task("b")]))
        w.now = w.now.advanced(by: .seconds(30))
        w.send(.heartbeat(w.runner("b")))
        #expect(w.eventTypes("b") == [.taskReady, .taskAssigned])
    }

    /// A task that cannot run as configured fails at once: another attempt would meet the same
    /// configuration.
    @Test func aRefusedLaunchIsNotRetried() {
        var h = Harness(configuration(attempts: 3))
        h.load(spec([task("a"), task("b", ["a"])]))
        h.send(.runnerExited(h.runner("a"), .refused("no agent")))
        #expect(h.states["a"] == .failed && h.states["b"] == .blocked)
        #expect(h.launched == [h.runner("a")])
        let failed = h.events.first { $0.1 == .taskFailed }!.2
        #expect(failed["retryable"] == false && failed["failure_reason"] == "no agent")
    }

    /// A gate's failure is the attempt's, named, with its output kept for the next attempt.
    @Test func aGateFailureIsRetriedAndRecordedWithTheGate() {
        var h = Harness(configuration(attempts: 2))
        h.load(spec([task("a")]))
        h.send(.runnerExited(h.runner("a"), .gateFailed(GateFailure(gate: "swift test", exitCode: 1, ending: "exit code 1", outputTail: "1 failure\n"))))
        let finished = h.events.first { $0.1 == .runnerFinished }!.2
        #expect(finished["gate"] == "swift test" && finished["gate_exit_code"] == 1 && finished["gate_output_tail"] == "1 failure\n")
        #expect(finished["failure_reason"] == "gate `swift test` failed: exit code 1" && finished["success"] == false)
        #expect(h.eventTypes("a").contains(.taskRetryScheduled))
    }
}
