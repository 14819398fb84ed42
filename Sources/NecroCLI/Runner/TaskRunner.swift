import CNecroSystem
import Foundation
import NecroCore
import NecroRegistry
import NecroWorkspaces
import Synchronization

/// What `necro runner` is given in `TASK_CONTEXT`, read once.
struct RunnerContext {
    var spec: String
    var runner: String
    var attempt: Int
    var taskID: String
    var title: String
    var steps: [(title: String, done: Bool)]
    var gates: [[String]]
    var work: String
    var checkpoint: [String: JSONValue]?
    var heartbeatTimeout: Double
    var gateTimeout: Double
    var agent: [String]
    /// The rest of the agent's settings: resume arguments, how the prompt goes, its template.
    var agentSettings: AgentConfiguration
    /// The whole `TASK_CONTEXT`, which the prompt is rendered from.
    var root: [String: JSONValue]
    var stepsEach: Bool
    var stallTimeout: Double
    /// Whether the last attempt failed (`previous_failure`).
    var previousFailure: Bool

    struct Invalid: Error, CustomStringConvertible {
        var description: String
    }

    init(json text: String, currentDirectory: String) throws {
        guard case .success(.object(let root)) = JSONDocument.parse(text) else {
            throw Invalid(description: "TASK_CONTEXT is not a JSON object: necro runner runs as a pool's command, started by a dispatcher")
        }
        func string(_ value: JSONValue?) -> String? { if case .string(let text)? = value { text } else { nil } }
        func strings(_ value: JSONValue?) -> [String] {
            guard case .array(let items)? = value else { return [] }
            return items.compactMap(string)
        }
        guard let spec = string(root["spec"]), let runner = string(root["runner_id"]), case .object(let task)? = root["task"],
            let id = string(task["id"])
        else { throw Invalid(description: "TASK_CONTEXT lacks spec, runner_id or task.id") }
        self.spec = spec
        self.runner = runner
        attempt = root["attempt"]?.intValue ?? 1
        taskID = id
        title = string(task["title"]) ?? id
        if case .array(let items)? = task["steps"] {
            steps = items.compactMap { item in
                guard case .object(let step) = item, let title = string(step["title"]) else { return nil }
                return (title, step["done"] == true)
            }
        } else {
            steps = []
        }
        if case .array(let items)? = task["gates"] { gates = items.map(strings).filter { !$0.isEmpty } } else { gates = [] }
        if case .object(let slot)? = root["slot"], let path = string(slot["path"]), !path.isEmpty {
            work = path.hasPrefix("/") ? path : currentDirectory + "/" + path
        } else {
            work = currentDirectory
        }
        if case .object(let checkpoint)? = root["checkpoint"] { self.checkpoint = checkpoint }
        if case .object? = root["previous_failure"] { previousFailure = true } else { previousFailure = false }
        heartbeatTimeout = root["heartbeat_timeout_seconds"]?.doubleValue ?? 60
        gateTimeout = root["gate_timeout_seconds"]?.doubleValue ?? 1800
        var agent: [String] = []
        var stepsEach = false
        var stall = 900.0
        var settings = AgentConfiguration(command: [])
        if case .object(let fields)? = root["agent"] {
            agent = strings(fields["command"])
            stepsEach = string(fields["steps"]) == "each"
            stall = fields["stall_timeout_seconds"]?.doubleValue ?? stall
            settings.resume = strings(fields["resume"])
            settings.promptVia = string(fields["prompt_via"]).flatMap(AgentConfiguration.PromptVia.init(rawValue:))
            settings.promptTemplate = string(fields["prompt_template"])
            settings.preset = string(fields["preset"])
        }
        self.agent = agent
        self.agentSettings = settings
        self.root = root
        self.stepsEach = stepsEach
        stallTimeout = stall
    }
}

/// `necro runner`'s work for one attempt: the agent run in the task's folder, its work items
/// followed and checkpointed, its gates run, and every step reported to the dispatcher as the
/// instrumentation design's events (`main` span, `work_<id>` child spans).
final class TaskRunner: Sendable {
    let context: RunnerContext
    let reporter: EventReporter
    let store: CheckpointStore?
    let environment: [String: String]
    /// The work items and the last checkpoint, changed by the agent's reports and by the runner.
    private let progress: Mutex<(items: WorkItems, last: CheckpointStore.Checkpoint?)>
    /// The process group of the child running now, the agent or a gate (0: none).
    private let childGroup = Atomic<Int32>(0)
    /// Output bytes the agent wrote: a sign of activity.
    private let outputBytes = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Checkpoints this attempt took.
    private let checkpointsTaken = Atomic<Int>(0)
    /// What the agent said of itself (its structured output), this attempt.
    private let said: Mutex<AgentState>

    struct AgentState {
        /// Its session: the one to resume, then the one it reports.
        var session: String?
        /// Whether the run going on now reported its session.
        var sessionThisRun = false
        /// Its to-do items by text: number and status.
        var todos: [String: (number: Int, status: AgentTodo.Status)] = [:]
        var usage = AgentUsage()
        /// A provider's limit it met, this run.
        var limit: UsageLimitNotice?
    }

