import Foundation
import NecroCore
import Synchronization

/// A gate's result as a runner reported it (`gate_result`).
struct GateReport: Sendable {
    var passed: Bool
    var exitCode: Int32?
    /// How it ended, in words, as the runner said (`not started: cannot run x`).
    var ending: String?
    var outputTail: String
}

/// The DONE gates run for a runner that exited 0, one after the other, each as a runner of its
/// own launched the way the runner was (a process in its folder, a fresh container of its image
/// with its mounts).
final class GateRun: Sendable {
    let runner: RunnerID
    let gates: [[String]]
    let base: RunnerLaunch
    let launcher: any RunnerLauncher

    struct State {
        var index = 0
        var gate: RunnerID?
        var started = ContinuousClock.now
        var timedOut = false
        var timer: Task<Void, Never>?
    }

    let state = Mutex(State())

    init(runner: RunnerID, gates: [[String]], base: RunnerLaunch, launcher: any RunnerLauncher) {
        self.runner = runner
        self.gates = gates
        self.base = base
        self.launcher = launcher
    }
}

extension Dispatcher {
    // MARK: DONE gates

    /// Starts the gates of a runner that exited 0, those it did not report passing itself. False
    /// if there is none to run (its exit goes on as it is). A gate it reported failing fails it.
    func startGates(of id: RunnerID) -> Bool {
        guard let (launch, gates, type) = launched.withLock({ $0.removeValue(forKey: id) }), !gates.isEmpty else { return false }
        let reported = reportedGates.withLock { $0[id] } ?? [:]
        if let failure = reportedGateFailure(of: id) {
            finishExit(id, .gateFailed(failure))
            return true
        }
        let pending = gates.filter { reported[GateFailure.name($0)] == nil }
        guard !pending.isEmpty else { return false }
        guard let launcher = launchers[type] else {
            let failure = GateFailure(gate: GateFailure.name(pending[0]), exitCode: nil, ending: "not run: no \(type) launcher here", outputTail: "")
            finishExit(id, .gateFailed(failure))
            return true
        }
        if let pool = configuration.pool(named: launch.pool), let container = pool.container, !container.mountRepoPool {
            // Its work stayed in its container: a gate here would look at an empty folder.
            let name = GateFailure.name(pending[0])
            finishExit(
                id,
                .gateFailed(
                    GateFailure(
                        gate: name, exitCode: nil,
                        ending: "not run: pool \(pool.name) does not mount the task's folder (mount_repo_pool: false), so only a runner inside the container can run its gates (necro runner)",
                        outputTail: "")))
            return true
        }
        let run = GateRun(runner: id, gates: pending, base: launch, launcher: launcher)
        gateRuns.withLock { $0.byRunner[id] = run }
        launchGate(run)
        return true
    }

    /// A gate the runner reported failing, if any: why its attempt failed, whatever it exited with.
    func reportedGateFailure(of id: RunnerID) -> GateFailure? {
        guard let (name, report) = reportedGates.withLock({ $0[id] })?.first(where: { !$0.value.passed }) else { return nil }
        let ending = report.ending ?? report.exitCode.map { "exit code \($0)" } ?? "did not pass"
        return GateFailure(gate: name, exitCode: report.exitCode, ending: ending, outputTail: report.outputTail)
    }

