import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

/// Real agents' ways: `agent: claude`, `codex`, `aider` run as stand-ins named like the tools,
/// first on PATH, which record how they were started and replay transcripts in the tools' own
/// output shapes (`Tests/Fixtures/agents`, its README cites the documentation). Real processes,
/// registry and `necro runner`.
@Suite(.serialized) struct AgentTests {
    static let fixtures = "\(repositoryRoot)/Tests/Fixtures/agents"

    /// A folder with `bin/claude`, `bin/codex`, `bin/aider` (the stand-in) and `record/`.
    static func setup(_ name: String) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory(name)
        for folder in ["bin", "record"] { try FileManager.default.createDirectory(atPath: dir.file(folder), withIntermediateDirectories: true) }
        for tool in ["claude", "codex", "aider"] {
            try FileManager.default.createSymbolicLink(atPath: dir.file("bin/\(tool)"), withDestinationPath: "\(fixtures)/stand-in.sh")
        }
        return dir
    }

    /// `necro.yaml` with `agent` as written, one local pool whose runners see the stand-ins first
    /// on PATH, and `standIn` as the stand-in's settings (STANDIN_…).
    static func configure(
        _ dir: TemporaryDirectory, agent: String = "claude", standIn: [String: String], dispatcher: String = ", retry_initial_delay: 0.05", more: String = ""
    ) throws {
        var environment = ["PATH": "\(dir.file("bin")):/usr/local/bin:/usr/bin:/bin", "STANDIN_RECORD": dir.file("record"), "ROOT": dir.path]
        environment.merge(standIn) { _, new in new }
        func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        let env = environment.sorted { $0.key < $1.key }.map { "\($0.key): \(quoted($0.value))" }.joined(separator: ", ")
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {graceful_shutdown_timeout: 1\(dispatcher)}
            agent: \(agent)
            \(more)
            agent_pools:
              local:
                max_concurrency: 1
                config: {env: {\(env)}}
            """)
    }

    static func recorded(_ dir: TemporaryDirectory, _ name: String) -> String? {
        try? String(contentsOfFile: dir.file("record/\(name)"), encoding: .utf8)
    }

    /// The arguments a stand-in's run was started with (`claude.1`), one per line as it recorded them.
    static func arguments(_ dir: TemporaryDirectory, _ run: String) -> [String]? {
        recorded(dir, "\(run).args")?.split(separator: "\n").map(String.init)
    }

    static func events(_ dir: TemporaryDirectory, spec: String) throws -> [EventRecord] {
        try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"), readOnly: true).events(EventQuery(spec: spec)).filter { $0.taskID != nil }
    }

    /// A Kiro spec folder: tasks, requirements, design (`Tests/Fixtures/agents/greeter`).
    static func kiroSpec(_ dir: TemporaryDirectory) throws {
        try FileManager.default.copyItem(atPath: "\(fixtures)/greeter", toPath: dir.file("greeter"))
    }

    @Test(arguments: ["claude-stream.jsonl", "claude-garbage.jsonl"])
    func claudeInOneLineGetsTheKiroTasksPromptAndWhatItPrintsBecomesEventsAndCost(_ transcript: String) async throws {
        let dir = try Self.setup("agent-claude")
        defer { dir.remove() }
        try Self.kiroSpec(dir)
        try Self.configure(dir, standIn: ["STANDIN_TRANSCRIPT": "\(Self.fixtures)/\(transcript)", "STANDIN_THEN": "echo hello > greeting.txt"])
        let result = try await NecroBinary.runAsync(["run", "greeter/tasks.md", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")

        // Started as the preset says, the prompt on stdin.
        let arguments = try #require(Self.arguments(dir, "claude.1"))
        #expect(arguments == Array(AgentPreset.named("claude")!.command.dropFirst()), "\(arguments)")
        let prompt = try #require(Self.recorded(dir, "claude.1.stdin"))
        for part in [
            // Kiro's bullets under a task are its details (its description).
            "Greet visitors by name", "Read the name from the command line\nPrint the greeting with the name",
            "### Requirement 1", "User story: As a visitor, I want to be greeted, so that I feel welcome.",
            "2. WHEN the visitor gives a name THEN the system SHALL print \"hello, NAME\"\n   and keep the name's case",
            "3. IF the name is empty THEN the system SHALL print \"hello\" alone", "One executable, `greet`, reads argv[1].",
        ] {
            #expect(prompt.contains(part), "\(part)\n---\n\(prompt)")
        }
        #expect(!prompt.contains("WHEN a visitor arrives"), "criterion 1.1 is not cited")
        #expect(Self.recorded(dir, "claude.1.env")?.contains("NECRO_PROMPT_FILE=") == true)

        // What it printed, as events.
        let events = try Self.events(dir, spec: "greeter")
        let session = try #require(events.first { $0.type == .agentSession })
        #expect(session.payload["session_id"] == "5e1f0a2c-7d3b-4c8e-9a61-2f4b8c0d1e33" && session.payload["agent"] == "claude")
        let tools = events.filter { $0.type == .agentToolUse }.map { "\($0.payload["tool"]?.stringValue ?? "") \($0.payload["detail"]?.stringValue ?? "")" }
        #expect(tools == ["Bash ls -la", "Write greeting.txt"])
        let todos = events.filter { $0.payload["work_type"] == "agent_todo" }.map { "\($0.type) \($0.payload["work_item_id"]?.stringValue ?? "")" }
        #expect(
            todos == [
                "work_item_dispatched todo_1", "work_item_start todo_1", "work_item_dispatched todo_2", "work_item_done todo_1",
                "work_item_start todo_2", "work_item_done todo_2",
            ], "\(todos)")
        #expect(events.first { $0.payload["work_item_id"] == "todo_1" }?.spanID == "work_todo_1")
        let usage = try #require(events.first { $0.type == .agentUsage })
        #expect(AgentUsage(payload: usage.payload) == AgentUsage(costUSD: 0.0417, tokens: ["input": 1050, "output": 205, "cache_read": 9600, "cache_creation": 2400], turns: 6))
        #expect(events.filter { $0.type == .agentUsage }.count == 1)
        #expect(events.contains { $0.type == .taskCompleted })

        // necro status shows what it cost.
        let status = try NecroBinary.run(["status", "--json"], in: dir.path)
        struct Report: Decodable {
            struct Set: Decodable { var name: String; var agent_cost_usd: Double; var agent_tokens: [String: Int] }
            struct Task: Decodable { var task_id: String; var cost_usd: Double; var turns: Int }
            var tasksets: [Set]
            var agent_tasks: [Task]
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(status.stdout.utf8))
        #expect(report.tasksets.first?.agent_cost_usd == 0.0417 && report.tasksets.first?.agent_tokens["cache_read"] == 9600)
        #expect(report.agent_tasks.map(\.task_id) == ["1"] && report.agent_tasks.first?.turns == 6)
        let text = try NecroBinary.run(["status"], in: dir.path).stdout
        #expect(text.contains("agents: $0.0417, 13255 tokens (input 1050, output 205, cache_read 9600, cache_creation 2400)"), "\(text)")
    }

    @Test func codexAndAiderInOneLineAreStartedAsTheirPresetsSayAndTheirCostsRead() async throws {
        let dir = try Self.setup("agent-codex-aider")
        defer { dir.remove() }
        try dir.write(
            "tasks.yaml",
            """
            spec_name: two
            tasks:
              - {id: "1", title: Write the greeting, metadata: {agent: [codex]}}
              - {id: "2", title: Check the greeting, dependencies: ["1"], metadata: {agent: [aider]}}
            """)
        try Self.configure(
            dir, agent: "{preset: claude, steps: once}",
            standIn: ["STANDIN_TRANSCRIPT_1": "\(Self.fixtures)/codex-exec.jsonl", "STANDIN_THEN": "echo hi > greeting.txt"])
        try FileManager.default.removeItem(atPath: dir.file("bin/aider"))
        try dir.write("bin/aider", "#!/bin/sh\nSTANDIN_TRANSCRIPT_1=\(Self.fixtures)/aider-output.txt exec \(Self.fixtures)/stand-in.sh \"$@\"\n")
        chmod(dir.file("bin/aider"), 0o755)
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(Self.recorded(dir, "claude.1.args") == nil, "each task's own agent")

        let codex = try #require(Self.arguments(dir, "codex.1"))
        #expect(codex == ["exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"])
        #expect(Self.recorded(dir, "codex.1.stdin")?.contains("task 1 of the spec \"two\": Write the greeting") == true)
        let aider = try #require(Self.arguments(dir, "stand-in.sh.1"))
        #expect(aider.prefix(5) == ["--yes-always", "--no-pretty", "--no-stream", "--no-check-update", "--no-show-model-warnings"])
        #expect(aider.dropLast().last == "--message-file" && Self.recorded(dir, "stand-in.sh.1.stdin") == "", "stdin closed")
        let message = try String(contentsOfFile: try #require(aider.last), encoding: .utf8)
        #expect(message.contains("task 2 of the spec \"two\": Check the greeting") && message.contains("- task 1"))

        let events = try Self.events(dir, spec: "two")
        let usage = events.filter { $0.type == .agentUsage }.map { ($0.taskID?.rawValue ?? "", AgentUsage(payload: $0.payload)) }
        #expect(usage.map(\.0) == ["1", "2"])
        #expect(usage.first?.1 == AgentUsage(tokens: ["input": 3040, "cache_read": 15360, "output": 512], turns: 1))
        #expect(usage.last?.1 == AgentUsage(costUSD: 0.0099, tokens: ["input": 2400, "output": 180], turns: 1))
        #expect(events.first { $0.type == .agentSession }?.payload["session_id"] == "0199a7e2-4c1b-7d30-9f52-3e8a6b0c2d41")
        #expect(events.filter { $0.type == .agentToolUse && $0.taskID == "1" }.compactMap { $0.payload["tool"]?.stringValue } == ["command", "file_change", "mcp"])
    }

    @Test func aPresetNamedAfterNecroRunnerInAPoolsCommandIsThatPreset() async throws {
        let dir = try Self.setup("agent-runner-argv")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Write the greeting}\n")
        try Self.configure(dir, agent: "{command: [/bin/false], resume: [--again, \"{agent.session}\"]}", standIn: ["STANDIN_TRANSCRIPT": "\(Self.fixtures)/codex-exec.jsonl"])
        let config = try String(contentsOfFile: dir.file("necro.yaml"), encoding: .utf8)
        try dir.write("necro.yaml", config.replacingOccurrences(of: "config: {env:", with: "config: {command: [\"\(NecroBinary.path)\", runner, --, codex], env:"))
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(Self.arguments(dir, "codex.1") == ["exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"])
        #expect(Self.recorded(dir, "codex.1.stdin")?.contains("Write the greeting") == true)
    }

    @Test func afterKill9OfTheRunnerTheNextAttemptResumesTheAgentsConversationOnTheCheckpointsFiles() async throws {
        let dir = try Self.setup("agent-resume")
        defer { dir.remove() }
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - id: "1"
                title: Two files
                steps: [{title: Write one}, {title: Write two}]
            """)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        try Self.configure(
            dir,
            standIn: [
                "STANDIN_TRANSCRIPT": "\(Self.fixtures)/claude-stream.jsonl",
                // Run 1: step 1's file, checkpointed (the session is known by then), then killed.
                "STANDIN_THEN_1": #"echo one > one.txt && sleep 0.3 && necro step done 1 && echo $STANDIN_PARENT $STANDIN_PID > $ROOT/ready && sleep 60"#,
                // Run 2: step 1's file is there again.
                "STANDIN_THEN_2": #"test -f one.txt && touch $ROOT/saw-one; echo two > two.txt"#,
            ])
        let run = try NecroBinary.start(["run", "tasks.yaml", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let pids = awaitLine(fromFIFO: dir.file("ready")).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        let runner = try #require(pids.first)
        defer { kill(pids.last!, SIGKILL) }
        kill(runner, SIGKILL)
        await waitForExit(run)
        #expect(run.terminationStatus == 0)
        let first = try #require(Self.arguments(dir, "claude.1"))
        #expect(!first.contains("--resume"))
        let second = try #require(Self.arguments(dir, "claude.2"))
        #expect(second.suffix(2) == ["--resume", "5e1f0a2c-7d3b-4c8e-9a61-2f4b8c0d1e33"], "\(second)")
        #expect(FileManager.default.fileExists(atPath: dir.file("saw-one")), "the checkpoint's files are there")
        #expect(Self.recorded(dir, "claude.2.stdin")?.contains("Your conversation of then goes on.") == true)
        let events = try Self.events(dir, spec: "demo")
        let commit = try #require(events.first { $0.type == .checkpointCommit })
        #expect(commit.payload["agent_session"] == "5e1f0a2c-7d3b-4c8e-9a61-2f4b8c0d1e33")
        #expect(events.contains { $0.type == .recoveryResumedFromCheckpoint })
    }

    @Test func aSessionThatCannotBeResumedStartsOverInTheSameAttempt() async throws {
        let dir = try Self.setup("agent-resume-gone")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: One, steps: [{title: A}, {title: B}]}\n")
        try Self.configure(
            dir,
            standIn: [
                // Run 1 says its session, checkpoints step A, and fails; run 2 cannot resume (it
                // prints no session, as Claude Code for a session it does not have); run 3 starts over.
                "STANDIN_TRANSCRIPT_1": "\(Self.fixtures)/claude-stream.jsonl",
                "STANDIN_THEN_1": "echo a > a.txt && sleep 0.3 && necro step done 1", "STANDIN_EXIT_1": "1",
                "STANDIN_THEN_2": "echo 'No conversation found with session ID' >&2", "STANDIN_EXIT_2": "1",
                "STANDIN_TRANSCRIPT_3": "\(Self.fixtures)/claude-stream.jsonl",
            ])
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(Self.recorded(dir, "claude.2.args")?.contains("--resume") == true)
        #expect(Self.recorded(dir, "claude.3.args")?.contains("--resume") == false)
        let events = try Self.events(dir, spec: "demo")
        #expect(events.filter { $0.type == .taskAssigned }.count == 2, "one attempt after the failure, which started over")
    }

    @Test func aTaskStopsStartingAttemptsOnceItsAgentsCostReachesTheBudget() async throws {
        let dir = try Self.setup("agent-budget")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Expensive}\n")
        try Self.configure(
            dir, standIn: ["STANDIN_TRANSCRIPT": "\(Self.fixtures)/claude-costly-failure.jsonl", "STANDIN_EXIT": "1"],
            dispatcher: ", retry_initial_delay: 0.05, retry_max_attempts: 5", more: "budget: {task_usd: 0.5}")
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        // $0.30 each: after the second, $0.60 is over $0.50, and no third starts.
        #expect(Self.recorded(dir, "claude.2.args") != nil && Self.recorded(dir, "claude.3.args") == nil)
        #expect((result.stdout + result.stderr).contains("budget reached: the task's agents cost $0.60, budget.task_usd is $0.50"), "\(result.stdout)\n\(result.stderr)")
        let events = try Self.events(dir, spec: "demo")
        let failed = try #require(events.last { $0.type == .taskFailed })
        #expect(failed.payload["retryable"] == false && failed.payload["failure_reason"]?.stringValue?.contains("necro.yaml:") == true)
        #expect(failed.payload["not_started"] == true && failed.payload["attempts"] == 2, "the third is refused, not counted")
        #expect(events.filter { $0.type == .taskAssigned }.count == 2)
        #expect(result.stdout.contains("1  FAILED, not started: budget reached"), "\(result.stdout)")
    }

    @Test func anAgentStoppedByAUsageLimitRunsAgainAfterTheResetItReportedWithoutSpendingAnAttempt() async throws {
        let dir = try Self.setup("agent-limit")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Limited, max_attempts: 1}\n")
        try Self.configure(
            dir,
            standIn: [
                "STANDIN_TRANSCRIPT_1": "\(Self.fixtures)/claude-limit.jsonl", "STANDIN_EXIT_1": "1",
                "STANDIN_TRANSCRIPT_2": "\(Self.fixtures)/claude-stream.jsonl",
            ],
            // The backoff is long: a retry that comes sooner comes for the reset time.
            dispatcher: ", retry_initial_delay: 60")
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try Self.events(dir, spec: "demo")
        let limit = try #require(events.first { $0.type == .agentLimit })
        let resetsAt = try #require(limit.payload["resets_at"]?.doubleValue)
        let retry = try #require(events.first { $0.type == .taskRetryScheduled })
        #expect(retry.payload["usage_limit"] == true && retry.payload["attempt_counted"] == false)
        #expect((retry.payload["delay_seconds"]?.doubleValue ?? 99) < 10, "after the reset, not the 60 s backoff")
        let assigned = events.filter { $0.type == .taskAssigned }
        #expect(assigned.count == 2 && assigned.map { $0.payload["attempt"] } == [1, 1], "the same attempt again")
        #expect(assigned[1].timestamp.secondsSince1970 >= resetsAt)
        #expect(events.contains { $0.type == .taskCompleted })
        #expect(Self.recorded(dir, "claude.2.args") != nil)
    }

    @Test func aLimitTheAgentGotPastDoesNotStopItsRun() async throws {
        let dir = try Self.setup("agent-limit-passed")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Busy hour}\n")
        // Codex says a request met a rate limit, waits and goes on, and ends its turn (its own retry).
        try dir.write(
            "transcript.jsonl",
            """
            {"type":"thread.started","thread_id":"0199a7e2-0000-7000-8000-000000000003"}
            {"type":"error","message":"Rate limit reached for gpt-5 in organization org-x. Please try again in 1.5s."}
            {"type":"turn.completed","usage":{"input_tokens":1200,"cached_input_tokens":0,"output_tokens":80}}

            """)
        try Self.configure(dir, agent: "codex", standIn: ["STANDIN_TRANSCRIPT": dir.file("transcript.jsonl")])
        let result = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try Self.events(dir, spec: "demo")
        #expect(events.contains { $0.type == .agentLimit }, "said")
        #expect(events.filter { $0.type == .taskAssigned }.count == 1 && !events.contains { $0.type == .taskRetryScheduled }, "not run again")
        #expect(events.contains { $0.type == .taskCompleted })
    }

    @Test func theDashboardShowsEachTasksCostAndTheTasksetsTotalAndMetricsCountThem() throws {
        let dir = try Self.setup("agent-dashboard")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("end"), 0o644) == 0)
        try dir.write(
            "tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Greet}\n  - {id: \"2\", title: Wait, dependencies: [\"1\"]}\n")
        try Self.configure(
            dir, standIn: ["STANDIN_TRANSCRIPT_1": "\(Self.fixtures)/claude-stream.jsonl", "STANDIN_THEN_2": #"read line < "$ROOT/end""#])
        let (run, address) = try DashboardTests.runServing("tasks.yaml", in: dir)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let dashboard = try #require(address)
        let base = String(dashboard.prefix { $0 != "#" }).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let browser = try runProcess("/usr/bin/env", ["python3", "\(repositoryRoot)/Tests/NecroCLITests/Browser/inspect_cost.py", dashboard, "demo/1"])
        let metrics = try scrape(base) { ($0["necro_agent_cost_usd_total"] ?? 0) > 0 }
        // The API: the taskset's total, each task's own.
        let token = String(dashboard.split(separator: "=").last ?? "")
        let set = try JSONDecoder().decode(JSONValue.self, from: Data(curl(["-H", "Authorization: Bearer \(token)", "\(base)/v1/tasksets/demo"]).utf8))
        #expect(set["agent_usage"]?["cost_usd"] == 0.0417 && set["agent_usage"]?["tokens"]?["cache_read"] == 9600)
        let tasks = set["tasks"]?.arrayValue ?? []
        #expect(tasks.map { $0["agent_usage"]?["turns"] } == [6, 0])
        let one = try JSONDecoder().decode(JSONValue.self, from: Data(curl(["-H", "Authorization: Bearer \(token)", "\(base)/v1/tasks/demo/1"]).utf8))
        #expect(one["agent_usage"]?["tokens"]?["input"] == 1050)
        release(dir.file("end"))
        run.waitUntilExit()
        #expect(browser.status == 0, "\(browser.stdout)\(browser.stderr)")
        struct Shown: Decodable { var total: String; var task: String }
        let shown = try JSONDecoder().decode(Shown.self, from: Data(browser.stdout.utf8))
        #expect(shown.total == "agents $0.0417 · 13,255 tokens")
        #expect(shown.task.hasPrefix("agents: $0.0417 · 13,255 tokens (") && shown.task.hasSuffix("), 6 turns"), "\(shown.task)")
        for part in ["input 1,050", "output 205", "cache_read 9,600", "cache_creation 2,400"] { #expect(shown.task.contains(part), "\(shown.task)") }
        #expect(metrics["necro_agent_cost_usd_total"] == 0.0417)
        #expect(metrics["necro_agent_tokens_total{kind=\"input\"}"] == 1050 && metrics["necro_agent_tokens_total{kind=\"output\"}"] == 205)
        #expect(metrics["necro_agent_tokens_total{kind=\"cache_read\"}"] == 9600 && metrics["necro_agent_tokens_total{kind=\"cache_creation\"}"] == 2400)
    }
}