    init(context: RunnerContext, environment: [String: String]) {
        self.context = context
        self.environment = environment
        var store: CheckpointStore?
        do {
            store = try CheckpointStore(folder: context.work, spec: context.spec, task: context.taskID)
        } catch {
            FileHandle.standardError.write(Data("necro runner: no checkpoints for this attempt: \(error)\n".utf8))
        }
        self.store = store
        let spool = (store?.stateDirectory ?? NSTemporaryDirectory()) + "/" + RunnerSpool.fileName(of: RunnerID(context.runner))
        let call = RunnerCall(environment: environment)
        if call == nil {
            FileHandle.standardError.write(
                Data("necro runner: no dispatcher to report to (NECRO_RUNNER_TOKEN with NECRO_API_SOCKET or NECRO_API_URL): the agent runs, its events are not recorded\n".utf8))
        }
        reporter = EventReporter(call: call, runner: context.runner, spoolPath: spool)
        progress = Mutex((WorkItems(steps: context.steps, taskTitle: context.title), nil))
        said = Mutex(AgentState(session: context.checkpoint?["agent_session"]?.stringValue))
    }

    /// Runs the attempt; the process's exit status.
    func run(flushSeconds: Double) -> Int32 {
        let pid = Int(getpid())
        reporter.emit(
            .runnerSpawn,
            [
                "runner_pid": .int(pid), "runner_version": .string(Necro.configuration.version), "attempt": .int(context.attempt),
                "agent": .array(context.agent.map(JSONValue.string)),
                "explanation": .string("necro runner started for attempt \(context.attempt) of task \(context.taskID)"),
            ])
        // Planning: where the attempt starts from.
        phase(.phaseEnter, "planning")
        resume()
        phase(.phaseExit, "planning")

        let forwarder = forwardTermination()
        defer { forwarder.cancel() }
        var control: RunnerControl?
        do {
            control = try RunnerControl(path: NSTemporaryDirectory() + "necro-runner-\(pid).sock") { [self] in answer($0) }
        } catch {
            FileHandle.standardError.write(Data("necro runner: the agent cannot report its steps (necro step): \(error)\n".utf8))
        }
        defer { control?.stop() }
        let lease = keepLease()
        defer { lease.cancel() }

        phase(.phaseEnter, "executing")
        let (agentStatus, iterations) = context.stepsEach ? runEachStep(control: control) : runOnce(control: control)
        if agentStatus == 0 && checkpointsTaken.load(ordering: .relaxed) == 0 && store != nil {
            // Every step was done before (a resumed attempt fixing what its gate said): what the
            // agent did now is kept too.
            let message = "the agent's work at its end"
            reportCheckpoint(capture(after: nil, message: message), after: nil, message: message, type: "final")
        }
        phase(.phaseExit, "executing")

        var exitReason = agentStatus == 0 ? "done" : "agent failed with status \(agentStatus)"
        var status = agentStatus
        let (limit, usage, session) = said.withLock { ($0.limit, $0.usage, $0.session) }
        if let limit, agentStatus != 0, !stopping.load(ordering: .relaxed) {
            // The agent failed on a limit (one it got past does not count): not its failure; the
            // dispatcher tries again once the limit resets.
            exitReason = "usage limit: \(limit.message)"
            status = Self.usageLimitStatus
        }
        if status == 0 && !context.gates.isEmpty {
            phase(.phaseEnter, "verifying")
            for gate in context.gates where !stopping.load(ordering: .relaxed) {
                if !runGate(gate) {
                    exitReason = "gate failed: \(GateFailure.name(gate))"
                    status = 1
                    break
                }
            }
            phase(.phaseExit, "verifying")
        }
        if stopping.load(ordering: .relaxed) && status == 0 { status = 143 }
        reporter.emit(
            .runnerExit,
            [
                "runner_pid": .int(pid), "exit_reason": .string(exitReason), "iterations": .int(iterations), "exit_code": .int(Int(status)),
                "peak_rss_kb": Activity.peakResidentKB().map { .int($0) } ?? .null,
                "agent_usage": usage.isEmpty ? .null : .object(usage.json), "agent_session": session.map(JSONValue.string) ?? .null,
                "explanation": .string("necro runner ends: \(exitReason)"),
            ])
        if !reporter.flush(seconds: flushSeconds) {
            FileHandle.standardError.write(Data("necro runner: some events could not be sent; they are in \(reporter.spoolPath)\n".utf8))
        }
        return status
    }

    /// The runner's exit status when the agent met a usage limit (EX_TEMPFAIL).
    static let usageLimitStatus: Int32 = 75

    private func phase(_ type: EventType, _ name: String) {
        let entering = type == .phaseEnter
        reporter.emit(
            type, phase: name,
            ["phase": .string(name), "explanation": .string(entering ? "entering the \(name) phase" : "leaving the \(name) phase")])
    }

    // MARK: Resume

