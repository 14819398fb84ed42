import NecroCore
import NecroTesting
import Testing

private func queued(_ spec: String, _ id: TaskID, skill: String? = nil, priority: Int = 0, cpu: Double? = nil) -> QueuedTask {
    QueuedTask(key: TaskKey(spec: spec, id: id), skill: skill, priority: priority, resources: TaskResources(cpu: cpu))
}

private func drain(_ queue: inout ReadyQueue) -> [String] {
    var order: [String] = []
    while let next = queue.popNext() { order.append(next.key.id.rawValue) }
    return order
}

@Suite struct ReadyQueueTests {
    @Test func fifoKeepsReadyOrderWhateverThePriority() {
        var queue = ReadyQueue(policy: .fifo)
        for (id, priority) in [("a", 1), ("b", 9), ("c", 5), ("d", 9)] { queue.push(queued("s", TaskID(id), priority: priority)) }
        #expect(drain(&queue) == ["a", "b", "c", "d"])
    }

    @Test func priorityTakesHigherFirstAndFifoAmongEquals() {
        var queue = ReadyQueue(policy: .priority)
        for (id, priority) in [("a", 1), ("b", 9), ("c", 5), ("d", 9), ("e", 1), ("f", 5)] {
            queue.push(queued("s", TaskID(id), priority: priority))
        }
        #expect(drain(&queue) == ["b", "d", "c", "f", "a", "e"])
    }

    @Test func priorityAcrossSkillsIsStillGlobal() {
        var queue = ReadyQueue(policy: .priority)
        queue.push(queued("s", "low", skill: "backend", priority: 1))
        queue.push(queued("s", "high", skill: "frontend", priority: 8))
        queue.push(queued("s", "mid", skill: "backend", priority: 5))
        #expect(drain(&queue) == ["high", "mid", "low"])
    }

    @Test func changingPriorityWhileWaitingMovesTheTask() {
        var queue = ReadyQueue(policy: .priority)
        for id in ["a", "b", "c", "d"] { queue.push(queued("s", TaskID(id), priority: 5)) }
        let raised = queue.setPriority(10, for: TaskKey(spec: "s", id: "c"))
        let lowered = queue.setPriority(1, for: TaskKey(spec: "s", id: "a"))
        let unknown = queue.setPriority(3, for: TaskKey(spec: "s", id: "zz"))
        #expect(raised && lowered && !unknown)
        #expect(queue.task(TaskKey(spec: "s", id: "c"))?.priority == 10)
        #expect(drain(&queue) == ["c", "b", "d", "a"])
    }

    @Test func raisingThenLoweringAgainRestoresFifoPlace() {
        var queue = ReadyQueue(policy: .priority)
        for id in ["a", "b", "c"] { queue.push(queued("s", TaskID(id), priority: 5)) }
        queue.setPriority(9, for: TaskKey(spec: "s", id: "c"))
        queue.setPriority(5, for: TaskKey(spec: "s", id: "c"))
        #expect(drain(&queue) == ["a", "b", "c"])
    }

    @Test func removedTaskNeverComesOutAndCanBeQueuedAgain() {
        var queue = ReadyQueue(policy: .priority)
        for id in ["a", "b", "c"] { queue.push(queued("s", TaskID(id), priority: 5)) }
        let removed = queue.remove(TaskKey(spec: "s", id: "a"))
        #expect(removed?.key.id == "a")
        #expect(queue.count == 2)
        queue.push(queued("s", "a", priority: 5))  // back, now last among equals
        #expect(drain(&queue) == ["b", "c", "a"])
        #expect(queue.isEmpty)
    }

    @Test func pushingAQueuedTaskAgainKeepsOneCopy() {
        var queue = ReadyQueue(policy: .fifo)
        queue.push(queued("s", "a"))
        queue.push(queued("s", "a"))
        #expect(drain(&queue) == ["a"])
    }

    @Test func aHeadThatCannotBePlacedDoesNotHoldBackOtherSkills() {
        var queue = ReadyQueue(policy: .priority)
        queue.push(queued("s", "gpu-job", skill: "ml", priority: 9))
        queue.push(queued("s", "web", skill: "frontend", priority: 1))
        let next = queue.popNext(placing: { $0.skill == "ml" ? nil : "web-pool" })
        #expect(next?.task.key.id == "web")
        #expect(next?.placement == "web-pool")
        #expect(queue.count == 1)
    }

    @Test func fairShareAlternatesBetweenABigAndASmallTaskset() {
        var queue = ReadyQueue(policy: .fairShare)
        for i in 0..<1000 { queue.push(queued("big", TaskID("b\(i)"))) }
        for i in 0..<10 { queue.push(queued("small", TaskID("s\(i)"))) }
        var specs: [String] = []
        for _ in 0..<20 { specs.append(queue.popNext()!.key.spec) }
        #expect(specs == Array(repeating: ["big", "small"], count: 10).flatMap { $0 })
        // Once the small one is done, the big one has the dispatcher to itself.
        #expect(queue.popNext()?.key.spec == "big")
        #expect(queue.count == 989)
    }

