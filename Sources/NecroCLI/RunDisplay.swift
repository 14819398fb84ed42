import Foundation
import NecroCore
import NecroWorkspaces
import NecroDispatcher
import NecroRegistry
import Synchronization

/// "14:03:27", local time.
func clockTime(_ date: Date) -> String {
    let formatter = DateFormatter()
    formatter.dateFormat = "HH:mm:ss"
    return formatter.string(from: date)
}


/// A sentence for the events a person wants to see, nil for the rest.
func describe(_ e: EventRecord) -> String? {
    let p = e.payload
    func text(_ key: String) -> String { p[key]?.stringValue ?? p[key].map { "\($0)" } ?? "?" }
    func seconds(_ key: String) -> String { p[key]?.doubleValue.map { String(format: "%.1f s", $0) } ?? "?" }
    switch e.type {
    case .taskAssigned: return "started on \(text("pool_name")), attempt \(p["attempt"]?.intValue ?? 1)"
    case .taskCompleted: return p["group"] == true ? "done (all its tasks are)" : "done in \(seconds("execution_time_seconds"))"
    case .runnerFinished where p["interrupted"] == true: return "stopped by the shutdown; it will run again"
    case .runnerFinished where p["success"] == false: return "attempt failed: \(text("failure_reason"))"
    case .taskRetryScheduled where p["requested"] == nil: return "retrying in \(seconds("delay_seconds"))"
    case .taskFailed where p["not_started"] == true: return "FAILED, not started: \(text("failure_reason"))"
    case .taskFailed: return "FAILED after \(counted(p["attempts"]?.intValue ?? (p["retry_count"]?.intValue ?? 0) + 1, "attempt")): \(text("failure_reason"))"
    case .taskBlocked: return p["reason"].map { "blocked: \($0.stringValue ?? "")" }
    case .runnerTimedOut: return "stopping the runner: \(text("reason"))"
    case .taskCancelled: return "cancelled"
    case .taskSkipped: return "skipped: optional (--with-optional runs it)"
    case .taskSkillUnmapped: return "warning: no pool serves skill \(text("skill")); its tasks go to the default pool (skill_mapping maps skills to pools)"
    case .taskWorkCommitted: return "committed what the agent left uncommitted: \(text("commit").prefix(7)) on \(text("branch"))"
    case .attemptSaved: return "saved the attempt's uncommitted work under \(text("ref"))"
    case .slotAllocationFailed: return "slot \(text("slot_id")) could not be prepared: \(text("reason"))"
    case .slotMergeConflict: return "merge conflict with \(text("dependency")) in \(p["files"]?.arrayValue?.compactMap(\.stringValue).joined(separator: ", ") ?? "?"): resolve it on \(text("branch")), then necro retry"
    case .runnerAdopted:
        let which = p["handle"]?.stringValue.map { "container \($0.prefix(12))" } ?? "pid \(p["pid"]?.intValue.map(String.init) ?? "?")"
        return "adopted: still running from the previous dispatcher (\(which))"
    case .recoveryRequeued: return "requeued after the previous dispatcher stopped"
    case .recoveryDetected: return "recovery: \(counted(p["expired_count"]?.intValue ?? 0, "task")) left running"
    case .dispatcherStarted: return "dispatcher started (\(text("scheduling_policy")), \(counted(p["tasks"]?.intValue ?? 0, "task")))"
    case .tasksWaitingOnPool:
        let pools = (p["pools"]?.arrayValue ?? []).compactMap(\.stringValue)
        let tasks = (p["tasks"]?.arrayValue ?? []).compactMap(\.stringValue)
        let count = p["count"]?.intValue ?? tasks.count
        let shown = tasks.joined(separator: ", ") + (count > tasks.count ? ", …" : "")
        let where_ = pools.count == 1 ? "pool \(pools[0]), which is disabled" : "pools \(pools.joined(separator: ", ")), which are disabled"
        return "waiting: \(counted(count, "task")) (\(shown)) can only go to \(where_): `\(text("hint"))` lets them start"
    case .dispatcherStopping:
        let grace = p["kill_grace_seconds"]?.doubleValue.map { "\(Int($0)) s" } ?? "the grace"
        return "stopping \(counted(p["runners"]?.intValue ?? 0, "runner")) now: the graceful period is over (SIGTERM, then SIGKILL after \(grace))"
    case .dispatcherStopped: return p["interrupted"] == true ? "dispatcher stopped before the end" : "dispatcher finished"
    default: return nil
    }
}