    /// Goes on from the task's last checkpoint, if the dispatcher gave one and it reads back as
    /// recorded: the folder's files as they were then, its work items done.
    private func resume() {
        guard let checkpoint = context.checkpoint, let store, case .string(let ref)? = checkpoint["ref"],
            case .string(let commit)? = checkpoint["commit"], case .string(let tree)? = checkpoint["tree"]
        else { return }
        let id = checkpoint["checkpoint_id"] ?? .null
        let type = checkpoint["checkpoint_type"] ?? "work_item"
        switch store.verify(ref: ref, commit: commit, tree: tree) {
        case .invalid(let why):
            reporter.emit(
                .checkpointInvalid, actor: "checkpoint_manager",
                [
                    "checkpoint_id": id, "checkpoint_type": type, "verified": false, "reason": .string(why),
                    "explanation": .string("the last checkpoint cannot be read back (\(why)): the attempt starts clean"),
                ])
            return
        case .verified:
            reporter.emit(
                .checkpointVerified, actor: "checkpoint_manager",
                ["checkpoint_id": id, "checkpoint_type": type, "verified": true, "explanation": "the last checkpoint reads back as recorded"])
        }
        do {
            try store.restore(commit: commit)
        } catch {
            reporter.emit(
                .checkpointInvalid, actor: "checkpoint_manager",
                [
                    "checkpoint_id": id, "checkpoint_type": type, "verified": false, "reason": .string("\(error)"),
                    "explanation": .string("the last checkpoint could not be restored (\(error)): the attempt starts from the branch as it is"),
                ])
            return
        }
        var done: Set<String> = []
        if case .array(let items)? = checkpoint["work_items_done"] {
            for case .string(let item) in items { done.insert(item) }
        }
        progress.withLock { progress in
            progress.items = WorkItems(steps: context.steps, taskTitle: context.title, done: done)
            progress.last = CheckpointStore.Checkpoint(
                sequence: checkpoint["sequence_number"]?.intValue ?? 0, ref: ref, commit: commit, tree: tree, filesChanged: [])
        }
        reporter.emit(
            .recoveryResumedFromCheckpoint, phase: "recovery",
            [
                "checkpoint_id": id, "checkpoint_type": type, "sequence_number": checkpoint["sequence_number"] ?? .null,
                "work_item_id": checkpoint["work_item_id"] ?? .null, "work_items_done": .array(done.sorted().map(JSONValue.string)),
                "explanation": .string("attempt \(context.attempt) goes on from checkpoint \(checkpoint["sequence_number"]?.intValue ?? 0): its files are restored, its done work items are not done again"),
            ])
    }

    // MARK: Work items

    /// The agent once for the whole task: work items as it reports them, the rest done at its exit 0.
    private func runOnce(control: RunnerControl?) -> (Int32, Int) {
        report(progress.withLock { $0.items.startNext() })
        let status = runAgent(step: nil, control: control)
        if status == 0 {
            finishRemaining()
        } else {
            report(progress.withLock { $0.items.failStarted("the agent exited with status \(status)") })
        }
        return (status, 1)
    }

    /// The agent once per step not done yet, a checkpoint after each. With every step done and a
    /// failure to fix (a gate that failed on them), once more, with no step.
    private func runEachStep(control: RunnerControl?) -> (Int32, Int) {
        var iterations = 0
        if progress.withLock({ $0.items.allDone }), context.previousFailure {
            return (runAgent(step: nil, control: control), 1)
        }
        while !stopping.load(ordering: .relaxed), let next = progress.withLock({ $0.items.remaining.first }) {
            report(progress.withLock { (try? $0.items.start(next.number)) ?? [] })
            iterations += 1
            let status = runAgent(step: next.number, control: control)
            guard status == 0 else {
                report(progress.withLock { $0.items.failStarted("the agent exited with status \(status) on step \(next.number)") })
                return (status, iterations)
            }
            // Done unless the agent said so itself (and was checkpointed then).
            report(progress.withLock { (try? $0.items.finish(next.number)) ?? [] })
        }
        return (stopping.load(ordering: .relaxed) ? 143 : 0, iterations)
    }

    private func finishRemaining() {
        while let next = progress.withLock({ $0.items.remaining.first }) {
            report(progress.withLock { (try? $0.items.finish(next.number)) ?? [] })
        }
    }

