import HeapModule

extension DispatchEngine {
    // MARK: Recording

    /// Appends events (and a state change, if any) to this turn's record.
    mutating func record(_ spec: String, _ task: TaskID?, events: [NewEvent]) {
        transitions.append(Transition(spec: spec, task: task, events: events))
    }

    /// Changes a task's state in memory and records it with its events.
    mutating func change(
        _ key: TaskKey, _ index: Int, to state: TaskState, attempts: Int? = nil, reason: String?? = nil,
        slot: TaskSlot? = nil, events: [NewEvent]
    ) {
        let previous = sets[key.spec]!.states[index]
        if previous != state && !sets[key.spec]!.tracker.graph.isGroup[index] {
            sets[key.spec]!.counts[previous, default: 0] -= 1
            sets[key.spec]!.counts[state, default: 0] += 1
        }
        sets[key.spec]!.states[index] = state
        if let attempts { sets[key.spec]!.attempts[index] = attempts }
        if let reason { sets[key.spec]!.reasons[index] = reason }
        transitions.append(
            Transition(spec: key.spec, task: key.id, to: state, attempts: attempts, reason: reason, slot: slot, events: events))
    }

    mutating func schedule(_ kind: DeadlineKind, at instant: Instant) {
        deadlineOrder += 1
        deadlines.insert(Deadline(at: instant, order: deadlineOrder, kind: kind))
    }

    func maxAttempts(_ task: TaskSpec) -> Int { task.maxAttempts ?? configuration.retry.maxAttempts }

    func runnerPayload(_ id: RunnerID, _ runner: RunnerState) -> [String: JSONValue] {
        var payload: [String: JSONValue] = ["runner_id": .string(id.rawValue), "pool_name": .string(runner.assignment.pool), "slot_id": .null]
        if let slot = runner.slot?.slot {
            payload["slot_id"] = .string(slot.id)
            payload["slot_path"] = .string(slot.path)
            payload["branch"] = .string(slot.branch)
        }
        return payload
    }

    /// Records what the repo pool did with a runner's slot.
    mutating func slotReported(_ id: RunnerID, _ report: SlotReport) {
        guard let runner = runners[id] else { return }
        var payload = runnerPayload(id, runner)
        let type: EventType
        switch report {
        case .prepared(let created, let merged, let head):
            type = .slotAllocated
            payload["branch_created"] = .bool(created)
            payload["merged"] = .array(merged.map { .string($0.rawValue) })
            payload["head"] = .string(head)
        case .workCommitted(let commit, let message):
            type = .taskWorkCommitted
            payload["commit"] = .string(commit)
            payload["message"] = .string(message)
            payload["explanation"] = "the agent left uncommitted changes: the dispatcher committed them on the task's branch"
        case .attemptSaved(let ref, let commit):
            type = .attemptSaved
            payload["ref"] = .string(ref)
            payload["commit"] = .string(commit)
            payload["explanation"] = "uncommitted changes of this attempt, saved off the task's branch"
        case .released:
            type = .slotReleased
        case .allocationFailed(let reason):
            type = .slotAllocationFailed
            payload["reason"] = .string(reason)
        }
        record(runner.key.spec, runner.key.id, events: [NewEvent(type, payload: payload)])
    }

    // MARK: Tasks

    /// A task whose dependencies are all done: ready, and queued unless no pool could ever take it.
    /// An optional task of a taskset that does not run them is skipped instead.
    mutating func makeReady(_ key: TaskKey, _ index: Int) {
        if sets[key.spec]!.spec.tasks[index].optional && !sets[key.spec]!.spec.runOptional {
            change(
                key, index, to: .skipped, reason: .some(nil),
                events: [
                    NewEvent(.taskSkipped, payload: ["explanation": "optional: not run (necro run --with-optional runs optional tasks)"])
                ])
            releaseDependents(of: key, index)
            return
        }
        if sets[key.spec]!.states[index] != .ready {
            change(key, index, to: .ready, reason: .some(nil), events: [NewEvent(.taskReady)])
        }
        if phase == .running { enqueue(key, index) }
    }

