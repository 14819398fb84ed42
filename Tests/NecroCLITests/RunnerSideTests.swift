import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

/// The runner side: `necro runner` wrapping a scripted agent, DONE gates, checkpoints and resume
/// after kill -9, events spooled while the dispatcher is away. Real processes, a real registry,
/// real git.
@Suite(.serialized) struct RunnerSideTests {
    /// A spec with one task of two steps and a gate, in YAML.
    static let twoSteps = """
        spec_name: demo
        tasks:
          - id: "1"
            title: Build the thing
            steps:
              - title: Write the code
              - title: Write the tests
            gates: [[sh, -c, "test -f code.txt && test -f tests.txt && echo both there"]]
        """

    /// A configuration whose local pool runs `necro runner` with `script` as the agent.
    static func config(_ dir: TemporaryDirectory, agent script: String, dispatcher: String = "") throws {
        try dir.write(
            "necro.yaml",
            """
            dispatcher:
              retry_initial_delay: 0.05
              graceful_shutdown_timeout: 1
            \(dispatcher)
            agent:
              command: [/bin/sh, -c, '\(script)']
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  env: {ROOT: "\(dir.path)", NECRO: "\(NecroBinary.path)"}
            """)
    }

    static func events(_ dir: TemporaryDirectory, spec: String = "demo") throws -> [EventRecord] {
        try SQLiteRegistry(path: dir.file(".necro/registry.sqlite")).events(EventQuery(spec: spec)).filter { $0.taskID != nil }
    }

    /// Runs `necro run` in `dir` and waits (up to two minutes).
    static func run(_ dir: TemporaryDirectory, _ arguments: [String] = []) async throws -> CommandResult {
        try await NecroBinary.runAsync(["run", "tasks.yaml"] + arguments, in: dir.path)
    }