    /// Records changes to work items; a checkpoint follows each item done.
    private func report(_ changes: [WorkItems.Change]) {
        for change in changes {
            switch change {
            case .dispatched(let item):
                reporter.emit(
                    .workItemDispatched, phase: "executing",
                    [
                        "work_item_id": .string(item.id), "title": .string(item.title), "index": .int(item.number),
                        "explanation": .string("step \(item.number) of the task is handed to the agent"),
                    ])
            case .started(let item):
                reporter.emit(
                    .workItemStart, span: item.span, parent: "main", phase: "executing", actor: "worker",
                    ["work_item_id": .string(item.id), "work_type": "step", "explanation": .string("the agent works on step \(item.number): \(item.title)")])
                reporter.emit(
                    .leaseAcquired, span: item.span, parent: "main", phase: "executing", actor: "lease_manager",
                    [
                        "work_item_id": .string(item.id), "lease_holder": .string(context.runner),
                        "lease_duration_seconds": .double(context.heartbeatTimeout),
                        "explanation": "the runner holds the task's lease while the agent is active",
                    ])
            case .done(let item):
                // The checkpoint is taken first: it says which files the step changed.
                let taken = capture(after: item, message: "step \(item.number) done: \(item.title)")
                let files = (try? taken.get().checkpoint.filesChanged) ?? []
                reporter.emit(
                    .workItemDone, span: item.span, parent: "main", phase: "executing", actor: "worker",
                    [
                        "work_item_id": .string(item.id), "title": .string(item.title),
                        "files_changed": .array(files.prefix(200).map(JSONValue.string)),
                        "explanation": .string("step \(item.number) is done"),
                    ])
                reportCheckpoint(taken, after: item, message: "step \(item.number) done")
            case .failed(let item, let error):
                reporter.emit(
                    .workItemFailed, span: item.span, parent: "main", phase: "executing", actor: "worker",
                    ["work_item_id": .string(item.id), "title": .string(item.title), "error": .string(error), "explanation": .string("step \(item.number) failed: \(error)")])
            }
        }
    }

    // MARK: Checkpoints

    struct Taken {
        var checkpoint: CheckpointStore.Checkpoint
        var verification: CheckpointStore.Verification
        var done: [String]
    }

    struct NotTaken: Error, CustomStringConvertible {
        var description: String
    }

    /// Takes a checkpoint of the folder and reads it back; `reportCheckpoint` reports it.
    private func capture(after item: WorkItems.Item?, message: String) -> Result<Taken, NotTaken> {
        guard let store else { return .failure(NotTaken(description: "no checkpoints here (no git)")) }
        let (previous, done) = progress.withLock { ($0.last, $0.items.doneIDs) }
        do {
            let checkpoint = try store.take(
                message: "necro checkpoint: task \(context.taskID), attempt \(context.attempt): \(message)\n\nrunner \(context.runner)", after: previous)
            let verification = store.verify(ref: checkpoint.ref, commit: checkpoint.commit, tree: checkpoint.tree)
            checkpointsTaken.add(1, ordering: .relaxed)
            return .success(Taken(checkpoint: checkpoint, verification: verification, done: done))
        } catch {
            return .failure(NotTaken(description: "\(error)"))
        }
    }

    /// Takes a checkpoint and reports it: the agent's `necro checkpoint`; the answer to give.
    func takeCheckpoint(after item: WorkItems.Item?, message: String) -> String {
        reportCheckpoint(capture(after: item, message: message), after: item, message: message, type: "agent")
    }

    /// `checkpoint_begin`, then `checkpoint_commit` and `checkpoint_verified` (or
    /// `checkpoint_invalid`); the answer to give an agent that asked.
    @discardableResult
    private func reportCheckpoint(_ taken: Result<Taken, NotTaken>, after item: WorkItems.Item?, message: String, type: String = "work_item") -> String {
        reporter.emit(
            .checkpointBegin, phase: "execution", actor: "checkpoint_manager",
            [
                "step_id": item.map { .string($0.id) } ?? .null, "checkpoint_type": .string(type), "work_item_id": item.map { .string($0.id) } ?? .null,
                "explanation": .string("checkpoint: \(message)"),
            ])
        let result: Taken
        switch taken {
        case .failure(let error):
            reporter.emit(
                .checkpointInvalid, phase: "execution", actor: "checkpoint_manager",
                [
                    "checkpoint_id": .null, "checkpoint_type": .string(type), "verified": false, "reason": .string("\(error)"),
                    "explanation": .string("the checkpoint could not be taken: \(error)"),
                ])
            return "error: \(error)"
        case .success(let taken):
            result = taken
        }
        let checkpoint = result.checkpoint
        let done = result.done
        let id = "\(context.taskID)#\(checkpoint.sequence)"
        let evidence = checkpoint.filesChanged.prefix(200).map(JSONValue.string)
        reporter.emit(
            .checkpointCommit, phase: "execution", actor: "checkpoint_manager",
            [
                "checkpoint_id": .string(id), "checkpoint_type": .string(type), "sequence_number": .int(checkpoint.sequence),
                "evidence_count": .int(checkpoint.filesChanged.count), "files_changed": .array(Array(evidence)),
                "ref": .string(checkpoint.ref), "commit": .string(checkpoint.commit), "tree": .string(checkpoint.tree),
                "work_item_id": item.map { .string($0.id) } ?? .null, "step_id": item.map { .string($0.id) } ?? .null,
                "work_items_done": .array(done.map(JSONValue.string)), "attempt": .int(context.attempt),
                "agent_session": said.withLock { $0.session }.map(JSONValue.string) ?? .null,
                "explanation": .string("the folder's state is kept under \(checkpoint.ref): a later attempt goes on from here"),
            ])
        switch result.verification {
        case .verified:
            progress.withLock { $0.last = checkpoint }
            reporter.emit(
                .checkpointVerified, phase: "execution", actor: "checkpoint_manager",
                [
                    "checkpoint_id": .string(id), "checkpoint_type": .string(type), "verified": true, "evidence_count": .int(checkpoint.filesChanged.count),
                    "explanation": "read back: its ref names the commit, whose tree is the one written",
                ])
            return "ok checkpoint \(checkpoint.sequence) \(checkpoint.ref)"
        case .invalid(let why):
            reporter.emit(
                .checkpointInvalid, phase: "execution", actor: "checkpoint_manager",
                ["checkpoint_id": .string(id), "checkpoint_type": .string(type), "verified": false, "reason": .string(why), "explanation": .string("the checkpoint does not read back: \(why)")])
            return "error: \(why)"
        }
    }