    mutating func enqueue(_ key: TaskKey, _ index: Int) {
        let task = sets[key.spec]!.spec.tasks[index]
        let queued = QueuedTask(key: key, skill: task.requiredSkill, priority: task.priority, resources: task.resources)
        if let problem = scheduler.pools.placementProblem(for: queued) {
            let reason: String
            switch problem {
            case .noPoolForSkill(let skill):
                reason = "no pool serves skill \(skill ?? "(none)") and there is no default pool"
            case .exceedsEveryPool(let resources):
                reason = "needs cpu \(resources.cpu.map { "\($0)" } ?? "-"), memory \(resources.memoryMB.map { "\($0) MB" } ?? "-"): more than any pool it may run on allows"
            }
            change(key, index, to: .blocked, reason: .some(reason), events: [NewEvent(.taskBlocked, payload: ["reason": .string(reason)])])
            return
        }
        let mapping = scheduler.pools.skillMapping
        if let skill = task.requiredSkill, !mapping.isEmpty, mapping[skill]?.isEmpty ?? true, warnedSkills.insert(skill).inserted {
            record(
                key.spec, key.id,
                events: [
                    NewEvent(.taskSkillUnmapped, payload: [
                        "skill": .string(skill), "pools": .array((mapping["default"] ?? []).map { .string($0) }),
                        "explanation": "no pool is mapped to this skill: its tasks go to the default pool (said once per run)",
                    ])
                ])
        }
        scheduler.queue.push(queued)
        queuedSince[key] = now
    }

    /// A task is finished (done, skipped, or an optional one failed): what waits on it may go on.
    mutating func releaseDependents(of key: TaskKey, _ index: Int) {
        let completion = sets[key.spec]!.tracker.finish(index)
        finishGroups(completion.groupsFinished, spec: key.spec)
        for ready in completion.ready { makeReady(TaskKey(spec: key.spec, id: sets[key.spec]!.tracker.graph.ids[ready]), ready) }
    }

    /// Marks groups done, and whatever that readies.
    mutating func finishGroups(_ groups: [Int], spec: String) {
        var pending = groups
        while let group = pending.popLast() {
            let key = TaskKey(spec: spec, id: sets[spec]!.tracker.graph.ids[group])
            if sets[spec]!.states[group] != .done {
                change(key, group, to: .done, events: [NewEvent(.taskCompleted, payload: ["group": true])])
            }
            let completion = sets[spec]!.tracker.finish(group)
            pending += completion.groupsFinished.filter { sets[spec]!.states[$0] != .done }
            for ready in completion.ready { makeReady(TaskKey(spec: spec, id: sets[spec]!.tracker.graph.ids[ready]), ready) }
            for finished in completion.groupsFinished where sets[spec]!.states[finished] != .done {
                let finishedKey = TaskKey(spec: spec, id: sets[spec]!.tracker.graph.ids[finished])
                change(finishedKey, finished, to: .done, events: [NewEvent(.taskCompleted, payload: ["group": true])])
            }
        }
    }

    /// Takes a task out of the ready queue, with when it was queued: it will not be assigned.
    mutating func dequeue(_ key: TaskKey) {
        scheduler.queue.remove(key)
        queuedSince[key] = nil
    }

    /// Everything that waits on a failed or cancelled task is blocked, and says why.
    mutating func blockDependents(of key: TaskKey, _ index: Int) {
        let graph = sets[key.spec]!.tracker.graph
        let why = sets[key.spec]!.states[index] == .cancelled ? "cancelled" : "failed"
        let reason = "dependency \(key.id) \(why)"
        for dependent in graph.transitiveDependents(of: index) {
            let state = sets[key.spec]!.states[dependent]
            guard !state.isTerminal, state != .running, sets[key.spec]!.reasons[dependent] != reason else { continue }
            let dependentKey = TaskKey(spec: key.spec, id: graph.ids[dependent])
            dequeue(dependentKey)
            change(
                dependentKey, dependent, to: .blocked, reason: .some(reason),
                events: [NewEvent(.taskBlocked, payload: ["reason": .string(reason), "failed_dependency": .string(key.id.rawValue)])])
        }
    }

