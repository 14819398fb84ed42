import Foundation
import NecroCore
import NecroTesting
import Testing

/// What the agents print, read: the transcripts of `Tests/Fixtures/agents` (see its README for the
/// documentation each follows).
@Suite struct AgentOutputTests {
    static let now = Timestamp(secondsSince1970: 1_800_000_000)

    /// Every signal of a transcript, line by line, as `necro runner` reads it (JSON lines, else
    /// text lines); lines that are not JSON objects say nothing.
    static func signals(_ fixture: String) throws -> [AgentSignal] {
        let text = try String(contentsOfFile: "\(repositoryRoot)/Tests/Fixtures/agents/\(fixture)", encoding: .utf8)
            .replacing("@NOW+3@", with: "1800000003")
        return text.split(separator: "\n").flatMap { line -> [AgentSignal] in
            guard line.hasPrefix("{") else { return AgentOutput.signals(ofText: String(line)) }
            guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(line.utf8)) else { return [] }
            return AgentOutput.signals(of: object, now: now)
        }
    }

    static let claudeSignals: [AgentSignal] = [
        .session(id: "5e1f0a2c-7d3b-4c8e-9a61-2f4b8c0d1e33", agent: "claude", model: "claude-sonnet-4-5"),
        .todos([AgentTodo(text: "Write greeting.txt", status: .inProgress), AgentTodo(text: "Check the greeting", status: .pending)]),
        .tool(name: "Bash", detail: "ls -la"),
        .tool(name: "Write", detail: "greeting.txt"),
        .todos([AgentTodo(text: "Write greeting.txt", status: .completed), AgentTodo(text: "Check the greeting", status: .completed)]),
        .usage(AgentUsage(costUSD: 0.0417, tokens: ["input": 1050, "output": 205, "cache_creation": 2400, "cache_read": 9600], turns: 6)),
    ]

    @Test func aClaudeCodeStreamGivesItsSessionToolsTodosAndCost() throws {
        #expect(try Self.signals("claude-stream.jsonl") == Self.claudeSignals)
    }

    @Test func linesThatAreNotWhatAReaderExpectsSayNothingAndTheRestIsRead() throws {
        #expect(try Self.signals("claude-garbage.jsonl") == Self.claudeSignals)
    }

    @Test func aCodexStreamGivesItsThreadCommandsChangesTodosAndTokens() throws {
        let signals = try Self.signals("codex-exec.jsonl")
        #expect(
            signals == [
                .session(id: "0199a7e2-4c1b-7d30-9f52-3e8a6b0c2d41", agent: "codex", model: nil),
                .todos([AgentTodo(text: "Write greeting.txt", status: .pending), AgentTodo(text: "Check it", status: .pending)]),
                .tool(name: "command", detail: "bash -lc ls"),
                .tool(name: "file_change", detail: "add greeting.txt"),
                .todos([AgentTodo(text: "Write greeting.txt", status: .completed), AgentTodo(text: "Check it", status: .pending)]),
                .tool(name: "mcp", detail: "docs.lookup"),
                .todos([AgentTodo(text: "Write greeting.txt", status: .completed), AgentTodo(text: "Check it", status: .completed)]),
                // Cached input is counted apart from the rest of the input.
                .usage(AgentUsage(tokens: ["input": 3040, "cache_read": 15360, "output": 512], turns: 1)),
            ])
    }

    @Test func usageLimitsAreToldWithTheirResetWhenSaid() throws {
        let claude = try Self.signals("claude-limit.jsonl")
        #expect(claude.contains(.limit(UsageLimitNotice(message: "rate limit reached (five_hour)", resetsAt: Timestamp(secondsSince1970: 1_800_000_003)))))
        // The result's text gives a time of day in a zone, which Core does not read (necro runner does).
        #expect(claude.last == .limit(UsageLimitNotice(message: "You've hit your limit · resets 3pm (Europe/Berlin)", resetsAt: nil)))
        let codex = try Self.signals("codex-limit.jsonl")
        #expect(codex.filter { if case .limit = $0 { true } else { false } }.count == 2)
        // A failure that is not a limit is a failure.
        let costly = try Self.signals("claude-costly-failure.jsonl")
        #expect(costly.contains(.failed("error_max_turns")) && costly.contains(.usage(AgentUsage(costUSD: 0.3, tokens: ["input": 30000, "output": 4000], turns: 30))))
    }

    @Test func aResetTimeIsReadFromAnEpochADurationOrAnISOTime() {
        let now = Self.now
        func reset(_ text: String) -> Double? { UsageLimits.notice(in: text, now: now)?.resetsAt.map { $0.secondsSince1970 - now.secondsSince1970 } }
        #expect(reset("Claude AI usage limit reached|1800003600") == 3600)
        let days: Double = 2 * 86_400 + 17 * 3600 + 14 * 60
        #expect(reset("You've hit your usage limit. Try again in 2 days 17 hours 14 minutes.") == days)
        #expect(reset("Rate limit reached for gpt-5 in organization org-x. Please try again in 1.5s.") == 1.5)
        #expect(reset("rate_limit_error: retry after 30 seconds") == 30)
        #expect(UsageLimits.notice(in: "usage limit; resets at 2027-01-15T08:30:00Z", now: now)?.resetsAt == Timestamp(secondsSince1970: 1_800_001_800))
        #expect(UsageLimits.notice(in: "quota exceeded", now: now) == UsageLimitNotice(message: "quota exceeded", resetsAt: nil))
        #expect(UsageLimits.notice(in: "error: file not found", now: now) == nil)
    }

    @Test func aidersCostLineIsRead() throws {
        #expect(try Self.signals("aider-output.txt") == [.usage(AgentUsage(costUSD: 0.0099, tokens: ["input": 2400, "output": 180], turns: 1))])
        #expect(AgentOutput.signals(ofText: "Tokens: 12,345 sent, 1.1M received.") == [.usage(AgentUsage(tokens: ["input": 12345, "output": 1_100_000], turns: 1))])
        #expect(AgentOutput.signals(ofText: "Tokens are what models read") == [])
        // Lines that look like it and are not, or with numbers past reason, neither crash nor overflow.
        #expect(AgentOutput.signals(ofText: "Tokens: sent") == [])
        #expect(AgentOutput.signals(ofText: "Tokens: 99999999999999999999999 sent, 888888888888888888888k received. Cost: $99999999999999999999 message") == [
            .usage(AgentUsage(costUSD: AgentUsage.costLimit, tokens: ["input": AgentUsage.countLimit, "output": AgentUsage.countLimit], turns: 1))
        ])
        var huge = AgentUsage(tokens: ["input": Int.max], turns: Int.max)
        huge += huge
        #expect(huge.tokens["input"] == Int.max && huge.totalTokens == Int.max)
        #expect(BudgetConfiguration.dollars(1e300).hasPrefix("over"))
    }

    @Test func usageAddsUpPerTaskAndTaskset() {
        var totals = AgentUsageTotals()
        let a = TaskKey(spec: "s", id: "1"), b = TaskKey(spec: "s", id: "2"), other = TaskKey(spec: "t", id: "1")
        totals.add(a, AgentUsage(costUSD: 0.25, tokens: ["input": 10], turns: 1).json)
        totals.add(a, AgentUsage(costUSD: 0.5, tokens: ["input": 5, "output": 7], turns: 2).json)
        totals.add(b, AgentUsage(costUSD: 1).json)
        totals.add(other, AgentUsage(costUSD: 9).json)
        totals.add(b, ["cost_usd": "not a number"])
        #expect(totals.task(a) == AgentUsage(costUSD: 0.75, tokens: ["input": 15, "output": 7], turns: 3))
        #expect(totals.taskset("s").costUSD == 1.75 && totals.all.costUSD == 10.75)
    }

    @Test func aBudgetRefusesOnceReachedAndSaysWhich() {
        let budget = BudgetConfiguration(taskUSD: 0.5, tasksetUSD: 2, location: "necro.yaml:7")
        #expect(budget.refusal(task: 0.49, taskset: 1.9) == nil)
        #expect(budget.refusal(task: 0.6, taskset: 1)?.contains("budget.task_usd is $0.50 (necro.yaml:7)") == true)
        #expect(budget.refusal(task: 0.1, taskset: 2)?.contains("the taskset's agents cost $2.00, budget.taskset_usd") == true)
        #expect(BudgetConfiguration.dollars(0.0417) == "$0.0417" && BudgetConfiguration.dollars(0.3) == "$0.30" && BudgetConfiguration.dollars(12.5) == "$12.50")
    }
}