    @Test func aTaskWithTwoStepsAndAGateRunsThroughNecroRunnerAsTheSeedsExampleSays() async throws {
        let dir = try TemporaryDirectory("runner-sequence")
        defer { dir.remove() }
        try dir.write("tasks.yaml", Self.twoSteps)
        try Self.config(
            dir,
            agent: #"env > "$ROOT/agent-env"; $NECRO step start 1 && echo code > code.txt && $NECRO step done 1 && necro step start 2 && echo tests > tests.txt && necro step done 2"#)
        let result = try await Self.run(dir)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        // The agent talks to its runner, not to the dispatcher: it has no token of its own.
        let agentEnvironment = try String(contentsOfFile: dir.file("agent-env"), encoding: .utf8).split(separator: "\n")
        #expect(agentEnvironment.contains { $0.hasPrefix("NECRO_RUNNER_CONTROL=") } && agentEnvironment.contains { $0.hasPrefix("TASK_CONTEXT=") })
        #expect(!agentEnvironment.contains { $0.hasPrefix("NECRO_RUNNER_TOKEN=") || $0.hasPrefix("NECRO_API_") })
        let all = try Self.events(dir)
        #expect(all.map(\.seq) == Array(1...Int64(all.count)), "gapless seq")
        let runner = all.filter { $0.payload["runner_seq"] != nil }
        let expected: [(EventType, String?, String?, String?)] = [
            (.runnerSpawn, "main", nil, nil), (.phaseEnter, "main", nil, "planning"), (.phaseExit, "main", nil, "planning"),
            (.phaseEnter, "main", nil, "executing"),
            (.workItemDispatched, "main", nil, "executing"), (.workItemStart, "work_step_1", "main", "executing"),
            (.leaseAcquired, "work_step_1", "main", "executing"), (.workItemDone, "work_step_1", "main", "executing"),
            (.checkpointBegin, "main", nil, "execution"), (.checkpointCommit, "main", nil, "execution"), (.checkpointVerified, "main", nil, "execution"),
            (.workItemDispatched, "main", nil, "executing"), (.workItemStart, "work_step_2", "main", "executing"),
            (.leaseAcquired, "work_step_2", "main", "executing"), (.workItemDone, "work_step_2", "main", "executing"),
            (.checkpointBegin, "main", nil, "execution"), (.checkpointCommit, "main", nil, "execution"), (.checkpointVerified, "main", nil, "execution"),
            (.phaseExit, "main", nil, "executing"), (.phaseEnter, "main", nil, "verifying"),
            (.gateStart, "main", nil, "verifying"), (.gateResult, "main", nil, "verifying"), (.phaseExit, "main", nil, "verifying"),
            (.runnerExit, "main", nil, nil),
        ]
        #expect(runner.map(\.type) == expected.map(\.0))
        for (event, want) in zip(runner, expected) {
            #expect(event.spanID == want.1 && event.parentSpanID == want.2 && event.phase == want.3, "\(event.type): \(event.spanID ?? "-") < \(event.parentSpanID ?? "-") \(event.phase ?? "-")")
            #expect(event.payload["explanation"] != nil, "\(event.type) explains itself")
        }
        #expect(runner.compactMap { $0.payload["runner_seq"]?.intValue } == Array(1...runner.count))
        // The seed's fields.
        let done = runner.filter { $0.type == .workItemDone }
        #expect(done.map { $0.payload["files_changed"] } == [.array(["code.txt"]), .array(["tests.txt"])])
        let commits = runner.filter { $0.type == .checkpointCommit }
        #expect(commits.map { $0.payload["sequence_number"] } == [1, 2])
        #expect(commits.last?.payload["work_items_done"] == .array(["step_1", "step_2"]))
        let gate = try #require(runner.first { $0.type == .gateResult })
        #expect(gate.payload["passed"] == true && gate.payload["exit_code"] == 0 && gate.payload["output_tail"] == "both there\n")
        #expect(runner.last?.payload["exit_reason"] == "done")
        // The runner reported its gate and its leases: the dispatcher did neither again.
        #expect(all.filter { $0.type == .gateStart }.count == 1)
        #expect(all.filter { $0.type == .leaseAcquired }.count == 2)
        // The checkpoints are commits under refs/necro/checkpoints, in the folder's private repository.
        let work = dir.file(".necro/work/demo/1")
        let refs = try runProcess(
            "/usr/bin/git", ["--git-dir", "\(work)/.necro/checkpoints.git", "for-each-ref", "--format=%(refname) %(objectname)"])
        #expect(refs.stdout == "refs/necro/checkpoints/demo/1/1 \(commits[0].payload["commit"]!.stringValue!)\nrefs/necro/checkpoints/demo/1/2 \(commits[1].payload["commit"]!.stringValue!)\n")
    }

    @Test(arguments: [false, true])
    func aFailedGateFailsTheAttemptTheNextSeesItsOutputAndPassesOnceTheAgentFixesIt(_ inWorktree: Bool) async throws {
        let dir = try TemporaryDirectory("gate-retry")
        defer { dir.remove() }
        let repository = inWorktree ? try GitRepository(at: dir.file("repo")) : nil
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - {id: "1", title: Fix it, gates: [[sh, -c, "echo checking; test -f fixed || { echo FAIL: not fixed; exit 3; }"]]}
            """)
        // A plain agent (no necro runner): the dispatcher runs the gate. It fixes the problem once
        // it is told what failed.
        try dir.write(
            "agent.sh",
            #"""
            #!/bin/sh
            printf '%s' "$TASK_CONTEXT" > "$ROOT/context-$NECRO_ATTEMPT"
            echo "attempt $NECRO_ATTEMPT" > "attempt-$NECRO_ATTEMPT.txt"
            case "$TASK_CONTEXT" in *'"output_tail":"checking'*FAIL*) touch fixed;; esac
            """#)
        chmod(dir.file("agent.sh"), 0o755)
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_initial_delay: 0.05, retry_max_attempts: 3}
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: ["\(dir.file("agent.sh"))"]
                  env: {ROOT: "\(dir.path)"}
            """)
        let result = try await Self.run(dir, repository.map { ["--workspace", $0.path] } ?? ["--no-workspace"])
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("attempt failed: gate `sh -c echo checking; test -f fixed || { echo FAIL: not fixed; exit 3; }` failed: exit code 3"), "\(result.stdout)")
        if let repository {
            // The failed attempt's work is kept under its attempt's ref; the branch has the second's.
            #expect(repository.show("refs/necro/attempts/demo/1/1", "attempt-1.txt") == "attempt 1\n")
            #expect(repository.show("necro/demo/1", "attempt-2.txt") == "attempt 2\n" && repository.show("necro/demo/1", "fixed") != nil)
        }
        let first = try JSONDecoder().decode([String: JSONValue].self, from: Data(contentsOf: URL(fileURLWithPath: dir.file("context-1"))))
        let second = try JSONDecoder().decode([String: JSONValue].self, from: Data(contentsOf: URL(fileURLWithPath: dir.file("context-2"))))
        #expect(first["previous_failure"] == .null)
        guard case .object(let failure)? = second["previous_failure"] else {
            Issue.record("no previous_failure in attempt 2's TASK_CONTEXT: \(second)")
            return
        }
        #expect(failure["gate"] == "sh -c echo checking; test -f fixed || { echo FAIL: not fixed; exit 3; }")
        #expect(failure["exit_code"] == 3 && failure["attempt"] == 1)
        #expect(failure["output_tail"] == "checking\nFAIL: not fixed\n")
        let events = try Self.events(dir)
        #expect(events.filter { $0.type == .gateResult }.map { $0.payload["passed"] } == [false, true])
        #expect(events.filter { $0.type == .gateStart }.allSatisfy { $0.actor == "gate_runner" && $0.phase == "verifying" })
        #expect(events.filter { $0.type == .taskCompleted }.count == 1)
        // The plain agent's leases are the dispatcher's: acquired at each assignment.
        #expect(events.filter { $0.type == .leaseAcquired }.map { $0.payload["lease_holder"]?.stringValue?.hasPrefix("demo.1.a") } == [true, true])
    }

    @Test func aGateThatHangsIsStoppedAtItsTimeoutAndTheTaskIsNeverDone() async throws {
        let dir = try TemporaryDirectory("gate-timeout")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Hang, gates: [[sleep, \"600\"]]}\n")
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 1, gate_timeout: 1}
            agent_pools:
              local: {max_concurrency: 1, config: {command: [/bin/true]}}
            """)
        let started = Date()
        let result = try await Self.run(dir)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 60)
        let events = try Self.events(dir)
        let gate = try #require(events.first { $0.type == .gateResult })
        #expect(gate.payload["status"] == "timed_out" && gate.payload["passed"] == false)
        #expect(events.contains { $0.type == .taskFailed && $0.payload["failure_reason"] == "gate `sleep 600` failed: timed out after 1 s" })
        #expect(!events.contains { $0.type == .taskCompleted })
    }

    @Test func aGateNecroRunnerReportsFailedFailsTheAttemptAndIsNotRunAgainByTheDispatcher() async throws {
        let dir = try TemporaryDirectory("runner-gate")
        defer { dir.remove() }
        try dir.write("tasks.yaml", Self.twoSteps)
        // Attempt 1 forgets the tests; attempt 2 reads why it failed and writes them.
        try Self.config(
            dir,
            agent: #"echo code > code.txt; case "$TASK_CONTEXT" in *\"previous_failure\":{*) echo tests > tests.txt;; esac"#,
            dispatcher: "  retry_max_attempts: 2")
        let result = try await Self.run(dir)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try Self.events(dir)
        #expect(events.filter { $0.type == .gateStart }.count == 2, "one per attempt: the runner's, not the dispatcher's again")
        #expect(events.filter { $0.type == .gateResult }.map { $0.payload["passed"] } == [false, true])
        let finished = events.filter { $0.type == .runnerFinished }
        #expect(finished.first?.payload["gate"] == "sh -c test -f code.txt && test -f tests.txt && echo both there")
        #expect(finished.first?.payload["failure_reason"] == "gate `sh -c test -f code.txt && test -f tests.txt && echo both there` failed: exit code 1")
        #expect(events.filter { $0.type == .runnerExit }.map { $0.payload["exit_reason"]?.stringValue?.hasPrefix("gate failed") } == [true, false])
    }

    @Test func aLocalPoolWithoutCommandOrAgentFailsItsTaskAtOnceNamingWhatIsMissingAndWhere() async throws {
        let dir = try TemporaryDirectory("no-agent")
        defer { dir.remove() }
        // Task 2 names its own agent: it runs.
        try dir.write(
            "tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: One}\n  - {id: \"2\", title: Two, agent: [sh, -c, \"echo mine > mine.txt\"]}\n")
        try dir.write("necro.yaml", "dispatcher: {retry_max_attempts: 3}\nagent_pools:\n  local:\n    max_concurrency: 1\n")
        let result = try await Self.run(dir)
        #expect(result.status == 1)
        let events = try Self.events(dir)
        #expect(events.filter { $0.type == .taskAssigned && $0.taskID == "1" }.count == 1, "not retried")
        #expect(events.contains { $0.type == .taskCompleted && $0.taskID == "2" })
        #expect(FileManager.default.fileExists(atPath: dir.file(".necro/work/demo/2/mine.txt")), "the task's own agent ran")
        let failed = try #require(events.first { $0.type == .taskFailed })
        #expect(failed.payload["retryable"] == false)
        #expect(failed.payload["failure_reason"]?.stringValue?.contains("pool local (necro.yaml:4) has no config.command") == true, "\(failed.payload)")
        #expect(failed.payload["failure_reason"]?.stringValue?.contains("no agent is configured") == true)
    }
}

/// Resume after kill -9: the next attempt starts from the task's last checkpoint.
extension RunnerSideTests {
    /// Attempt 1 does step 1 (checkpointed), leaves junk, says who runs it, and hangs; an attempt
    /// after the kill records what it found and does step 2.
    static let resumingAgent = #"""
        #!/bin/sh
        if [ ! -e "$ROOT/killed" ]; then
          $NECRO step start 1 && echo a > a.txt && $NECRO step done 1 && echo junk > junk.txt && echo "$PPID $$" > "$ROOT/ready" && exec sleep 600
        fi
        printf "%s" "$NECRO_DONE_STEPS" > "$ROOT/done-steps"
        [ -f a.txt ] && touch "$ROOT/saw-a"
        [ -f junk.txt ] && touch "$ROOT/saw-junk"
        $NECRO step start 2 && echo b > b.txt && $NECRO step done 2
        """#

    /// One task of two steps, each writing a file.
    static let twoFiles = """
        spec_name: demo
        tasks:
          - id: "1"
            title: Two files
            steps: [{title: Write a}, {title: Write b}]
        """

    static func resumeSetup(_ name: String) throws -> (TemporaryDirectory, GitRepository) {
        let dir = try TemporaryDirectory(name)
        let repository = try GitRepository(at: dir.file("repo"))
        try dir.write("tasks.yaml", twoFiles)
        try dir.write("agent.sh", resumingAgent)
        chmod(dir.file("agent.sh"), 0o755)
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_initial_delay: 0.05, retry_max_attempts: 3, graceful_shutdown_timeout: 1}
            agent: {command: ["\(dir.file("agent.sh"))"]}
            agent_pools:
              local:
                max_concurrency: 1
                config: {env: {ROOT: "\(dir.path)", NECRO: "\(NecroBinary.path)"}}
            """)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        return (dir, repository)
    }

    @Test func afterKill9OfTheRunnerTheNextAttemptGoesOnFromTheLastCheckpoint() async throws {
        let (dir, repository) = try Self.resumeSetup("resume-runner")
        defer { dir.remove() }
        let run = try NecroBinary.start(["run", "tasks.yaml", "--workspace", repository.path, "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let pids = awaitLine(fromFIFO: dir.file("ready")).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        let runner = try #require(pids.first)
        defer { kill(pids.last!, SIGKILL) }
        try dir.write("killed", "")
        kill(runner, SIGKILL)
        await waitForExit(run)
        #expect(run.terminationStatus == 0)
        // Attempt 2 found step 1's file, not what came after the checkpoint, and step 1 done.
        #expect(FileManager.default.fileExists(atPath: dir.file("saw-a")))
        #expect(!FileManager.default.fileExists(atPath: dir.file("saw-junk")))
        #expect(try String(contentsOfFile: dir.file("done-steps"), encoding: .utf8) == "1")
        let events = try Self.events(dir)
        let resumed = try #require(events.first { $0.type == .recoveryResumedFromCheckpoint })
        #expect(resumed.payload["runner_id"]?.stringValue?.hasPrefix("demo.1.a2") == true)
        #expect(resumed.payload["sequence_number"] == 1 && resumed.payload["work_item_id"] == "step_1")
        #expect(resumed.payload["work_items_done"] == .array(["step_1"]) && resumed.payload["checkpoint_id"] == "1#1")
        #expect(events.filter { $0.type == .workItemDispatched && $0.payload["work_item_id"] == "step_1" }.count == 1, "step 1 is not redone")
        #expect(events.filter { $0.type == .checkpointCommit }.map { $0.payload["sequence_number"] } == [1, 2])
        // The task's branch has both files; the checkpoints stay as history.
        #expect(try repository.git("show", "necro/demo/1:a.txt") == "a" && repository.git("show", "necro/demo/1:b.txt") == "b")
        #expect(repository.exists("refs/necro/checkpoints/demo/1/1") && repository.exists("refs/necro/checkpoints/demo/1/2"))
    }

    @Test(arguments: [false, true])
    func afterKill9OfTheDispatcherAndTheRunnerTheNextAttemptResumesUnlessTheCheckpointIsCorrupt(_ corrupt: Bool) async throws {
        let (dir, repository) = try Self.resumeSetup("resume-both")
        defer { dir.remove() }
        let run = try NecroBinary.start(["run", "tasks.yaml", "--workspace", repository.path, "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let pids = awaitLine(fromFIFO: dir.file("ready")).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        let runner = try #require(pids.first)
        defer { kill(pids.last!, SIGKILL) }  // the agent: in a group of its own, it outlives its supervisor
        // The dispatcher, the runner's supervisor and the runner's process group. (Whether the
        // next dispatcher gives the attempt back depends on whether the dead runner is reaped
        // by then; `DispatcherTests` covers the attempt given back.)
        kill(run.processIdentifier, SIGKILL)
        let stat = try String(contentsOfFile: "/proc/\(runner)/stat", encoding: .utf8)
        let supervisor = try #require(Int32(stat[stat.range(of: ") ")!.upperBound...].split(separator: " ")[1]))
        let group = getpgid(runner)
        #expect(group > 1 && supervisor > 1)
        kill(supervisor, SIGKILL)
        kill(-group, SIGKILL)
        await waitForExit(run)
        try dir.write("killed", "")
        if corrupt {
            // The ref now names another commit: it does not read back as recorded.
            try repository.git("update-ref", "refs/necro/checkpoints/demo/1/1", "main")
        }
        let second = try await NecroBinary.runAsync(["run", "tasks.yaml", "--workspace", repository.path, "--no-server"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        let events = try Self.events(dir)
        #expect(events.filter { $0.type == .taskAssigned }.count == 2)
        #expect(!FileManager.default.fileExists(atPath: dir.file("saw-junk")))
        if corrupt {
            let invalid = try #require(events.first { $0.type == .checkpointInvalid })
            #expect(invalid.payload["checkpoint_id"] == "1#1")
            #expect(!events.contains { $0.type == .recoveryResumedFromCheckpoint })
            #expect(!FileManager.default.fileExists(atPath: dir.file("saw-a")), "a clean start")
            #expect(try String(contentsOfFile: dir.file("done-steps"), encoding: .utf8) == "")
        } else {
            #expect(events.contains { $0.type == .checkpointVerified && $0.phase == nil })
            let resumed = try #require(events.first { $0.type == .recoveryResumedFromCheckpoint })
            #expect(resumed.payload["sequence_number"] == 1)
            #expect(FileManager.default.fileExists(atPath: dir.file("saw-a")))
            #expect(try String(contentsOfFile: dir.file("done-steps"), encoding: .utf8) == "1")
        }
        for task in ["1"] as [TaskID] {
            let own = events.filter { $0.taskID == task }
            #expect(own.map(\.seq) == Array(1...Int64(own.count)), "gapless seq")
        }
    }

    @Test func eventsSpooledWhileTheDispatcherIsDownArriveOnceInOrderWithTheirOwnTimes() async throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        try dir.write("tasks.yaml", Self.twoSteps)
        try Self.config(
            dir,
            agent: #"$NECRO step start 1 && echo code > code.txt && $NECRO step done 1 && echo $PPID > "$ROOT/ready" && while [ ! -e "$ROOT/go" ]; do sleep 0.05; done; $NECRO step start 2 && echo tests > tests.txt && $NECRO step done 2 && touch "$ROOT/finished""#)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        let run = try NecroBinary.start(["run", "tasks.yaml", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let runner = try #require(Int32(awaitLine(fromFIFO: dir.file("ready")).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(runner, SIGKILL) }
        kill(run.processIdentifier, SIGKILL)
        await waitForExit(run)
        try dir.write("go", "")
        // The runner goes on without its dispatcher; what it reports waits in its spool.
        let spoolFolder = dir.file(".necro/work/demo/1/.necro")
        var spooled: [String] = []
        for _ in 0..<600 where spooled.isEmpty || !FileManager.default.fileExists(atPath: dir.file("finished")) {
            try await Task.sleep(for: .milliseconds(50))
            spooled = ((try? FileManager.default.contentsOfDirectory(atPath: spoolFolder)) ?? []).filter { $0.hasPrefix("spool-") }
        }
        #expect(spooled.count == 1 && FileManager.default.fileExists(atPath: dir.file("finished")))
        let downUntil = Date().timeIntervalSince1970
        let second = try await NecroBinary.runAsync(["run", "tasks.yaml", "--no-server"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        let events = try Self.events(dir)
        #expect(events.map(\.seq) == Array(1...Int64(events.count)), "gapless seq")
        let reported = events.filter { $0.payload["runner_seq"] != nil }
        let seqs = reported.compactMap { $0.payload["runner_seq"]?.intValue }
        #expect(seqs == Array(1...seqs.count), "each once, in the runner's order")
        let stepTwo = try #require(reported.first { $0.type == .workItemDone && $0.payload["work_item_id"] == "step_2" })
        #expect(stepTwo.timestamp.secondsSince1970 < downUntil, "recorded at the time it happened, not when it arrived")
        #expect(events.contains { $0.type == .runnerAdopted })
        #expect(reported.last?.type == .runnerExit)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: spoolFolder)) ?? []).filter { $0.hasPrefix("spool-") }.isEmpty, "the spool is emptied")
    }
}

/// Waits for a process to end, up to two minutes, without blocking a cooperative thread.
func waitForExit(_ process: Process) async {
    for _ in 0..<1200 where process.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
}

/// The lease while the agent thinks: kept for a quiet agent, let go once it stalls.
extension RunnerSideTests {
    @Test(arguments: [false, true])
    func aQuietAgentKeepsItsLeaseThroughNecroRunnerUntilItStalls(_ stalls: Bool) async throws {
        let dir = try TemporaryDirectory("runner-lease")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Think}\n")
        // Silent for 5 s: no output, no CPU time, no file written; the heartbeat timeout is 2 s.
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {heartbeat_timeout: 2, retry_max_attempts: 1}
            agent:
              command: [sleep, "5"]
              \(stalls ? "stall_timeout: 1" : "")
            agent_pools:
              local: {max_concurrency: 1}
            """)
        let result = try await Self.run(dir)
        let events = try Self.events(dir)
        let renewed = events.filter { $0.type == .leaseRenewed }
        if stalls {
            #expect(result.status == 1)
            #expect(events.contains { $0.type == .runnerTimedOut && $0.payload["reason"] == "no heartbeat for 2 s" })
            let log = try String(contentsOfFile: dir.file(".necro/logs/\(try #require(events.first { $0.type == .runnerStarted }?.payload["runner_id"]?.stringValue)).log"), encoding: .utf8)
            #expect(log.contains("the agent shows no activity (output, CPU time, files) for 1 s: a stall; its lease is left to lapse"), "\(log)")
        } else {
            #expect(result.status == 0, "\(result.stdout)")
            // Renewed on the work item's span, a third of the timeout apart at most.
            #expect(renewed.count >= 4 && renewed.count <= 9, "\(renewed.count)")
            #expect(renewed.allSatisfy { $0.spanID == "work_step_1" && $0.parentSpanID == "main" && $0.actor == "lease_manager" })
            let times = renewed.map(\.timestamp.secondsSince1970)
            #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 > 0.5 }, "coalesced: \(times)")
        }
    }
}

/// Gates under `necro runner`: they keep the lease while they run quietly, and a stop reaches them.
extension RunnerSideTests {
    @Test func aQuietGateKeepsTheLeaseAndAStopReachesTheGateThatRuns() async throws {
        let dir = try TemporaryDirectory("runner-gate-stop")
        defer { dir.remove() }
        // 1: a gate silent for 4 s, longer than the 2 s heartbeat timeout. 2: a gate of 60 s in a
        // task with a timeout of 3 s: stopped with its task, not left running.
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - {id: "1", title: Quiet gate, gates: [[sleep, "4"]]}
              - {id: "2", title: Long gate, timeout_seconds: 3, gates: [[sh, -c, "echo $$ > $ROOT/gate-pid; exec sleep 60"]]}
            """)
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {heartbeat_timeout: 2, retry_max_attempts: 1}
            agent: {command: [/bin/true]}
            agent_pools:
              local: {max_concurrency: 2, config: {env: {ROOT: "\(dir.path)"}}}
            """)
        let started = Date()
        let result = try await Self.run(dir)
        #expect(result.status == 1, "2 fails: \(result.stdout)")
        #expect(Date().timeIntervalSince(started) < 9, "the stop reached the gate: no 10 s kill grace")
        let events = try Self.events(dir)
        #expect(events.contains { $0.taskID == "1" && $0.type == .taskCompleted })
        #expect(events.contains { $0.taskID == "2" && $0.type == .taskFailed && $0.payload["failure_reason"] == "timed out after 3 s" })
        #expect(!events.contains { $0.type == .runnerTimedOut && $0.taskID == "1" })
        let pid = try #require(Int32(String(contentsOfFile: dir.file("gate-pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(pid, 0) != 0, "the gate is not left running")
    }
}

extension RunnerSideTests {
    /// A runner adopted after a dispatcher's kill -9 has its gates run as they would have been:
    /// in its folder, with the environment it was given.
    @Test func theGatesOfARunnerAdoptedAfterAKill9RunWithItsEnvironment() async throws {
        let dir = try TemporaryDirectory("adopted-gate")
        defer { dir.remove() }
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - {id: "1", title: Adopted, gates: [[sh, -c, "test \\"$NECRO_TASK_ID/$GREETING\\" = 1/hello && test -f work.txt"]]}
            """)
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: [/bin/sh, -c, 'echo work > work.txt; echo $$ > "$ROOT/ready"; while [ ! -e "$ROOT/go" ]; do sleep 0.05; done']
                  env: {ROOT: "\(dir.path)", GREETING: hello}
            """)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        let first = try NecroBinary.start(["run", "tasks.yaml", "--no-server"], in: dir.path)
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let runner = try #require(Int32(awaitLine(fromFIFO: dir.file("ready")).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(runner, SIGKILL) }
        kill(first.processIdentifier, SIGKILL)
        await waitForExit(first)
        let second = try NecroBinary.start(["run", "tasks.yaml", "--no-server"], in: dir.path)
        defer { if second.isRunning { kill(second.processIdentifier, SIGKILL) } }
        // Once it has adopted the runner, the runner ends.
        for _ in 0..<300 where !((try? Self.events(dir)) ?? []).contains(where: { $0.type == .runnerAdopted }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        try dir.write("go", "")
        await waitForExit(second)
        #expect(second.terminationStatus == 0)
        let gate = try #require(try Self.events(dir).first { $0.type == .gateResult })
        #expect(gate.payload["passed"] == true, "\(gate.payload)")
    }
}

extension RunnerSideTests {
    /// `steps: each`: the agent once per step, with `NECRO_STEP`; after a failure, the next
    /// attempt runs only the steps not done. And the agent's own `necro checkpoint`.
    @Test func withStepsEachTheAgentRunsOncePerStepNotDoneAndMayCheckpointWhenItLikes() async throws {
        let dir = try TemporaryDirectory("steps-each")
        defer { dir.remove() }
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - id: "1"
                title: Three steps
                steps: [{title: One}, {title: Two}, {title: Three}]
            """)
        // Step 2 fails on attempt 1, after a checkpoint of its own.
        try Self.config(
            dir,
            agent: #"echo "$NECRO_ATTEMPT:$NECRO_STEP" >> "$ROOT/runs"; echo "$NECRO_STEP" > "step-$NECRO_STEP.txt"; if [ "$NECRO_STEP$NECRO_ATTEMPT" = 21 ]; then $NECRO checkpoint half of step 2 > "$ROOT/said"; exit 1; fi"#,
            dispatcher: "  retry_max_attempts: 2")
        var text = try String(contentsOfFile: dir.file("necro.yaml"), encoding: .utf8)
        text = text.replacingOccurrences(of: "agent:\n", with: "agent:\n  steps: each\n")
        try dir.write("necro.yaml", text)
        let result = try await Self.run(dir)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(try String(contentsOfFile: dir.file("runs"), encoding: .utf8) == "1:1\n1:2\n2:2\n2:3\n", "step 1 is not run again")
        #expect(try String(contentsOfFile: dir.file("said"), encoding: .utf8).hasPrefix("ok checkpoint 2 refs/necro/checkpoints/demo/1/2"))
        let events = try Self.events(dir)
        let commits = events.filter { $0.type == .checkpointCommit }
        #expect(commits.map { $0.payload["checkpoint_type"] } == ["work_item", "agent", "work_item", "work_item"])
        #expect(commits[1].payload["work_item_id"] == "step_2" && commits[1].payload["work_items_done"] == .array(["step_1"]))
        // Attempt 2 goes on from the agent's own checkpoint, the last one.
        let resumed = try #require(events.first { $0.type == .recoveryResumedFromCheckpoint })
        #expect(resumed.payload["sequence_number"] == 2 && resumed.payload["work_items_done"] == .array(["step_1"]))
        #expect(events.filter { $0.type == .runnerExit }.map { $0.payload["iterations"] } == [2, 2])
    }

    /// What keeps a quiet agent from stalling: files changing in its folder, or its CPU time.
    @Test(arguments: ["files", "cpu"])
    func anAgentThatPrintsNothingButWorksIsNotAStall(_ activity: String) async throws {
        let dir = try TemporaryDirectory("runner-activity")
        defer { dir.remove() }
        try dir.write("tasks.yaml", "spec_name: demo\ntasks:\n  - {id: \"1\", title: Work}\n")
        let work =
            activity == "files"
            ? #"i=0; while [ $i -lt 12 ]; do echo $i > progress.txt; sleep 0.3; i=$((i+1)); done"#
            : #"end=$(( $(date +%s) + 4 )); while [ $(date +%s) -lt $end ]; do :; done"#
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {heartbeat_timeout: 2, retry_max_attempts: 1}
            agent:
              command: [/bin/sh, -c, '\(work)']
              stall_timeout: 1
            agent_pools:
              local: {max_concurrency: 1}
            """)
        let result = try await Self.run(dir)
        #expect(result.status == 0, "\(result.stdout)")
        let events = try Self.events(dir)
        #expect(!events.contains { $0.type == .runnerTimedOut })
        #expect(events.filter { $0.type == .leaseRenewed }.count >= 3)
    }
}

extension RunnerSideTests {
    /// The dispatcher stays away longer than the runner waits: the runner finishes, runs its gate,
    /// and exits with its last events in its spool. The next dispatcher records them (its
    /// checkpoints, its gate's result) before it counts the exit: the task is done, not run again.
    @Test func eventsARunnerCouldNotSendBeforeItEndedAreRecordedByTheNextDispatcher() async throws {
        let dir = try TemporaryDirectory("spool-ended")
        defer { dir.remove() }
        try dir.write("tasks.yaml", Self.twoSteps)
        let agent = #"$NECRO step start 1 && echo code > code.txt && $NECRO step done 1 && echo $PPID > "$ROOT/ready" && while [ ! -e "$ROOT/go" ]; do sleep 0.05; done; $NECRO step start 2 && echo tests > tests.txt && $NECRO step done 2"#
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 2, retry_initial_delay: 0.05}
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: ["\(NecroBinary.path)", runner, --flush-timeout, "0.5", --, /bin/sh, -c, '\(agent)']
                  env: {ROOT: "\(dir.path)", NECRO: "\(NecroBinary.path)"}
            """)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        let run = try NecroBinary.start(["run", "tasks.yaml", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let runner = try #require(Int32(awaitLine(fromFIFO: dir.file("ready")).trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(run.processIdentifier, SIGKILL)
        await waitForExit(run)
        try dir.write("go", "")
        // The runner ends on its own, its events unsent.
        for _ in 0..<600 where kill(runner, 0) == 0 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(kill(runner, 0) != 0)
        let spool = dir.file(".necro/work/demo/1/.necro")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).contains { $0.hasPrefix("spool-") })
        let second = try await Self.run(dir, ["--no-server"])
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        let events = try Self.events(dir)
        #expect(events.map(\.seq) == Array(1...Int64(events.count)), "gapless seq")
        #expect(events.filter { $0.type == .taskAssigned }.count == 1, "not run again")
        #expect(events.filter { $0.type == .checkpointCommit }.map { $0.payload["sequence_number"] } == [1, 2])
        #expect(events.contains { $0.type == .gateResult && $0.payload["passed"] == true })
        let seqs = events.compactMap { $0.payload["runner_seq"]?.intValue }
        #expect(seqs == Array(1...seqs.count), "each once, in the runner's order")
        #expect(events.last { $0.type == .runnerExit }.map { $0.timestamp.secondsSince1970 } ?? 0 < events.first { $0.type == .runnerFinished }!.timestamp.secondsSince1970)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).filter { $0.hasPrefix("spool-") }.isEmpty)
    }
}