    mutating func setPriority(_ key: TaskKey, _ priority: Int) {
        guard let index = sets[key.spec]?.tracker.graph.index(of: key.id) else { return }
        let previous = sets[key.spec]!.spec.tasks[index].priority
        sets[key.spec]!.spec.tasks[index].priority = priority
        scheduler.queue.setPriority(priority, for: key)
        record(key.spec, key.id, events: [NewEvent(.taskPriorityChanged, payload: ["from": .int(previous), "to": .int(priority)])])
    }

    mutating func cancel(_ key: TaskKey) {
        guard let index = sets[key.spec]?.tracker.graph.index(of: key.id) else { return }
        let state = sets[key.spec]!.states[index]
        guard !state.isTerminal else { return }
        if state == .running, let (id, runner) = runners.first(where: { $0.value.key == key }) {
            runners[id]!.cancelled = true
            stop(id, reason: "cancelled", event: runner)
            return
        }
        dequeue(key)
        pendingRetries.remove(key)
        change(key, index, to: .cancelled, reason: .some("cancelled"), events: [NewEvent(.taskCancelled)])
        blockDependents(of: key, index)
    }

    mutating func retry(_ key: TaskKey) {
        guard let index = sets[key.spec]?.tracker.graph.index(of: key.id) else { return }
        guard sets[key.spec]!.states[index] == .failed || sets[key.spec]!.states[index] == .cancelled else { return }
        let graph = sets[key.spec]!.tracker.graph
        change(key, index, to: .blocked, attempts: 0, reason: .some(nil), events: [NewEvent(.taskRetryScheduled, payload: ["requested": true])])
        // What it blocked now waits on it again, no longer on a failure.
        let reason = "dependency \(key.id) "
        for dependent in graph.transitiveDependents(of: index) where sets[key.spec]!.reasons[dependent]?.hasPrefix(reason) == true {
            change(TaskKey(spec: key.spec, id: graph.ids[dependent]), dependent, to: .blocked, reason: .some(nil), events: [NewEvent(.taskBlocked, payload: ["waiting_on": .string(key.id.rawValue)])])
        }
        // An optional task that failed let what waited on it go on: it counts as finished, and
        // runs again at once.
        let tracker = sets[key.spec]!.tracker
        if tracker.isReady(index) || (sets[key.spec]!.spec.tasks[index].optional && tracker.isFinished(index)) {
            makeReady(key, index)
        }
    }

    // MARK: Runners

    /// Watches a runner a previous dispatcher started as if started here: it holds its pool's
    /// capacity and its slot, and gets a fresh lease (and task timeout) from now.
    mutating func adopt(_ adopted: RunnerRecord, _ index: Int, _ spec: TaskSetSpec, slot: TaskSlot?) {
        let runner = takeOver(adopted, index, spec, slot: slot)
        let task = spec.tasks[index]
        schedule(.lease(adopted.id), at: runner.leaseExpiresAt)
        if let timeout = task.timeoutSeconds { schedule(.taskTimeout(adopted.id), at: now.advanced(by: .seconds(timeout))) }
        var payload = runnerPayload(adopted.id, runner)
        payload["pid"] = adopted.pid.map { .int(Int($0)) } ?? .null
        if adopted.poolType != .localProcess, let handle = adopted.handle { payload["handle"] = .string(handle) }
        payload["attempt"] = .int(adopted.attempt)
        payload["explanation"] = "still running from a dispatcher that stopped: watched from now on, not run again"
        record(adopted.task.spec, adopted.task.id, events: [NewEvent(.runnerAdopted, actor: "recovery_sweep", spanID: "recovery_sweep", phase: "recovery", payload: payload)])
    }