    @Test func fairShareFollowsWeights() {
        var queue = ReadyQueue(policy: .fairShare, weights: ["heavy": 3, "light": 1])
        for i in 0..<500 { queue.push(queued("heavy", TaskID("h\(i)"))) }
        for i in 0..<500 { queue.push(queued("light", TaskID("l\(i)"))) }
        var counts: [String: Int] = [:]
        for _ in 0..<400 { counts[queue.popNext()!.key.spec, default: 0] += 1 }
        #expect(counts["heavy"] == 300)
        #expect(counts["light"] == 100)
    }

    @Test func fairShareGivesALateTasksetNoBackCredit() {
        var queue = ReadyQueue(policy: .fairShare)
        for i in 0..<100 { queue.push(queued("early", TaskID("e\(i)"))) }
        for _ in 0..<50 { _ = queue.popNext() }
        for i in 0..<100 { queue.push(queued("late", TaskID("l\(i)"))) }
        var specs: [String] = []
        for _ in 0..<10 { specs.append(queue.popNext()!.key.spec) }
        // Turns, not fifty "late" tasks in a row to make up for the time it was absent.
        #expect(specs.filter { $0 == "late" }.count == 5)
    }

    @Test func fairSharePrefersPriorityWithinATaskset() {
        var queue = ReadyQueue(policy: .fairShare)
        queue.push(queued("a", "a-low", priority: 1))
        queue.push(queued("a", "a-high", priority: 9))
        queue.push(queued("b", "b-only"))
        #expect(drain(&queue) == ["a-high", "b-only", "a-low"])
    }
}

@Suite struct PoolAdmissionTests {
    @Test func concurrencyQuotasAndGlobalLimitAreNeverExceeded() {
        var pools = PoolAdmission(
            pools: [PoolLimits(name: "local", maxConcurrency: 3, cpuQuota: 4, memoryQuotaMB: 4096)], maxGlobalConcurrency: 10)
        let two = TaskResources(cpu: 2, memoryMB: 1000)
        #expect(pools.canAdmit(two, to: "local"))
        pools.admit(two, to: "local")
        pools.admit(two, to: "local")
        #expect(!pools.canAdmit(TaskResources(cpu: 0.5), to: "local"), "4 of 4 CPUs in use")
        pools.release(two, from: "local")
        #expect(pools.canAdmit(TaskResources(cpu: 1, memoryMB: 3000), to: "local"))
        #expect(!pools.canAdmit(TaskResources(cpu: 1, memoryMB: 3100), to: "local"), "memory quota")
        pools.admit(TaskResources(cpu: 0.5, memoryMB: 10), to: "local")
        pools.admit(TaskResources(cpu: 0.5, memoryMB: 10), to: "local")
        #expect(!pools.canAdmit(TaskResources(cpu: 0.1, memoryMB: 1), to: "local"), "3 running of 3")
        pools.maxGlobalConcurrency = 3
        pools.release(TaskResources(cpu: 0.5, memoryMB: 10), from: "local")
        #expect(pools.canAdmit(.unspecified, to: "local"))
        pools.setEnabled(false, pool: "local")
        #expect(!pools.canAdmit(.unspecified, to: "local"), "a disabled pool takes nothing")
    }

    @Test func unspecifiedResourcesCountAsThePoolDefault() {
        var pools = PoolAdmission(pools: [
            PoolLimits(name: "p", maxConcurrency: 10, cpuQuota: 2, defaultResources: TaskResources(cpu: 1, memoryMB: 0))
        ])
        pools.admit(.unspecified, to: "p")
        pools.admit(.unspecified, to: "p")
        #expect(!pools.canAdmit(.unspecified, to: "p"))
    }

    @Test func skillsRouteToTheirPoolsAndTheRestToDefault() {
        let pools = PoolAdmission(
            pools: [PoolLimits(name: "local", maxConcurrency: 1), PoolLimits(name: "docker", maxConcurrency: 1)],
            skillMapping: ["backend": ["docker"], "default": ["local"]])
        #expect(pools.candidatePools(forSkill: "backend") == ["docker"])
        #expect(pools.candidatePools(forSkill: "frontend") == ["local"])
        #expect(pools.candidatePools(forSkill: nil) == ["local"])
        let unrouted = PoolAdmission(pools: [PoolLimits(name: "p", maxConcurrency: 1)], skillMapping: ["backend": ["p"]])
        #expect(unrouted.placementProblem(for: queued("s", "x", skill: "ml")) == .noPoolForSkill("ml"))
        #expect(PoolAdmission(pools: [PoolLimits(name: "p", maxConcurrency: 1)]).candidatePools(forSkill: "any") == ["p"])
    }

    @Test func aTaskTooBigForEveryPoolIsAProblemNotAWait() {
        let pools = PoolAdmission(pools: [
            PoolLimits(name: "small", maxConcurrency: 4, cpuQuota: 2), PoolLimits(name: "big", maxConcurrency: 4, cpuQuota: 8),
        ])
        #expect(pools.placementProblem(for: queued("s", "ok", cpu: 6)) == nil)
        #expect(pools.placementProblem(for: queued("s", "huge", cpu: 16)) == .exceedsEveryPool(TaskResources(cpu: 16)))
    }