@Suite struct AgentInvocationTests {
    @Test func thePromptGoesWhereTheAgentSaysAndAResumedSessionAddsItsArguments() throws {
        let claude = try #require(AgentPreset.named("claude"))
        let fresh = AgentInvocation(agent: claude, prompt: "do it", promptFile: "/p.md", session: nil)
        #expect(fresh.stdin == "do it" && !fresh.argv.contains("--resume") && fresh.argv.starts(with: ["claude", "-p"]))
        #expect(fresh.argv.contains("stream-json") && fresh.argv.contains("--verbose"))
        let resumed = AgentInvocation(agent: claude, prompt: "do it", promptFile: "/p.md", session: "abc")
        #expect(resumed.argv.suffix(2) == ["--resume", "abc"])
        let codex = try #require(AgentPreset.named("codex"))
        #expect(AgentInvocation(agent: codex, prompt: "x", promptFile: "/p", session: "t1").argv.suffix(2) == ["resume", "t1"])
        let aider = try #require(AgentPreset.named("aider"))
        let byFile = AgentInvocation(agent: aider, prompt: "x", promptFile: "/p.md", session: "ignored")
        #expect(byFile.stdin == nil && byFile.argv.suffix(2) == ["--message-file", "/p.md"])
        // Placed in an element, or added last; nothing when no way is said.
        var custom = AgentConfiguration(command: ["agent", "--task={prompt}"], promptVia: .arg)
        #expect(AgentInvocation(agent: custom, prompt: "p q", promptFile: "/f", session: nil).argv == ["agent", "--task=p q"])
        custom.command = ["agent"]
        #expect(AgentInvocation(agent: custom, prompt: "p q", promptFile: "/f", session: nil).argv == ["agent", "p q"])
        custom.promptVia = .file
        #expect(AgentInvocation(agent: custom, prompt: "p q", promptFile: "/f", session: nil).argv == ["agent", "/f"])
        custom.promptVia = nil
        #expect(AgentInvocation(agent: custom, prompt: "p q", promptFile: "/f", session: nil) == AgentInvocation(agent: custom, prompt: "", promptFile: "", session: nil))
    }

    @Test func aTasksOwnAgentIsAPresetByNameOrAnArgvOnTheConfiguredSettings() throws {
        let configured = AgentConfiguration(command: ["x"], steps: .each, stallTimeout: .seconds(60), resume: ["--r", "{agent.session}"], promptVia: .stdin)
        let preset = try #require(AgentConfiguration.forTask(["agent": ["codex"]], configured: configured))
        #expect(preset.preset == "codex" && preset.steps == .each && preset.stallTimeout == .seconds(60))
        let argv = try #require(AgentConfiguration.forTask(["agent": ["./mine.sh", "--fast"]], configured: configured))
        #expect(argv.command == ["./mine.sh", "--fast"] && argv.resume.isEmpty && argv.promptVia == nil && argv.steps == .each)
        #expect(AgentConfiguration.forTask([:], configured: configured) == configured)
    }
}