/// The runners a live display shows, each with the last line it printed.
///
/// A runner's output is published as it is read, its assignment once the turn that made it is
/// recorded: the first line can come before the runner is known. It is kept until then.
struct LiveRunners {
    struct Runner {
        var task: TaskID
        var pool: String
        var started: Date
        var lastLine = ""
    }

    private(set) var running: [RunnerID: Runner] = [:]
    /// Last lines of runners whose assignment has not come yet.
    private var early: [RunnerID: String] = [:]

    mutating func assigned(_ id: RunnerID, task: TaskID, pool: String, at time: Date) {
        running[id] = Runner(task: task, pool: pool, started: time, lastLine: early.removeValue(forKey: id) ?? "")
    }

    mutating func finished(_ id: RunnerID) {
        running[id] = nil
        early[id] = nil
    }

    mutating func output(_ id: RunnerID, _ line: String) {
        if running[id] != nil {
            running[id]!.lastLine = line
        } else {
            early[id] = line
        }
    }
}

/// Shows a run as it goes.
final class RunDisplay: Sendable {
    enum Mode { case json, plain, terminal }

    private struct State {
        var counts: [TaskState: Int] = [:]
        var runners = LiveRunners()
        var drawnLines = 0
        var lastDraw = Date.distantPast
        /// Set when the run ends: the live block is gone for good.
        var finished = false
    }

    private let mode: Mode
    private let spec: TaskSetSpec
    private let started = Date()
    private let state = Mutex(State())

    /// - Parameter records: the tasks as the run starts, so that those already done count.
    init(mode: Mode, spec: TaskSetSpec, records: [TaskRecord]) {
        self.mode = mode
        self.spec = spec
        let done = records.filter { $0.state == .done && !$0.task.isGroup }.count
        state.withLock { $0.counts[.done] = done }
    }