    @Test func leastLoadedPoolIsChosen() {
        var pools = PoolAdmission(
            pools: [PoolLimits(name: "a", maxConcurrency: 2), PoolLimits(name: "b", maxConcurrency: 4)],
            skillMapping: ["backend": ["a", "b"]])
        let task = queued("s", "t", skill: "backend")
        #expect(pools.choosePool(for: task, by: .leastLoaded) == "a")
        pools.admit(.unspecified, to: "a")  // a: 1/2, b: 0/4
        #expect(pools.choosePool(for: task, by: .leastLoaded) == "b")
        pools.admit(.unspecified, to: "b")  // a: 1/2, b: 1/4
        #expect(pools.choosePool(for: task, by: .leastLoaded) == "b")
    }
}

@Suite struct SchedulerTests {
    private func pools() -> PoolAdmission {
        PoolAdmission(
            pools: [PoolLimits(name: "general", maxConcurrency: 4), PoolLimits(name: "gpu", maxConcurrency: 1)],
            skillMapping: ["ml": ["general", "gpu"], "backend": ["general"], "default": ["general"]])
    }

    @Test func skillBasedSendsATaskToTheMostSpecialisedPoolFirst() {
        var scheduler = Scheduler(policy: .skillBased, pools: pools())
        scheduler.queue.push(queued("s", "train", skill: "ml"))
        scheduler.queue.push(queued("s", "eval", skill: "ml"))
        let first = scheduler.nextAssignment()
        #expect(first?.pool == "gpu", "gpu serves only ml; general serves everything")
        #expect(scheduler.nextAssignment()?.pool == "general", "gpu is full, so the next ml task falls back")
    }

    @Test func otherPoliciesBalanceLoadInstead() {
        var scheduler = Scheduler(policy: .priority, pools: pools())
        scheduler.queue.push(queued("s", "train", skill: "ml"))
        #expect(scheduler.nextAssignment()?.pool == "general", "general is 0/4 loaded, gpu 0/1: a tie goes to the first")
    }

    @Test func drainStopsAtTheGlobalLimitAndReleaseMakesRoom() {
        var admission = pools()
        admission.maxGlobalConcurrency = 2
        var scheduler = Scheduler(policy: .fifo, pools: admission)
        for i in 0..<5 { scheduler.queue.push(queued("s", TaskID("t\(i)"), skill: "backend")) }
        let first = scheduler.drain()
        #expect(first.map(\.task.key.id) == ["t0", "t1"])
        scheduler.release(first[0])
        #expect(scheduler.drain().map(\.task.key.id) == ["t2"])
        #expect(scheduler.queue.count == 2)
    }
}

@Suite struct RetryPolicyTests {
    @Test func backoffGrowsExponentiallyUpToTheCap() {
        let policy = RetryPolicy(maxAttempts: 5, initialDelay: .seconds(2), base: 3, maxDelay: .seconds(60))
        #expect((1...6).map { policy.delay(afterAttempt: $0) } == [2, 6, 18, 54, 60, 60].map { Duration.seconds($0) })
        #expect(policy.shouldRetry(afterAttempt: 4))
        #expect(!policy.shouldRetry(afterAttempt: 5))
    }

    @Test func hugeAttemptNumbersStayAtTheCap() {
        let policy = RetryPolicy(initialDelay: .seconds(1), base: 2, maxDelay: .seconds(300))
        #expect(policy.delay(afterAttempt: 10_000) == .seconds(300))
    }

    @Test func jitterTakesOffAtMostItsShareAndFollowsTheRandomSource() {
        let policy = RetryPolicy(initialDelay: .seconds(10), base: 2, maxDelay: .seconds(1000), jitter: 0.5)
        var random = SplitMix64(seed: 42)
        var seen = Set<Double>()
        for _ in 0..<200 {
            let delay = policy.delay(afterAttempt: 3, using: &random).seconds  // 40 s before jitter
            #expect(delay > 20 - 1e-9 && delay <= 40)
            seen.insert(delay)
        }
        #expect(seen.count > 150, "jitter varies")
        var again = SplitMix64(seed: 42)
        var replay = SplitMix64(seed: 42)
        #expect(policy.delay(afterAttempt: 2, using: &again) == policy.delay(afterAttempt: 2, using: &replay))
        var unused = SplitMix64(seed: 1)
        #expect(RetryPolicy(initialDelay: .seconds(10)).delay(afterAttempt: 1, using: &unused) == .seconds(10))
    }
}

@Suite struct DurationTextTests {
    @Test func readsTheUsualForms() {
        #expect(DurationText.seconds("90") == 90)
        #expect(DurationText.seconds("45s") == 45)
        #expect(DurationText.seconds("30m") == 1800)
        #expect(DurationText.seconds("1h30m") == 5400)
        #expect(DurationText.seconds("2d") == 172_800)
        #expect(DurationText.seconds("soon") == nil)
        #expect(DurationText.seconds("5x") == nil)
        #expect(DurationText.seconds("m") == nil)
        #expect(DurationText.seconds("") == nil)
    }
}
