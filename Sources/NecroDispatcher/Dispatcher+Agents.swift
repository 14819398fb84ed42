import Foundation
import NecroCore
import Synchronization

/// What the dispatcher keeps of the agents its runners wrap: what they cost, the usage limits
/// they met, and the spec documents their prompts cite.
final class AgentLedger: Sendable {
    /// Cost and tokens per task, from the `agent_usage` events recorded.
    let usage = Mutex(AgentUsageTotals())
    /// The usage limit each running runner's agent reported (`agent_limit`), for its exit.
    let limits = Mutex<[RunnerID: UsageLimitNotice]>([:])
    /// Each Kiro taskset's `requirements.md` and `design.md`, read once.
    let documents = Mutex<[String: SpecDocuments]>([:])
}

/// A Kiro spec's documents beside its `tasks.md`.
struct SpecDocuments: Sendable {
    var requirements: KiroRequirements?
    var design: (path: String, text: String)?
}

extension Dispatcher {
    /// The most of a spec document (the design; the cited requirements) that travels in
    /// `TASK_CONTEXT`, in bytes: an environment variable holds at most 128 KiB on Linux.
    static var documentLimit: Int { 40_000 }

    // MARK: Cost

    func noteAgentUsage(_ transitions: [Transition]) {
        for transition in transitions {
            guard let id = transition.task else { continue }
            for event in transition.events where event.type == .agentUsage {
                agents.usage.withLock { $0.add(TaskKey(spec: transition.spec, id: id), event.payload) }
            }
        }
    }

    /// What the registry holds of the agents' costs for these tasksets (the journal replayed).
    func seedAgentUsage(_ specs: [String]) {
        var totals = AgentUsageTotals()
        for spec in specs {
            if let found = try? AgentUsageTotals(registry: registry, spec: spec) { totals.merge(found) }
        }
        agents.usage.withLock { $0 = totals }
    }

    /// Why a task's attempt may not start: its cost, or its taskset's, reached the budget.
    func budgetRefusal(for task: TaskKey) -> String? {
        let budget = configuration.budget
        guard budget.taskUSD != nil || budget.tasksetUSD != nil else { return nil }
        let (own, all) = agents.usage.withLock { ($0.task(task).costUSD, $0.taskset(task.spec).costUSD) }
        return budget.refusal(task: own, taskset: all)
    }

    // MARK: Usage limits

    /// A runner reported that its agent met a provider's limit.
    func noteLimit(_ id: RunnerID, _ payload: [String: JSONValue]) {
        let reset = payload["resets_at"]?.doubleValue.map { Timestamp(secondsSince1970: $0) }
        let message = payload["message"]?.stringValue ?? "usage limit"
        agents.limits.withLock { $0[id] = UsageLimitNotice(message: message, resetsAt: reset) }
    }

    /// A failed runner whose agent reported a usage limit: retried after the reset, uncounted.
    func limitedExit(of id: RunnerID) -> RunnerExit? {
        guard let notice = agents.limits.withLock({ $0.removeValue(forKey: id) }) else { return nil }
        // A reset already past (or not a time) is no reset time: the backoff applies. A second
        // more, so as not to come back just before it.
        let wait = notice.resetsAt.map { $0.secondsSince1970 - Date().timeIntervalSince1970 }.flatMap { $0.isFinite && $0 > 0 ? min($0, 86_400) : nil }
        return .usageLimited(retryAfter: wait.map { .milliseconds(Int64(($0 * 1000).rounded(.up)) + 1000) }, message: notice.message)
    }

    // MARK: TASK_CONTEXT

    /// What `necro runner` needs to run a task's agent: the agent, and the texts its prompt cites
    /// (a container sees only its own folder).
    func agentContext(_ request: LaunchRequest, _ agent: AgentConfiguration?) -> [String: JSONValue] {
        var context: [String: JSONValue] = [:]
        if let agent {
            var fields: [String: JSONValue] = [
                "command": .array(agent.command.map(JSONValue.string)), "steps": .string(agent.steps.rawValue),
                "stall_timeout_seconds": .double(agent.stallTimeout.seconds), "resume": .array(agent.resume.map(JSONValue.string)),
            ]
            if let preset = agent.preset { fields["preset"] = .string(preset) }
            if let via = agent.promptVia { fields["prompt_via"] = .string(via.rawValue) }
            if let template = agent.promptTemplate { fields["prompt_template"] = .string(template) }
            context["agent"] = .object(fields)
        }
        if !request.dependencyBranches.isEmpty {
            context["dependency_branches"] = .array(
                request.dependencyBranches.map { .object(["task": .string($0.task.rawValue), "branch": .string($0.branch)]) })
        }
        let documents = specDocuments(request.task.spec)
        if case .array(let cited)? = request.spec.metadata["requirements"], let requirements = documents?.requirements {
            // As many as fit beside the design in an environment variable.
            var kept: [JSONValue] = []
            var size = 0
            let all = requirements.cited(cited.compactMap(\.stringValue))
            for item in all {
                size += item.jsonText.utf8.count
                if size > Self.documentLimit {
                    kept.append(.object(["citation": .string("\(all.count - kept.count) more"), "missing": .string("\(all.count - kept.count) more cited requirements did not fit: see requirements.md")]))
                    break
                }
                kept.append(item)
            }
            context["requirements"] = .array(kept)
        }
        if let design = documents?.design {
            var text = design.text
            if text.utf8.count > Self.documentLimit {
                text = text.utf8Prefix(Self.documentLimit) + "\n\n[… cut here: the rest is in \(design.path)]"
            }
            context["design"] = .object(["path": .string(design.path), "text": .string(text)])
        }
        return context
    }

    /// The `requirements.md` and `design.md` beside a Kiro taskset's `tasks.md`, read the first
    /// time a task of it starts; nil for other tasksets.
    func specDocuments(_ spec: String) -> SpecDocuments? {
        if let known = agents.documents.withLock({ $0[spec] }) { return known }
        var documents = SpecDocuments()
        if let source = (try? registry.taskSets())?.first(where: { $0.name == spec })?.source, source.hasSuffix(".md") {
            let folder = (source as NSString).deletingLastPathComponent
            func read(_ name: String) -> String? {
                let path = (folder.isEmpty ? "" : folder + "/") + name
                guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
                defer { try? handle.close() }
                // A megabyte is more than any spec document; what is beyond it is left.
                return (try? handle.read(upToCount: 1 << 20)).map { String(decoding: $0, as: UTF8.self) }
            }
            documents.requirements = read("requirements.md").map(KiroRequirements.init(markdown:))
            if let design = read("design.md") { documents.design = ("design.md", design) }
        }
        agents.documents.withLock { $0[spec] = documents }
        return documents
    }
}