    // MARK: The agent's reports

    /// `step start N`, `step done N`, `checkpoint [MESSAGE]`: the answer to give, once what it
    /// made is recorded (or waits in the spool).
    private func answer(_ request: String) -> String {
        let answer = take(request)
        reporter.waitDelivered(before: reporter.nextSeq, seconds: 30)
        return answer
    }

    private func take(_ request: String) -> String {
        let words = request.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        switch words.first {
        case "step":
            guard words.count == 3, let number = Int(words[2]), words[1] == "start" || words[1] == "done" else {
                return "error: expected step start N or step done N"
            }
            do {
                let (wasDone, changes) = try progress.withLock { progress throws(WorkItems.Refusal) in
                    let wasDone = progress.items.isDone(number) == true
                    return (wasDone, words[1] == "start" ? try progress.items.start(number) : try progress.items.finish(number))
                }
                report(changes)
                if wasDone { return "ok step \(number) was done already (NECRO_DONE_STEPS)" }
                return "ok step \(number) \(words[1] == "start" ? "started" : "done")"
            } catch {
                return "error: \(error)"
            }
        case "checkpoint":
            let message = words.dropFirst().joined(separator: " ")
            let current = progress.withLock { $0.items.current }
            return takeCheckpoint(after: current, message: message.isEmpty ? "asked by the agent" : message)
        default:
            return "error: unknown request (expected step start N, step done N or checkpoint)"
        }
    }

    // MARK: Processes

    /// Runs the agent in the task's folder, its output passed through; its exit status (128 + N
    /// when killed by signal N). It talks to this runner (`NECRO_RUNNER_CONTROL`), not to the
    /// dispatcher: it is not given the runner's token, so what the runner reports (its gates
    /// above all) is the runner's word.
    private func runAgent(step: Int?, control: RunnerControl?) -> Int32 {
        var environment = environment
        for name in ["NECRO_RUNNER_TOKEN", "NECRO_API_URL", "NECRO_API_SOCKET"] { environment[name] = nil }
        environment["NECRO_RUNNER_CONTROL"] = control?.path
        // `necro step` and `necro checkpoint`: this executable, as $NECRO, and on PATH if none is.
        let own = Launchers.executable
        environment["NECRO"] = own
        environment["PATH"] = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") + ":" + (own as NSString).deletingLastPathComponent
        environment["NECRO_DONE_STEPS"] = progress.withLock { $0.items.items.filter { $0.state == .done }.map { String($0.number) }.joined(separator: ",") }
        if let step { environment["NECRO_STEP"] = String(step) }
        // The task's prompt, in a file the agent may read (`NECRO_PROMPT_FILE`), and where
        // `prompt_via` says.
        let template = context.agentSettings.promptTemplate.flatMap { try? PromptTemplate($0) } ?? .standard
        let prompt = template.render(context: context.root, step: step)
        let promptFile = (store?.stateDirectory ?? NSTemporaryDirectory()) + "/prompt-" + PathComponent.safe(context.runner) + ".md"
        if !FileManager.default.createFile(atPath: promptFile, contents: Data(prompt.utf8), attributes: [.posixPermissions: 0o600]) {
            // Without it the agent would run on no instructions, and might even pass for done.
            FileHandle.standardError.write(Data("necro runner: cannot write the prompt to \(promptFile): the agent is not started\n".utf8))
            return 1
        }
        environment["NECRO_PROMPT_FILE"] = promptFile
        var settings = context.agentSettings
        settings.command = context.agent
        while true {
            let session = said.withLock { state -> String? in
                state.sessionThisRun = false
                state.limit = nil
                return state.session
            }
            let invocation = AgentInvocation(agent: settings, prompt: prompt, promptFile: promptFile, session: session)
            let (ended, _) = runChild(invocation.argv, environment: environment, tail: nil, timeout: nil, input: invocation.stdin == nil ? nil : promptFile, agent: true)
            let status = ended.map { $0.exitCode ?? 128 + ($0.signal ?? 0) } ?? 127
            // A session that cannot be resumed (gone with an earlier container, or expired): the
            // agent starts its conversation over, once.
            let (resumedNothing, limited) = said.withLock { (!$0.sessionThisRun, $0.limit != nil) }
            if status != 0, let session, !settings.resume.isEmpty, resumedNothing, !limited, !stopping.load(ordering: .relaxed) {
                FileHandle.standardError.write(
                    Data("necro runner: the agent did not resume session \(session) (status \(status)): it starts over\n".utf8))
                said.withLock { $0.session = nil }
                continue
            }
            return status
        }
    }