    func follow(_ updates: AsyncStream<Dispatcher<ContinuousClock>.Update>) async {
        let ticker = mode == .terminal ? Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))  // redraws the elapsed times: a display clock, not a poll of state
                draw(force: true)
            }
        } : nil
        defer { ticker?.cancel() }
        for await update in updates {
            switch update {
            case .events(let events): events.forEach(show)
            case .output(let runner, let line): state.withLock { $0.runners.output(runner, line) }
            case .finished:
                clear()
                state.withLock { $0.finished = true }
                return
            }
            draw(force: false)
        }
    }

    private func show(_ event: EventRecord) {
        switch mode {
        case .json:
            print(event.json.jsonText)
            fflush(nil)
        case .plain, .terminal:
            track(event)
            guard let text = describe(event) else { return }
            let time = clockTime(Date(timeIntervalSince1970: event.timestamp.secondsSince1970))
            let line = "\(time)  \(event.taskID.map { "\($0.rawValue)  " } ?? "")\(text)"
            if mode == .terminal { clear() }
            print(line)
            fflush(nil)
        }
    }

    /// A line of the run's own (what a signal does), with the time, where event lines go: above the
    /// live block on a terminal (a line printed under it would be erased by the next redraw), on
    /// standard error with --json (standard output is for events).
    func say(_ text: String) {
        let line = "\(clockTime(Date()))  \(text)"
        switch mode {
        case .json:
            printError(line)
        case .plain, .terminal:
            clear()
            print(line)
            fflush(nil)
            draw(force: true)
        }
    }

    private func track(_ event: EventRecord) {
        state.withLock { state in
            if event.type == .taskAssigned, let id = event.payload["runner_id"]?.stringValue, let task = event.taskID {
                state.runners.assigned(RunnerID(id), task: task, pool: event.payload["pool_name"]?.stringValue ?? "?", at: Date())
            }
            if event.type == .runnerFinished, let id = event.payload["runner_id"]?.stringValue {
                state.runners.finished(RunnerID(id))
            }
            if event.type == .taskCompleted, event.payload["group"] == nil { state.counts[.done, default: 0] += 1 }
            if event.type == .taskFailed { state.counts[.failed, default: 0] += 1 }
            if event.type == .taskSkipped { state.counts[.skipped, default: 0] += 1 }
        }
    }

    /// Erases the live block, so that log lines print above it.
    private func clear() {
        guard mode == .terminal else { return }
        let lines = state.withLock { state -> Int in
            defer { state.drawnLines = 0 }
            return state.drawnLines
        }
        if lines > 0 { print("\u{1B}[\(lines)A\u{1B}[J", terminator: "") }
    }

    private func draw(force: Bool) {
        guard mode == .terminal else { return }
        let now = Date()
        let snapshot = state.withLock { state -> State? in
            guard !state.finished, force || now.timeIntervalSince(state.lastDraw) > 0.1 else { return nil }
            state.lastDraw = now
            return state
        }
        guard let snapshot else { return }
        clear()
        let total = spec.tasks.filter { !$0.isGroup }.count
        var lines = [
            "── \(spec.name): \(snapshot.counts[.done] ?? 0)/\(total) done, \(snapshot.runners.running.count) running, "
                + "\(snapshot.counts[.failed] ?? 0) failed · \(Int(now.timeIntervalSince(started))) s"
        ]
        for (_, runner) in snapshot.runners.running.sorted(by: { $0.value.task < $1.value.task }).prefix(20) {
            let elapsed = Int(now.timeIntervalSince(runner.started))
            lines.append("   \(runner.task)  \(runner.pool)  \(elapsed) s  \(runner.lastLine.prefix(80))")
        }
        print(lines.joined(separator: "\n"))
        fflush(nil)
        state.withLock { $0.drawnLines = lines.count }
    }

    /// The end of a run: counts, failures and why, what could not run and what it waits on.
    /// The run's summary; `fromRegistry`: its counts are the registry's, not the run's (records
    /// the registry has not taken: it never claims more than it holds).
    func summary(_ outcome: RunOutcome, registry: SQLiteRegistry, fromRegistry: Bool = false) {
        let records = Dictionary(((try? registry.tasks(spec: spec.name)) ?? []).map { ($0.task.id, $0) }) { first, _ in first }
        var tally = outcome.counts
        if fromRegistry {
            tally = [:]
            for record in records.values where !record.task.isGroup { tally[record.state, default: 0] += 1 }
        }
        let counts = TaskState.allCases.compactMap { state in tally[state].map { "\($0) \(state.rawValue)" } }
        var lines = ["\(spec.name): \(counts.joined(separator: ", ")) in \(Int(Date().timeIntervalSince(started))) s\(fromRegistry ? " (as recorded)" : "")"]
        for key in outcome.failed {
            lines.append("  failed   \(key.id): \(records[key.id]?.reason ?? "?")")
        }
        let skipped = records.values.filter { $0.state == .skipped }.map(\.task.id).sorted()
        if !skipped.isEmpty {
            let shown = skipped.prefix(20).map(\.rawValue).joined(separator: ", ") + (skipped.count > 20 ? ", …" : "")
            lines.append("  skipped  \(shown): optional; necro run --with-optional runs them")
        }
        for stuck in outcome.stuck {
            let waits = stuck.waitingOn.isEmpty ? "" : " (waits on \(stuck.waitingOn.map(\.rawValue).joined(separator: ", ")))"
            lines.append("  not run  \(stuck.task.id): \(stuck.reason)\(waits)")
        }
        if outcome.interrupted { lines.append("  stopped by a signal: run `necro run` again to resume") }
        let text = lines.joined(separator: "\n")
        if mode == .json { printError(text) } else { print(text) }
    }

    /// The branch holding every done task's work, or why it stops short.
    func result(_ result: (branch: String, assembly: RepoPool.Assembly, total: Int)) {
        let text: String
        switch result.assembly {
        case .assembled(let merged, let commit):
            text = "result: \(result.branch) \(commit), every done task's work merged (\(merged.count) task\(merged.count == 1 ? "" : "s"))"
        case .conflict(let merged, let task, let files):
            text =
                "result: \(result.branch) stops before \(task): merging it conflicts in \(files.prefix(10).joined(separator: ", "))\(files.count > 10 ? ", …" : "") (\(merged.count) of \(counted(result.total, "task")) merged; nothing forced)"
        case .failed(let reason):
            text = "result: \(result.branch) could not be made: \(reason)"
        }
        if mode == .json { printError(text) } else { print(text) }
    }

    /// The branches the run produced, one line per task.
    func branches(_ branches: [RepoPool.TaskBranch], base: String) {
        var lines = ["branches (\(branches.count), from \(base)):"]
        let width = branches.map(\.branch.count).max() ?? 0
        for branch in branches {
            let ahead = branch.ahead.map { " +\($0)" } ?? ""
            lines.append("  \(branch.branch.padding(toLength: width, withPad: " ", startingAt: 0))  \(branch.commit)\(ahead)  \(branch.subject)")
        }
        let text = lines.joined(separator: "\n")
        if mode == .json { printError(text) } else { print(text) }
    }
}