    /// Makes a runner a previous dispatcher started one of this engine's: it holds its pool's
    /// capacity and its slot.
    @discardableResult
    mutating func takeOver(_ previous: RunnerRecord, _ index: Int, _ spec: TaskSetSpec, slot: TaskSlot?) -> RunnerState {
        let task = spec.tasks[index]
        let queued = QueuedTask(key: previous.task, skill: task.requiredSkill, priority: task.priority, resources: task.resources)
        scheduler.pools.admit(task.resources, to: previous.pool)
        var held: (number: Int, slot: TaskSlot)?
        if configuration.repoPool != nil, let slot, let number = TaskSlot.number(of: slot.id) {
            held = (number, slot)
            freeSlots = .init(freeSlots.unordered.filter { $0 != number })
        }
        var runner = RunnerState(
            key: previous.task, index: index, assignment: Scheduler.Assignment(task: queued, pool: previous.pool),
            attempt: previous.attempt, slot: held, started: now, leaseExpiresAt: now.advanced(by: configuration.heartbeatTimeout),
            reportsOwnLease: ownLease(previous.pool), leaseNoted: now)
        runner.recovered = true
        runners[previous.id] = runner
        return runner
    }

    /// Whether the runners of `pool` report their own leases (`necro runner`).
    func ownLease(_ pool: String) -> Bool { configuration.pool(named: pool)?.runsNecroRunner ?? false }

    /// A lease event of the dispatcher's own, on the runner's `main` span.
    func leaseEvent(_ type: EventType, _ id: RunnerID) -> NewEvent {
        let seconds = configuration.heartbeatTimeout.seconds
        var payload: [String: JSONValue] = ["work_item_id": .null, "lease_holder": .string(id.rawValue)]
        if type == .leaseAcquired {
            payload["lease_duration_seconds"] = .double(seconds)
            payload["explanation"] = "the dispatcher leased the task to its runner; a heartbeat or output renews the lease"
        } else {
            payload["extended_by_seconds"] = .double(seconds)
            payload["explanation"] = "the runner showed a sign of life (heartbeat, report or output): its lease is extended"
        }
        return NewEvent(type, actor: "lease_manager", spanID: "main", phase: "executing", payload: payload)
    }

    mutating func renewLease(_ id: RunnerID) {
        guard let runner = runners[id] else { return }
        runners[id]!.leaseExpiresAt = now.advanced(by: configuration.heartbeatTimeout)
        // Renewals recorded at most once a third of the timeout, unless the runner records its own.
        if !runner.reportsOwnLease, runner.leaseNoted.duration(to: now) >= configuration.heartbeatTimeout / 3 {
            runners[id]!.leaseNoted = now
            record(runner.key.spec, runner.key.id, events: [leaseEvent(.leaseRenewed, id)])
        }
        if runners[id]!.checkingLease {
            runners[id]!.checkingLease = false
            schedule(.lease(id), at: runners[id]!.leaseExpiresAt)
        }
    }

    /// Asks a runner's process group to stop (SIGTERM), and to die (SIGKILL) after the grace period.
    mutating func stop(_ id: RunnerID, reason: String, event runner: RunnerState, grace: Duration? = nil) {
        guard runners[id]?.stopReason == nil else { return }
        runners[id]!.stopReason = reason
        if !runner.interrupted && !runner.cancelled && reason != "cancelled" {
            record(runner.key.spec, runner.key.id, events: [NewEvent(.runnerTimedOut, payload: runnerPayload(id, runner).merging(["reason": .string(reason)]) { a, _ in a })])
        }
        effects.append(.signal(id, .terminate))
        schedule(.killGrace(id), at: now.advanced(by: grace ?? options.killGrace))
    }

    /// Shutdown: every runner is stopped; its task will go back to ready.
    mutating func stopAll(grace: Duration? = nil) {
        phase = .stopping
        for id in runners.keys.sorted() {
            runners[id]!.interrupted = true
            stop(id, reason: "dispatcher shutdown", event: runners[id]!, grace: grace)
        }
    }