    private func launchGate(_ run: GateRun) {
        let (index, gateID) = run.state.withLock { state -> (Int, RunnerID) in
            let gateID = RunnerID("\(run.runner.rawValue).gate\(state.index + 1)")
            state.gate = gateID
            state.started = .now
            state.timedOut = false
            return (state.index, gateID)
        }
        gateRuns.withLock { $0.byGate[gateID] = run.runner }
        let argv = run.gates[index]
        let name = GateFailure.name(argv)
        let timeout = configuration.gateTimeout
        inbox.post(
            .input(
                .runnerReported(
                    run.runner,
                    [
                        NewEvent(
                            .gateStart, actor: "gate_runner", spanID: "main", phase: "verifying",
                            payload: GateEvents.start(
                                name, timeoutSeconds: timeout.seconds, explanation: "the runner exited 0: the task is done only once its DONE gates pass"))
                    ])))
        var launch = run.base
        launch.runner = gateID
        launch.argv = argv
        launch.status = nil
        launch.logPath = gateLogPath(run.runner, index)
        launch.environment["NECRO_GATE"] = name
        // Stopped at its timeout; meanwhile the runner's lease is kept.
        let timer = Task { [inbox, clock, configuration, options] in
            let step = configuration.heartbeatTimeout / 3
            var waited = Duration.zero
            while waited < timeout {
                let next = min(step, timeout - waited)
                do { try await clock.sleep(for: next) } catch { return }
                waited += next
                inbox.post(.input(.heartbeat(run.runner)))
            }
            run.state.withLock { $0.timedOut = true }
            run.launcher.signal(gateID, .terminate)
            try? await clock.sleep(for: options.killGrace)
            if !Task.isCancelled { run.launcher.signal(gateID, .kill) }
        }
        run.state.withLock { $0.timer = timer }
        run.launcher.launch(launch)
    }

    /// `<logs>/<runner>.gate<n>.log`.
    func gateLogPath(_ runner: RunnerID, _ index: Int) -> String {
        paths.logFile(for: RunnerID("\(runner.rawValue).gate\(index + 1)"))
    }

    /// A gate's own start, output and exit: taken here, not by the engine. False for other events.
    func takeGateEvent(_ event: RunnerEvent) -> Bool {
        let id: RunnerID
        switch event {
        case .started(let runner, _), .output(let runner, _), .exited(let runner, _): id = runner
        }
        guard let owner = gateRuns.withLock({ $0.byGate[id] }), let run = gateRuns.withLock({ $0.byRunner[owner] }) else { return false }
        switch event {
        case .started: break
        case .output(_, let line):
            inbox.post(.runner(.output(owner, lastLine: line), received: .now))  // a sign of life
        case .exited(_, let exit):
            gateEnded(run, gateID: id, exit)
        }
        return true
    }

    private func gateEnded(_ run: GateRun, gateID: RunnerID, _ exit: RunnerExit) {
        let (index, started, timedOut) = run.state.withLock { state in
            state.timer?.cancel()
            state.timer = nil
            return (state.index, state.started, state.timedOut)
        }
        gateRuns.withLock { _ = $0.byGate.removeValue(forKey: gateID) }
        run.launcher.ended(gateID)
        let name = GateFailure.name(run.gates[index])
        var outcome = GateOutcome(timedOut: timedOut, timeoutSeconds: configuration.gateTimeout.seconds)
        switch exit {
        case .exited(let code): outcome.exitCode = code
        case .signalled(let signal): outcome.signal = signal
        default: outcome.notStarted = exit.reason
        }
        let tail = Self.tail(of: gateLogPath(run.runner, index))
        inbox.post(
            .input(
                .runnerReported(
                    run.runner,
                    [
                        NewEvent(
                            .gateResult, actor: "gate_runner", spanID: "main", phase: "verifying",
                            payload: GateEvents.result(name, outcome, seconds: started.duration(to: .now).seconds, outputTail: tail))
                    ])))
        let passed = outcome.passed
        if passed && index + 1 < run.gates.count {
            run.state.withLock { $0.index += 1 }
            launchGate(run)
            return
        }
        gateRuns.withLock { _ = $0.byRunner.removeValue(forKey: run.runner) }
        finishExit(run.runner, passed ? .exited(code: 0) : .gateFailed(GateEvents.failure(name, outcome, outputTail: tail)))
    }

    /// Passes a stop meant for a runner to its gate, if one runs for it (the runner has exited).
    func signalGate(of id: RunnerID, _ signal: RunnerSignal) -> Bool {
        guard let run = gateRuns.withLock({ $0.byRunner[id] }), let gate = run.state.withLock({ $0.gate }) else { return false }
        run.launcher.signal(gate, signal)
        return true
    }