    /// Runs a gate in the task's folder within the gate timeout; reports its start and result.
    private func runGate(_ argv: [String]) -> Bool {
        let name = GateFailure.name(argv)
        reporter.emit(
            .gateStart, phase: "verifying", actor: "gate_runner",
            GateEvents.start(name, timeoutSeconds: context.gateTimeout, explanation: "a DONE gate: the task is done only if it passes"))
        let started = Date()
        var environment = environment
        environment["NECRO_GATE"] = name
        let tail = Tail()
        let (ended, timedOut) = runChild(argv, environment: environment, tail: tail, timeout: context.gateTimeout)
        let outcome = GateOutcome(
            exitCode: ended?.exitCode, signal: ended?.signal, timedOut: timedOut, timeoutSeconds: context.gateTimeout,
            notStarted: ended == nil ? "cannot run \(argv[0])" : nil)
        reporter.emit(
            .gateResult, phase: "verifying", actor: "gate_runner",
            GateEvents.result(name, outcome, seconds: Date().timeIntervalSince(started), outputTail: tail.text))
        return outcome.passed
    }

    /// The last bytes a process wrote.
    final class Tail: Sendable {
        private let bytes = Mutex<(kept: [UInt8], cut: Bool)>(([], false))
        func append(_ more: ArraySlice<UInt8>) {
            bytes.withLock { bytes in
                bytes.kept += more
                if bytes.kept.count > OutputTail.limit {
                    bytes.kept.removeFirst(bytes.kept.count - OutputTail.limit)
                    bytes.cut = true
                }
            }
        }
        var text: String { bytes.withLock { OutputTail.text($0.kept, cut: $0.cut) } }
    }

    struct Ended {
        var exitCode: Int32?
        var signal: Int32?
    }