    /// A launch that was not carried out (its record could not be written): as if it had never
    /// been assigned, but for the events that say so. The task is queued again.
    mutating func withdraw(_ id: RunnerID, reason: String) {
        guard let runner = runners.removeValue(forKey: id) else { return }
        scheduler.release(runner.assignment)
        if let number = runner.slot?.number { freeSlots.insert(number) }
        // Its deadlines go with it: a launch again under the same id must not meet them.
        deadlines = Heap(deadlines.unordered.filter { !$0.kind.concerns(id) })
        if runner.cancelled {
            change(runner.key, runner.index, to: .cancelled, attempts: runner.attempt - 1, reason: .some("cancelled"), events: [NewEvent(.taskCancelled)])
            blockDependents(of: runner.key, runner.index)
            return
        }
        change(
            runner.key, runner.index, to: .ready, attempts: runner.attempt - 1, reason: .some(nil),
            events: [
                NewEvent(.taskReady, payload: [
                    "runner_id": .string(id.rawValue), "reason": .string(reason),
                    "explanation": "not started: its assignment could not be recorded; the attempt is given back",
                ])
            ])
        if phase == .running { enqueue(runner.key, runner.index) }
    }

    mutating func runnerExited(_ id: RunnerID, _ exit: RunnerExit) {
        guard let runner = runners.removeValue(forKey: id) else { return }
        scheduler.release(runner.assignment)
        if let number = runner.slot?.number { freeSlots.insert(number) }
        let key = runner.key
        let index = runner.index
        let elapsed = (runner.started.duration(to: now)).seconds
        var finished = runnerPayload(id, runner)
        finished["execution_time_seconds"] = .double((elapsed * 1000).rounded() / 1000)
        finished["attempt"] = .int(runner.attempt)
        switch exit {
        case .exited(let code): finished["exit_code"] = .int(Int(code))
        case .signalled(let signal): finished["signal"] = .int(Int(signal))
        case .outOfMemory: finished["out_of_memory"] = true
        case .gateFailed(let failure):
            finished["gate"] = .string(failure.gate)
            finished["gate_exit_code"] = failure.exitCode.map { .int(Int($0)) } ?? .null
            finished["gate_output_tail"] = .string(failure.outputTail)
        case .usageLimited: finished["usage_limit"] = true
        case .launchFailed, .mergeConflict, .refused: break
        }
        // Exit 0 is success, except from a runner stopped for a timeout: it was cut off, whatever it
        // answered. A runner that exits 0 during a shutdown did finish its work.
        let success = exit.succeeded && (runner.stopReason == nil || runner.interrupted)
        finished["success"] = .bool(success)
        if runner.recovered { finished["recovered"] = true }

        if runner.interrupted && !exit.succeeded {
            finished["interrupted"] = true
            change(
                key, index, to: .ready, attempts: runner.attempt - 1, reason: .some("interrupted by shutdown"),
                events: [NewEvent(.runnerFinished, payload: finished), NewEvent(.taskReady, payload: ["reason": "interrupted by shutdown"])])
            return
        }
        if runner.cancelled {
            finished["failure_reason"] = "cancelled"
            change(key, index, to: .cancelled, reason: .some("cancelled"), events: [NewEvent(.runnerFinished, payload: finished), NewEvent(.taskCancelled)])
            blockDependents(of: key, index)
            return
        }
        if success {
            change(
                key, index, to: .done, reason: .some(nil),
                events: [
                    NewEvent(.runnerFinished, payload: finished),
                    NewEvent(.taskCompleted, payload: ["runner_id": .string(id.rawValue), "execution_time_seconds": finished["execution_time_seconds"]!].merging(runner.recovered ? ["recovered": true] : [:]) { a, _ in a }),
                ])
            releaseDependents(of: key, index)
            return
        }

        let reason = runner.stopReason ?? exit.reason
        finished["failure_reason"] = .string(reason)
        let task = sets[key.spec]!.spec.tasks[index]
        if case .mergeConflict(let dependency, let files) = exit {
            // Retrying would conflict again: the user must look at it.
            var conflict = runnerPayload(id, runner)
            conflict["dependency"] = .string(dependency.rawValue)
            conflict["files"] = .array(files.map { .string($0) })
            change(
                key, index, to: .failed, reason: .some(reason),
                events: [
                    NewEvent(.runnerFinished, payload: finished), NewEvent(.slotMergeConflict, payload: conflict),
                    NewEvent(.taskFailed, payload: [
                        "runner_id": .string(id.rawValue), "failure_reason": .string(reason), "retry_count": .int(runner.attempt - 1),
                        "attempts": .int(runner.attempt), "retryable": false,
                    ]),
                ])
            blockDependents(of: key, index)
            return
        }
        if case .refused = exit, runner.stopReason == nil {
            // Another attempt would meet the same configuration: the user must change it.
            change(
                key, index, to: .failed, reason: .some(reason),
                events: [
                    NewEvent(.runnerFinished, payload: finished),
                    NewEvent(.taskFailed, payload: [
                        "runner_id": .string(id.rawValue), "failure_reason": .string(reason), "retry_count": .int(runner.attempt - 1),
                        "attempts": .int(runner.attempt), "retryable": false,
                    ]),
                ])
            if task.optional { releaseDependents(of: key, index) } else { blockDependents(of: key, index) }
            return
        }
        if case .usageLimited(let retryAfter, _) = exit, runner.stopReason == nil, limitedAttempts[key, default: 0] < Self.limitedAttemptsAllowed {
            // Not the agent's failure: the attempt is given back, and tried again once the limit
            // resets (a day at most), else after a backoff that grows with each limit met. A limit
            // met over and over (a quota that never resets) ends up counting as failures do.
            limitedAttempts[key, default: 0] += 1
            finished["attempt_counted"] = false
            guard phase == .running else {
                change(
                    key, index, to: .ready, attempts: runner.attempt - 1, reason: .some("attempt \(runner.attempt) stopped by a usage limit"),
                    events: [NewEvent(.runnerFinished, payload: finished)])
                return
            }
            let backoff = configuration.retry.delay(afterAttempt: limitedAttempts[key]!, using: &random)
            let delay = min(retryAfter ?? backoff, .seconds(86_400))
            change(
                key, index, to: .ready, attempts: runner.attempt - 1,
                reason: .some("attempt \(runner.attempt) stopped by a usage limit; tried again in \(Int(delay.seconds.rounded())) s"),
                events: [
                    NewEvent(.runnerFinished, payload: finished),
                    NewEvent(.taskRetryScheduled, payload: [
                        "delay_seconds": .double((delay.seconds * 1000).rounded() / 1000), "attempt": .int(runner.attempt),
                        "max_attempts": .int(maxAttempts(task)), "failure_reason": .string(reason), "usage_limit": true,
                        "attempt_counted": false,
                        "explanation": .string("the agent's provider said it is over a usage limit: attempt \(runner.attempt) runs again once it resets, and does not count"),
                    ]),
                ])
            pendingRetries.insert(key)
            schedule(.retry(key), at: now.advanced(by: delay))
            return
        }
        if runner.attempt < maxAttempts(task) && phase == .running {
            let delay = configuration.retry.delay(afterAttempt: runner.attempt, using: &random)
            change(
                key, index, to: .ready, reason: .some("attempt \(runner.attempt) failed: \(reason); retrying"),
                events: [
                    NewEvent(.runnerFinished, payload: finished),
                    NewEvent(.taskRetryScheduled, payload: [
                        "delay_seconds": .double((delay.seconds * 1000).rounded() / 1000), "attempt": .int(runner.attempt),
                        "max_attempts": .int(maxAttempts(task)), "failure_reason": .string(reason),
                    ]),
                ])
            pendingRetries.insert(key)
            schedule(.retry(key), at: now.advanced(by: delay))
        } else if phase != .running && runner.attempt < maxAttempts(task) {
            // Shutting down: the failure is recorded, the retry is left for the next run.
            change(key, index, to: .ready, reason: .some("attempt \(runner.attempt) failed: \(reason)"), events: [NewEvent(.runnerFinished, payload: finished)])
        } else {
            var failedPayload: [String: JSONValue] = [
                "runner_id": .string(id.rawValue), "failure_reason": .string(reason), "retry_count": .int(runner.attempt - 1),
                "attempts": .int(runner.attempt),
            ]
            if task.optional { failedPayload["optional"] = true }
            change(
                key, index, to: .failed, reason: .some(reason),
                events: [NewEvent(.runnerFinished, payload: finished), NewEvent(.taskFailed, payload: failedPayload)])
            // An optional task does not hold up the run: what waits on it goes on.
            if task.optional { releaseDependents(of: key, index) } else { blockDependents(of: key, index) }
        }
    }
}