    /// The end of a log (`OutputTail`).
    static func tail(of path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        guard let size = try? handle.seekToEnd() else { return "" }
        let start = size > UInt64(OutputTail.limit) ? size - UInt64(OutputTail.limit) : 0
        try? handle.seek(toOffset: start)
        return OutputTail.text((try? handle.readToEnd()) ?? Data(), cut: start > 0)
    }

    /// How a runner that ended while no dispatcher watched counts: one that exited 0 with gates
    /// it did not report passing is not done (nobody ran them): its attempt fails, saying so.
    func gatedExit(_ ended: EndedRunner, _ tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]) -> RunnerExit? {
        guard ended.exit?.succeeded == true,
            let task = tasksets.lazy.flatMap(\.records).first(where: { $0.key == ended.runner.task })?.task, !task.gates.isEmpty
        else { return ended.exit }
        let query = EventQuery(spec: ended.runner.task.spec, task: ended.runner.task.id, type: .gateResult)
        let passed = Set(
            ((try? registry.events(query)) ?? [])
                .filter { $0.payload["runner_id"] == .string(ended.runner.id.rawValue) && $0.payload["passed"] == true }
                .compactMap { if case .string(let name)? = $0.payload["gate_name"] { name } else { nil } })
        guard let missing = task.gates.map(GateFailure.name).first(where: { !passed.contains($0) }) else { return ended.exit }
        return .gateFailed(
            GateFailure(gate: missing, exitCode: nil, ending: "not run: the dispatcher stopped before the runner's gates were", outputTail: ""))
    }

    // MARK: What runners report

    /// What a runner that ended while no dispatcher watched had spooled and could not send (its
    /// checkpoints, its gates' results): recorded now, once, in order, with their own times,
    /// before its exit is counted; then the spool goes.
    func recordSpool(of runner: RunnerRecord, _ tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]) {
        guard let record = tasksets.lazy.flatMap(\.records).first(where: { $0.key == runner.task }) else { return }
        let work = record.slot?.path ?? paths.workFolder(for: runner.task)
        let name = RunnerSpool.fileName(of: runner.id)
        var candidates = [work + "/.necro/" + name]
        // In a worktree, the spool is in its git folder (`.git` names it).
        if let link = try? String(contentsOfFile: work + "/.git", encoding: .utf8), link.hasPrefix("gitdir: ") {
            let gitDirectory = link.dropFirst(8).trimmingCharacters(in: .whitespacesAndNewlines)
            candidates.insert((gitDirectory.hasPrefix("/") ? gitDirectory : work + "/" + gitDirectory) + "/necro/" + name, at: 0)
        }
        for path in candidates {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            let last = lastRecordedSeq(of: runner.id, task: runner.task) ?? 0
            let now = Timestamp(secondsSince1970: Date().timeIntervalSince1970)
            var events: [NewEvent] = []
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: Data(line)),
                    var event = try? RunnerEventReport.event(fields, now: now)
                else { continue }  // a line torn by the runner's end
                if let seq = event.payload["runner_seq"]?.intValue, seq <= last { continue }
                event.payload["runner_id"] = .string(runner.id.rawValue)
                events.append(event)
            }
            if !events.isEmpty {
                do {
                    _ = try registry.apply([Transition(spec: runner.task.spec, task: runner.task.id, events: events)])
                } catch {
                    FileHandle.standardError.write(Data("necro: the events runner \(runner.id) spooled in \(path) could not be recorded: \(error)\n".utf8))
                    continue
                }
            }
            unlink(path)
        }
    }

    /// The last `runner_seq` recorded of a runner (among its task's last 1,000 events).
    func lastRecordedSeq(of id: RunnerID, task: TaskKey) -> Int? {
        let recent = (try? registry.events(EventQuery(spec: task.spec, task: task.id, limit: 1000, newestFirst: true))) ?? []
        return recent.filter { $0.payload["runner_id"] == .string(id.rawValue) }.compactMap { $0.payload["runner_seq"]?.intValue }.max()
    }

    /// A runner's reports as recorded: each says which runner made it; one sent again (the same
    /// `runner_seq`, after a lost answer) is dropped; gate results are noted for its exit.
    func takeReports(_ id: RunnerID, _ events: [NewEvent]) -> [NewEvent] {
        var last = reportSeqs.withLock { $0[id] }
        if last == nil, adoptedRunners.withLock({ $0.contains(id) }), let task = task(ofRunner: id) {
            // Adopted: what it had sent the last dispatcher is in the registry.
            last = lastRecordedSeq(of: id, task: task)
        }
        var kept: [NewEvent] = []
        for var event in events {
            if let seq = event.payload["runner_seq"]?.intValue {
                if let last, seq <= last { continue }
                last = seq
            }
            event.payload["runner_id"] = .string(id.rawValue)
            if event.type == .gateResult, case .string(let name)? = event.payload["gate_name"] {
                let report = GateReport(
                    passed: event.payload["passed"] == true, exitCode: event.payload["exit_code"]?.intValue.map { Int32(clamping: $0) },
                    ending: { if case .string(let ending)? = event.payload["ending"] { ending } else { nil } }(),
                    outputTail: { if case .string(let tail)? = event.payload["output_tail"] { tail } else { "" } }())
                reportedGates.withLock { $0[id, default: [:]][name] = report }
            }
            if event.type == .agentLimit { noteLimit(id, event.payload) }
            kept.append(event)
        }
        if let last { reportSeqs.withLock { $0[id] = last } }
        return kept
    }

    /// A runner's exit reached the engine: what was kept for it goes; a failure is kept for its
    /// task's next attempt.
    func forgetRunner(_ id: RunnerID, _ exit: RunnerExit) {
        reportSeqs.withLock { _ = $0.removeValue(forKey: id) }
        reportedGates.withLock { _ = $0.removeValue(forKey: id) }
        agents.limits.withLock { _ = $0.removeValue(forKey: id) }
        adoptedRunners.withLock { _ = $0.remove(id) }
        let launch = launched.withLock { $0.removeValue(forKey: id) }?.launch
        guard let row = runnerRow(of: id) else { return }
        guard !exit.succeeded else {
            lastFailures.withLock { _ = $0.removeValue(forKey: row.task) }
            return
        }
        // Stopped by a usage limit: not the agent's failure; the one before stays the one to tell.
        if case .usageLimited = exit { return }
        var failure: [String: JSONValue] = ["attempt": .int(row.attempt), "runner_id": .string(id.rawValue), "reason": .string(exit.reason)]
        switch exit {
        case .gateFailed(let gate):
            failure["gate"] = .string(gate.gate)
            failure["exit_code"] = gate.exitCode.map { .int(Int($0)) } ?? .null
            failure["output_tail"] = .string(gate.outputTail)
        case .exited(let code):
            failure["exit_code"] = .int(Int(code))
            failure["output_tail"] = .string(Self.tail(of: launch?.logPath ?? row.logPath ?? paths.logFile(for: id)))
        default:
            failure["output_tail"] = .string(Self.tail(of: launch?.logPath ?? row.logPath ?? paths.logFile(for: id)))
        }
        lastFailures.withLock { $0[row.task] = failure }
    }

    /// How the task's last attempt failed: as noted here, else as the registry has it.
    func previousFailure(of task: TaskKey, attempt: Int) -> [String: JSONValue]? {
        if let noted = lastFailures.withLock({ $0[task] }) { return noted }
        guard attempt > 1 else { return nil }
        let query = EventQuery(spec: task.spec, task: task.id, type: .runnerFinished, limit: 1, newestFirst: true)
        guard let finished = (try? registry.events(query))?.first?.payload, finished["success"] == false else { return nil }
        var failure: [String: JSONValue] = [
            "attempt": finished["attempt"] ?? .null, "runner_id": finished["runner_id"] ?? .null,
            "reason": finished["failure_reason"] ?? .null,
            "exit_code": finished["gate_exit_code"] ?? finished["exit_code"] ?? .null,
        ]
        if let gate = finished["gate"] { failure["gate"] = gate }
        if let tail = finished["gate_output_tail"] { failure["output_tail"] = tail }
        return failure
    }
}