    /// Runs `argv` in the task's folder, in a process group of its own (the child a stop is
    /// passed on to, and whose CPU time keeps the lease), stdin from /dev/null, its output passed
    /// through to this runner's; stopped (SIGTERM, then SIGKILL 10 s later) after `timeout`
    /// seconds. How it ended (nil: it could not start), and whether it timed out. Its output is
    /// read until it ends, then for 2 s at most: a process it left behind holding its stdout
    /// does not hold the runner.
    private func runChild(
        _ argv: [String], environment: [String: String], tail: Tail?, timeout: Double?, input: String? = nil, agent: Bool = false
    ) -> (Ended?, Bool) {
        guard let (pid, output) = spawn(argv, environment: environment, input: input) else {
            tail?.append(ArraySlice("cannot run \(argv.first ?? "")\n".utf8))
            return (nil, false)
        }
        childGroup.store(pid, ordering: .relaxed)
        if stopping.load(ordering: .relaxed) { kill(-pid, SIGTERM) }  // a stop that came as it started
        let drained = DispatchSemaphore(value: 0)
        let reader = Thread { [self] in
            pass(output, tail: tail, agent: agent)
            drained.signal()
        }
        reader.start()
        let timedOut = Atomic<Bool>(false)
        let hardKill = DispatchWorkItem { kill(-pid, SIGKILL) }
        let stop = DispatchWorkItem {
            timedOut.store(true, ordering: .relaxed)
            kill(-pid, SIGTERM)
            DispatchQueue.global().asyncAfter(deadline: .now() + 10, execute: hardKill)
        }
        if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: stop) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Reaped: its pid may be reused from now on, so no signal goes to it any more.
        stop.cancel()
        hardKill.cancel()
        childGroup.store(0, ordering: .relaxed)
        _ = drained.wait(timeout: .now() + 2)
        let ended = (status & 0x7f) == 0 ? Ended(exitCode: (status >> 8) & 0xff) : Ended(signal: status & 0x7f)
        return (ended, timedOut.load(ordering: .relaxed))
    }

    /// Starts `argv` in the task's folder, in a process group of its own, stdin from /dev/null,
    /// stdout and stderr into one pipe: its pid and the pipe's read end.
    private func spawn(_ argv: [String], environment: [String: String], input: String? = nil) -> (pid_t, Int32)? {
        var fds: [Int32] = [0, 0]
        guard !argv.isEmpty, pipe(&fds) == 0 else { return nil }
        let inputFD = input.map { open($0, O_RDONLY | O_CLOEXEC) } ?? -1
        defer { if inputFD >= 0 { close(inputFD) } }
        var pid: pid_t = 0
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArguments.forEach { free($0) }
            cEnvironment.forEach { free($0) }
        }
        let error = necro_spawn_input(argv[0], cArguments, cEnvironment, context.work, inputFD, fds[1], fds[1], &pid)
        close(fds[1])
        guard error == 0 else {
            close(fds[0])
            FileHandle.standardError.write(Data("necro runner: cannot run \(argv[0]): \(String(cString: strerror(error)))\n".utf8))
            return nil
        }
        return (pid, fds[0])
    }

    /// Passes what a process writes to this runner's stdout (the runner's log), to its end; every
    /// byte a sign of activity. The agent's lines are read as well, for what it says of itself.
    private func pass(_ fd: Int32, tail: Tail?, agent: Bool = false) {
        var lines = agent ? AgentLines() : nil
        defer { if var rest = lines { rest.finish { take(line: $0) } } }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            var written = 0
            while written < count {
                let wrote = buffer[written..<count].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                if wrote < 0 && errno == EINTR { continue }
                if wrote <= 0 { break }
                written += wrote
            }
            outputBytes.add(count, ordering: .relaxed)
            tail?.append(buffer[0..<count])
            lines?.add(buffer[0..<count]) { take(line: $0) }
        }
        close(fd)
    }

    // MARK: What the agent says of itself

    /// One line of the agent's output: JSON lines of Claude Code or Codex, Aider's cost lines.
    /// Anything else, a line torn or not JSON at all, is output and nothing more.
    private func take(line: ArraySlice<UInt8>) {
        let now = Timestamp(secondsSince1970: Date().timeIntervalSince1970)
        let signals: [AgentSignal]
        if line.first == UInt8(ascii: "{") {
            guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(line)) else { return }
            signals = AgentOutput.signals(of: object, now: now)
        } else if line.starts(with: "Tokens: ".utf8) {
            signals = AgentOutput.signals(ofText: String(decoding: line, as: UTF8.self))
        } else {
            return
        }
        for signal in signals { take(signal) }
    }

    private func take(_ signal: AgentSignal) {
        let item = progress.withLock { $0.items.current }
        let span = item?.span ?? "main"
        let parent: String? = item == nil ? nil : "main"
        switch signal {
        case .session(let id, let agent, let model):
            let isNew = said.withLock { state -> Bool in
                state.sessionThisRun = true
                defer { state.session = id }
                return state.session != id
            }
            guard isNew else { return }
            reporter.emit(
                .agentSession, span: span, parent: parent, phase: "executing", actor: "agent",
                [
                    "session_id": .string(id), "agent": .string(agent), "model": model.map(JSONValue.string) ?? .null,
                    "explanation": .string("the agent's own session is \(id): an attempt that goes on from a checkpoint taken from now on resumes it"),
                ])
        case .tool(let name, let detail):
            reporter.emit(
                .agentToolUse, span: span, parent: parent, phase: "executing", actor: "agent",
                ["tool": .string(name), "detail": .string(String(detail.prefix(300))), "explanation": .string("the agent uses \(name)")])
        case .todos(let todos):
            takeTodos(todos, under: span)
        case .usage(let usage):
            said.withLock { $0.usage += usage }
            var payload = usage.json
            payload["explanation"] = .string("the agent reports what this cost: \(BudgetConfiguration.dollars(usage.costUSD)), \(usage.totalTokens) tokens")
            reporter.emit(.agentUsage, span: span, parent: parent, phase: "executing", actor: "agent", payload)
        case .limit(var notice):
            let merged = said.withLock { state -> UsageLimitNotice in
                // A reset time said before (Claude Code's rate_limit_event, in seconds) stays known;
                // else a time of day in the message, in the agent's time zone.
                if notice.resetsAt == nil { notice.resetsAt = state.limit?.resetsAt }
                if notice.resetsAt == nil { notice.resetsAt = LocalResetTime.resolve(notice.message, now: Date()) }
                state.limit = notice
                return notice
            }
            reporter.emit(
                .agentLimit, span: span, parent: parent, phase: "executing", actor: "agent",
                [
                    "message": .string(merged.message), "resets_at": merged.resetsAt.map { .double($0.secondsSince1970) } ?? .null,
                    "explanation": .string(
                        "the agent's provider refused for a usage or rate limit\(merged.resetsAt == nil ? "" : " until \(Date(timeIntervalSince1970: merged.resetsAt!.secondsSince1970))"): the attempt is tried again then, and does not count"),
                ])
        case .failed(let message):
            FileHandle.standardError.write(Data("necro runner: the agent reports an error: \(message.prefix(500))\n".utf8))
        }
    }

    /// The agent's to-do list as work items under the current step (`todo_<n>`): dispatched when
    /// it appears, started, done.
    private func takeTodos(_ todos: [AgentTodo], under parent: String) {
        var changes: [(AgentTodo, Int, [EventType])] = []
        said.withLock { state in
            for todo in todos {
                let known = state.todos[todo.text]
                let number = known?.number ?? state.todos.count + 1
                var types: [EventType] = known == nil ? [.workItemDispatched] : []
                let before = known?.status ?? .pending
                if todo.status != .pending && before == .pending { types.append(.workItemStart) }
                if todo.status == .completed && before != .completed { types.append(.workItemDone) }
                state.todos[todo.text] = (number, todo.status)
                if !types.isEmpty { changes.append((todo, number, types)) }
            }
        }
        for (todo, number, types) in changes {
            let id = "todo_\(number)"
            for type in types {
                let words = type == .workItemDispatched ? "is on the agent's to-do list" : type == .workItemStart ? "is under way" : "is done"
                reporter.emit(
                    type, span: "work_\(id)", parent: parent, phase: "executing", actor: "agent",
                    [
                        "work_item_id": .string(id), "title": .string(String(todo.text.prefix(300))), "work_type": "agent_todo",
                        "explanation": .string("the agent's to-do \(number) \(words): \(todo.text.prefix(120))"),
                    ])
            }
        }
    }

    /// SIGTERM to the runner (a stop) goes on to the child running now (the agent, or a gate);
    /// no step or gate starts after it.
    private func forwardTermination() -> any DispatchSourceSignal {
        signal(SIGTERM, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        source.setEventHandler { [self] in
            stopping.store(true, ordering: .relaxed)
            let group = childGroup.load(ordering: .relaxed)
            if group > 0 { kill(-group, SIGTERM) }
        }
        source.resume()
        return source
    }

    // MARK: The lease

    /// While the agent is active (output, CPU time of its processes, files changing in
    /// the folder), the lease is renewed: a `lease_renewed` on the current work item's span at
    /// most once a third of the heartbeat timeout. With no activity for the stall timeout, the
    /// runner says so in its log and lets the lease lapse.
    private func keepLease() -> any DispatchSourceTimer {
        let interval = max(0.2, context.heartbeatTimeout / 3)
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "necro-runner-lease"))
        let state = Mutex((output: 0, cpu: UInt64(0), files: 0.0, lastActive: Date(), stalled: false))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [self] in
            guard childGroup.load(ordering: .relaxed) > 0 else { return }
            let output = outputBytes.load(ordering: .relaxed)
            let cpu = Activity.cpuTicks(groups: [childGroup.load(ordering: .relaxed)])
            let renew: Bool = state.withLock { state in
                var active = output != state.output || cpu != state.cpu
                if !active {
                    let files = Activity.newestModification(in: context.work)
                    active = files != state.files
                    state.files = files
                }
                state.output = output
                state.cpu = cpu
                if active {
                    state.lastActive = Date()
                    state.stalled = false
                    return true
                }
                if Date().timeIntervalSince(state.lastActive) >= context.stallTimeout {
                    if !state.stalled {
                        state.stalled = true
                        FileHandle.standardError.write(
                            Data("necro runner: the agent shows no activity (output, CPU time, files) for \(Int(context.stallTimeout)) s: a stall; its lease is left to lapse\n".utf8))
                    }
                    return false
                }
                return true  // quiet, not stalled yet: still thinking
            }
            guard renew else { return }
            let item = progress.withLock { $0.items.current }
            reporter.emit(
                .leaseRenewed, span: item?.span ?? "main", parent: item == nil ? nil : "main", phase: "executing", actor: "lease_manager",
                [
                    "work_item_id": item.map { .string($0.id) } ?? .null, "lease_holder": .string(context.runner),
                    "extended_by_seconds": .double(context.heartbeatTimeout),
                    "explanation": "the agent is active (or has been within the stall timeout): the lease is extended",
                ])
        }
        timer.resume()
        return timer
    }
}

/// Signs that an agent is working even when it prints nothing.
enum Activity {
    /// CPU time (clock ticks) of the processes in these process groups (the agent's: the
    /// runner's own does not count), from /proc.
    static func cpuTicks(groups: Set<Int32>) -> UInt64 {
        guard let directory = opendir("/proc") else { return 0 }
        defer { closedir(directory) }
        var total: UInt64 = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let process = Int32(name) else { continue }
            let text = readSmallFile("/proc/\(process)/stat")
            // After the command's closing parenthesis: state (0), ppid, pgrp (2), … utime (11),
            // stime, cutime, cstime (14).
            guard let close = text.lastIndex(of: ")") else { continue }
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 14, let group = Int32(fields[2]), groups.contains(group) else { continue }
            for index in 11...14 { total += UInt64(fields[index]) ?? 0 }
        }
        return total
    }

    /// The newest modification time under `folder` (not in `.git` or `.necro`), looking at 20,000
    /// entries at most.
    static func newestModification(in folder: String) -> Double {
        var newest = 0.0
        var seen = 0
        let enumerator = FileManager.default.enumerator(atPath: folder)
        while let path = enumerator?.nextObject() as? String, seen < 20_000 {
            seen += 1
            if path == ".git" || path == ".necro" || path.hasPrefix(".git/") || path.hasPrefix(".necro/") {
                enumerator?.skipDescendants()
                continue
            }
            var info = stat()
            if lstat(folder + "/" + path, &info) == 0 {
                newest = max(newest, Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
            }
        }
        return newest
    }

    /// This process's peak resident memory, in KB (`VmHWM`; `getrusage` would count the memory of
    /// the process it was exec'd from, which shared its address space: the supervisor's).
    static func peakResidentKB() -> Int? {
        readSmallFile("/proc/self/status").split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
            .flatMap { Int($0.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") }
    }

    /// A /proc file's text (Foundation reads them as empty).
    static func readSmallFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

