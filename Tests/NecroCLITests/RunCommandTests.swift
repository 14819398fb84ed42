import Foundation
import NecroCore
import NecroRegistry
import NecroRunners
import NecroTesting
import Testing

private let example = "\(repositoryRoot)/Examples/chat-app"

/// `necro run --json`, started without waiting for it; its events are read as it prints them.
private final class WatchedRun {
    let process: Process
    private let output: FileHandle
    private var pending = Data()

    init(_ arguments: [String], in directory: String) throws {
        let pipe = Pipe()
        process = Process()
        process.executableURL = URL(fileURLWithPath: NecroBinary.path)
        process.arguments = arguments + ["--json"]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        output = pipe.fileHandleForReading
    }

    /// Blocks until the run has printed an event of `type` for each of `tasks` (it prints an
    /// event once it is committed), or it ends; returns the tasks seen.
    @discardableResult
    func awaitEvents(_ type: EventType, for tasks: Set<TaskID>) -> Set<TaskID> {
        var seen: Set<TaskID> = []
        while !tasks.isSubset(of: seen) {
            guard let newline = pending.firstIndex(of: 10) else {
                let more = output.availableData  // blocks until there is output, empty at its end
                if more.isEmpty { break }
                pending.append(more)
                continue
            }
            let line = pending[pending.startIndex..<newline]
            pending.removeSubrange(pending.startIndex...newline)
            guard let event = try? JSONDecoder().decode([String: JSONValue].self, from: Data(line)),
                event["event_type"]?.stringValue == type.rawValue, let task = event["task_id"]?.stringValue
            else { continue }
            seen.insert(TaskID(task))
        }
        return seen
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

private func writeConfig(_ dir: TemporaryDirectory, script: String, concurrency: Int = 2, extra: String = "") throws {
    try dir.write(
        "necro.yaml",
        """
        dispatcher:
          graceful_shutdown_timeout: 1
          retry_max_attempts: 2
          retry_initial_delay: 0.05
        \(extra)
        agent_pools:
          local:
            max_concurrency: \(concurrency)
            config:
              command: [/bin/sh, -c, '\(script)']
              env: {ROOT: "\(dir.path)"}
        """)
}

@Suite(.serialized) struct RunCommandTests {
    @Test func theBundledExampleRunsToTheEndAndASecondRunHasNothingToDo() throws {
        let dir = try TemporaryDirectory("example")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("chat-app"), withIntermediateDirectories: true)
        for file in ["tasks.md", "necro.yaml", "agent.sh"] {
            try FileManager.default.copyItem(atPath: "\(example)/\(file)", toPath: dir.file("chat-app/\(file)"))
        }
        let result = try NecroBinary.run(["run", "chat-app/tasks.md"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("3.2  attempt failed: exit code 1"))
        #expect(result.stdout.contains("3.2  started on local, attempt 2"))
        #expect(result.stdout.contains("\nchat-app: 12 done, 2 skipped in "), "\(result.stdout)")
        #expect(result.stdout.contains("  skipped  2.3, 7: optional; necro run --with-optional runs them"), "\(result.stdout)")
        #expect(!result.stdout.contains("no pool serves skill"), "the example maps its skills")
        #expect(!result.stderr.contains("HummingbirdCore") && !result.stderr.contains("error"), "nothing stray: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file(".necro/work/chat-app/7")), "the optional 7 did not run")
        let result32 = try String(contentsOfFile: dir.file(".necro/work/chat-app/3.2/docs/RESULT-3.2.md"), encoding: .utf8)
        #expect(result32.contains("Done by runner chat-app.3.2.a2-"))
        #expect(!FileManager.default.fileExists(atPath: dir.file(".necro/work/chat-app/1/docs/RESULT-1.md")), "1 was marked done")

        let again = try NecroBinary.run(["run", "chat-app/tasks.md", "--json"], in: dir.path)
        #expect(again.status == 0)
        let types = again.stdout.split(separator: "\n").compactMap {
            (try? JSONDecoder().decode([String: JSONValue].self, from: Data($0.utf8)))?["event_type"]?.stringValue
        }
        #expect(types == ["DispatcherStarted", "DispatcherStopped"], "resumed: nothing left to run")

        // Asked for, the optional tasks run, and only they.
        let optional = try NecroBinary.run(["run", "chat-app/tasks.md", "--with-optional", "--json"], in: dir.path)
        #expect(optional.status == 0, "\(optional.stderr)")
        let started = optional.stdout.split(separator: "\n").compactMap { line -> String? in
            guard let event = try? JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8)),
                event["event_type"] == "TaskAssigned"
            else { return nil }
            return event["task_id"]?.stringValue
        }
        #expect(started.sorted() == ["2.3", "7"])
        #expect(FileManager.default.fileExists(atPath: dir.file(".necro/work/chat-app/7/docs/RESULT-7.md")))
    }

    @Test func theBundledExampleRunsInWorktreesOfTheSampleRepositoryAndListsItsBranches() throws {
        let dir = try TemporaryDirectory("example-repo")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("chat-app"), withIntermediateDirectories: true)
        for file in ["tasks.md", "necro.yaml", "agent.sh", "sample-repo.sh"] {
            try FileManager.default.copyItem(atPath: "\(example)/\(file)", toPath: dir.file("chat-app/\(file)"))
        }
        let made = try runProcess("/bin/sh", ["chat-app/sample-repo.sh", "repo"], in: dir.path)
        #expect(made.status == 0, "\(made.stderr)")
        // With its default path it makes necro's folder as necro would: the user's alone.
        let byDefault = try TemporaryDirectory("sample-default")
        defer { byDefault.remove() }
        #expect(try runProcess("/bin/sh", ["\(example)/sample-repo.sh"], in: byDefault.path).status == 0)
        var folder = stat()
        #expect(stat(byDefault.file(".necro"), &folder) == 0 && folder.st_mode & 0o777 == 0o700)
        let result = try NecroBinary.run(["run", "chat-app/tasks.md", "--workspace", "repo"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("\nchat-app: 12 done, 2 skipped in "), "\(result.stdout)")
        // Eleven tasks ran (1 was marked done, 2.3 and 7 are optional); each has its branch in the summary.
        #expect(result.stdout.contains("branches (11, from main):"), "\(result.stdout)")
        #expect(result.stdout.contains("result: necro/chat-app/result "), "\(result.stdout)")
        #expect(result.stdout.contains("every done task's work merged (11 tasks)"), "\(result.stdout)")
        let repo = GitRepository(existing: dir.file("repo"))
        for id in ["2.1", "2.2", "3.1", "3.2", "3.3", "3.4", "4.1", "4.2", "4.3", "5", "6"] {
            #expect(result.stdout.contains("  necro/chat-app/\(id) "), "branch of \(id) listed")
            #expect(repo.show("necro/chat-app/\(id)", "docs/RESULT-\(id).md")?.contains("Done by runner chat-app.\(id).a") == true)
        }
        // The agent commits its own work; 2.2 leaves it uncommitted and the dispatcher commits it.
        #expect(try repo.git("log", "-1", "--format=%s", "necro/chat-app/3.1") == "3.1: JWT auth")
        #expect(try repo.git("log", "-1", "--format=%s %an", "necro/chat-app/2.2") == "necro: task 2.2 Write the migrations NecroCode Dispatcher")
        // The last task's branch holds the work of everything it depends on, directly or not.
        let last = try repo.git("ls-tree", "--name-only", "necro/chat-app/6", "docs/").split(separator: "\n").filter { $0.contains("RESULT-") }
        #expect(last.count == 11 && !last.contains("docs/RESULT-2.3.md"), "\(last)")
        // 3.2's failed first attempt is kept off its branch.
        #expect(repo.show("refs/necro/attempts/chat-app/3.2/1", "docs/RESULT-3.2.md") != nil)
        #expect(try repo.git("status", "--porcelain").isEmpty, "the user's checkout is untouched")
    }

    @Test func aBadConfigurationExitsTwoAndLeavesTheRegistryAlone() throws {
        let dir = try TemporaryDirectory("badconfig")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. One\n")
        try writeConfig(dir, script: "true")
        #expect(try NecroBinary.run(["run", "tasks.md"], in: dir.path).status == 0)
        let registry = dir.file(".necro/registry.sqlite")
        let before = try SQLiteRegistry(path: registry).events(EventQuery())
        try dir.write("necro.yaml", "dispatcher:\n  max_global_concurrency: 0\nagent_pools:\n  local: {type: kubernetes, max_concurrency: 1}\n")
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n")
        let result = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(result.status == 2)
        #expect(result.stderr.contains("necro.yaml:2 (dispatcher.max_global_concurrency): error: dispatcher.max_global_concurrency must be an integer from 1 to 1000000, found 0"))
        #expect(result.stderr.contains("necro.yaml:4 (agent_pools.local.type): error: pool type kubernetes is not supported yet"))
        #expect(try SQLiteRegistry(path: registry).events(EventQuery()) == before)
        #expect(try SQLiteRegistry(path: registry).tasks(spec: dir.path.split(separator: "/").last.map(String.init) ?? "").count <= 1)

        try writeConfig(dir, script: "true")
        try dir.write("tasks.md", "- [ ] 1. One\n  - _Depends: 2_\n- [ ] 2. Two\n  - _Depends: 1_\n")
        let cyclic = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(cyclic.status == 2)
        #expect(cyclic.stderr.contains("dependency cycle: 1 -> 2 -> 1"))
        #expect(try SQLiteRegistry(path: registry).events(EventQuery()) == before)

        let none = try TemporaryDirectory("noconfig")
        defer { none.remove() }
        try none.write("tasks.md", "- [ ] 1. One\n")
        let missing = try NecroBinary.run(["run", "tasks.md"], in: none.path)
        #expect(missing.status == 2 && missing.stderr.contains("no configuration"))
    }

    @Test func sigtermStopsGracefullyAndGivesTheAttemptsBack() throws {
        let dir = try TemporaryDirectory("sigterm")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready-1"), 0o644) == 0 && mkfifo(dir.file("ready-2"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Long one\n- [ ] 2. Long two\n- [ ] 3. After\n  - _Depends: 1_\n")
        // Each says it runs, then works "forever"; SIGTERM ends it.
        try writeConfig(dir, script: #"echo running > "$ROOT/ready-$NECRO_TASK_ID"; exec sleep 600"#)
        let run = try NecroBinary.start(["run", "tasks.md"], in: dir.path, outputFile: dir.file("stdout"))
        #expect(awaitLine(fromFIFO: dir.file("ready-1")) == "running\n")
        #expect(awaitLine(fromFIFO: dir.file("ready-2")) == "running\n")
        kill(run.processIdentifier, SIGTERM)
        run.waitUntilExit()
        #expect(run.terminationStatus == 130)
        // Said with the time, where the run's lines go (above the live block, on a terminal).
        let said = try String(contentsOfFile: dir.file("stdout"), encoding: .utf8)
        #expect(said.contains("stopping 2 runners now: the graceful period is over (SIGTERM, then SIGKILL after 10 s)"), "\(said)")
        #expect(said.contains("  stopping: nothing new starts; waiting up to 1 s for 2 runners to finish; a second Ctrl-C (or SIGTERM) stops them now"), "\(said)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        let records = Dictionary(uniqueKeysWithValues: try registry.tasks(spec: spec).map { ($0.task.id, $0) })
        #expect(records["1"]?.state == .ready && records["1"]?.attempts == 0)
        #expect(records["2"]?.state == .ready && records["2"]?.attempts == 0)
        #expect(records["3"]?.state == .blocked)
        let stopped = try registry.events(EventQuery(spec: spec)).last { $0.type == .dispatcherStopped }
        #expect(stopped?.payload["interrupted"] == true)
        #expect(stopped?.payload["left"] == ["1", "2", "3"])
        #expect(try registry.runners(runningOnly: true).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir.file(".necro/registry.sqlite.dispatcher.pid")))

        let status = try NecroBinary.run(["status"], in: dir.path)
        #expect(status.stdout.contains("\(spec) v1: 1 blocked, 2 ready"))
        let events = try NecroBinary.run(["events", "--task", "1", "--json"], in: dir.path)
        let seqs = events.stdout.split(separator: "\n").compactMap {
            (try? JSONDecoder().decode([String: JSONValue].self, from: Data($0.utf8)))?["seq"]?.intValue
        }
        #expect(seqs == Array(1...seqs.count) && seqs.count >= 5)
    }

    @Test func aPoolEnabledFromTheCommandLineReachesTheRunningDispatcher() throws {
        let dir = try TemporaryDirectory("pool")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n")
        try writeConfig(dir, script: "true")
        try dir.write("seed.md", "- [ ] 1. Seed\n")
        #expect(try NecroBinary.run(["import", "seed.md"], in: dir.path).status == 0)
        #expect(try NecroBinary.run(["pool", "disable", "local"], in: dir.path).stdout == "pool local disabled\n")
        let run = try NecroBinary.start(["run", "tasks.md"], in: dir.path)
        // The run waits: its only pool is disabled. Wait for it to be up (its pid file), then enable.
        let pidFile = dir.file(".necro/registry.sqlite.dispatcher.pid")
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: pidFile) { usleep(10_000) }
        #expect(run.isRunning)
        let enable = try NecroBinary.run(["pool", "enable", "local"], in: dir.path)
        #expect(enable.stdout == "pool local enabled (the running dispatcher was told)\n")
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
    }

    @Test func logsPrintsWhatATasksRunnerPrintedItsLastAttemptOrOneAskedFor() throws {
        let dir = try TemporaryDirectory("logs")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Fails once\n- [ ] 2. Never runs\n  - _Depends: 3_\n- [ ] 3. Fails\n")
        try writeConfig(
            dir, script: #"echo "task $NECRO_TASK_ID attempt $NECRO_ATTEMPT"; [ "$NECRO_TASK_ID" = 1 ] && [ "$NECRO_ATTEMPT" = 2 ]"#)
        #expect(try NecroBinary.run(["run", "tasks.md"], in: dir.path).status == 1)
        let last = try NecroBinary.run(["logs", "1"], in: dir.path)
        #expect(last.status == 0 && last.stdout == "task 1 attempt 2\n", "\(last.stdout)\(last.stderr)")
        let first = try NecroBinary.run(["logs", "1", "--attempt", "1"], in: dir.path)
        #expect(first.stdout == "task 1 attempt 1\n")
        let missing = try NecroBinary.run(["logs", "1", "--attempt", "5"], in: dir.path)
        #expect(missing.status == 1 && missing.stderr.contains("has no attempt 5; it ran attempts 1, 2"), "\(missing.stderr)")
        let unknown = try NecroBinary.run(["logs", "9"], in: dir.path)
        #expect(unknown.status == 1 && unknown.stderr.contains("no task 9 in spec"), "\(unknown.stderr)")
        let never = try NecroBinary.run(["logs", "2"], in: dir.path)
        #expect(never.status == 1 && never.stderr.contains("/2 has not run (yet): no log"))
        let followed = try NecroBinary.run(["logs", "3", "--follow"], in: dir.path)
        #expect(followed.status == 0 && followed.stdout == "task 3 attempt 2\n", "an ended runner: printed, and done")
    }

    @Test func whatARunnerLeavesBehindIsStoppedAtTheEndOfItsAttempt() throws {
        let dir = try TemporaryDirectory("daemons")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Leaves a daemon and a background job\n- [ ] 2. After\n  - _Depends: 1_\n")
        // A daemon in a session of its own (setsid: out of the runner's process group), and a job
        // left in the background, still holding the runner's output.
        try writeConfig(
            dir,
            script: #"""
                if [ "$NECRO_TASK_ID" = 1 ]; then
                  setsid sh -c "echo \$\$ > \"$ROOT/daemon.pid\"; exec sleep 600" < /dev/null > /dev/null 2>&1 &
                  sh -c "echo \$\$ > \"$ROOT/job.pid\"; exec sleep 600" &
                  while [ ! -s "$ROOT/daemon.pid" ] || [ ! -s "$ROOT/job.pid" ]; do :; done
                fi
                """#)
        let run = try NecroBinary.run(["run", "tasks.md", "--no-workspace"], in: dir.path)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        for name in ["daemon.pid", "job.pid"] {
            let text = try String(contentsOfFile: dir.file(name), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let pid = try #require(Int32(text))
            // Killed and reaped by the runner's supervisor before it ended.
            #expect(kill(pid, 0) == -1 && errno == ESRCH, "\(name): \(pid) still runs")
        }
    }

    @Test func pathsGivenWithDotsAreShownAndRecordedPlain() throws {
        let dir = try TemporaryDirectory("dots")
        defer { dir.remove() }
        try dir.write("specs/tasks.md", "- [ ] 1. Fails\n")
        try writeConfig(dir, script: "exit 3")
        try FileManager.default.moveItem(atPath: dir.file("necro.yaml"), toPath: dir.file("specs/necro.yaml"))
        let run = try NecroBinary.run(
            ["run", "./specs/../specs/tasks.md", "--registry", "./state/../.necro/registry.sqlite", "--no-workspace", "--no-server"], in: dir.path)
        #expect(run.status == 1)
        #expect(!(run.stdout + run.stderr).contains("/./") && !(run.stdout + run.stderr).contains("/../"), "\(run.stdout)\(run.stderr)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let logs = try registry.runners(runningOnly: false).compactMap(\.logPath)
        #expect(!logs.isEmpty && logs.allSatisfy { !$0.contains("/./") && !$0.contains("/../") && $0.hasPrefix("/") }, "\(logs)")
        let status = try NecroBinary.run(["status"], in: dir.path)
        #expect(!status.stdout.contains("/./"), "\(status.stdout)")
    }

    @Test func whatARunnerLeavesBehindAndEndsIsReapedWhileTheRunnerStillRuns() throws {
        let dir = try TemporaryDirectory("orphans")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Leaves an orphan that ends at once, then works on\n")
        // The subshell ends at once: its child is handed to the supervisor, and ends too.
        try writeConfig(dir, script: #"( sh -c "echo \$\$ > \"$ROOT/orphan.pid\"" & ); sleep 3"#)
        let run = try NecroBinary.start(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        var pid: Int32?
        for _ in 0..<200 where pid == nil {
            usleep(10_000)  // another process's state, seen only by asking again
            pid = (try? String(contentsOfFile: dir.file("orphan.pid"), encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        let orphan = try #require(pid)
        var gone = false
        for _ in 0..<250 where !gone {
            usleep(10_000)
            gone = !FileManager.default.fileExists(atPath: "/proc/\(orphan)")
        }
        #expect(gone, "reaped, not left a zombie until the runner ends")
        #expect(run.isRunning, "while the runner still runs")
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
    }

    @Test func logsFollowPrintsWhatARunningRunnerPrintsUntilItEnds() throws {
        let dir = try TemporaryDirectory("logs-follow")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("gate"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Talks, waits, talks\n")
        try writeConfig(dir, script: #"echo first; read line < "$ROOT/gate"; echo second"#)
        let run = try NecroBinary.start(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        var said = ""
        var follow: Process?
        for _ in 0..<200 where !said.contains("first") {
            usleep(20_000)  // another process's state, seen only by asking again
            if follow == nil, (try? NecroBinary.run(["logs", "1"], in: dir.path).status) == 0 {
                follow = try NecroBinary.start(["logs", "1", "--follow"], in: dir.path, outputFile: dir.file("followed"))
            }
            said = (try? String(contentsOfFile: dir.file("followed"), encoding: .utf8)) ?? ""
        }
        #expect(said == "first\n")
        #expect(follow?.isRunning == true, "it follows while the runner runs")
        release(dir.file("gate"))
        follow?.waitUntilExit()
        #expect(follow?.terminationStatus == 0)
        #expect(try String(contentsOfFile: dir.file("followed"), encoding: .utf8) == "first\nsecond\n")
        run.waitUntilExit()
    }

    @Test func retryOfATasksetTheRunningDispatcherDoesNotRunIsTakenUpByIt() throws {
        let dir = try TemporaryDirectory("retry-other")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0 && mkfifo(dir.file("gate"), 0o644) == 0)
        try dir.write("a/tasks.md", "- [ ] 1. Fails until fixed\n")
        try dir.write("b/tasks.md", "- [ ] 1. Waits at the gate\n")
        try writeConfig(
            dir, script: #"if [ "$NECRO_SPEC" = b ]; then echo running > "$ROOT/ready"; read line < "$ROOT/gate"; else [ -f "$ROOT/fixed" ] && touch "$ROOT/ran-a"; fi"#)
        let config = dir.file("necro.yaml")
        #expect(try NecroBinary.run(["run", "a/tasks.md", "--config", config, "--no-workspace", "--no-server"], in: dir.path).status == 1)
        let run = try NecroBinary.start(["run", "b/tasks.md", "--config", config, "--no-workspace", "--no-server"], in: dir.path)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        try dir.write("fixed", "")
        let retry = try NecroBinary.run(["retry", "1", "--spec", "a"], in: dir.path)
        #expect(retry.status == 0 && retry.stdout.contains("a/1: retry requested from the running dispatcher"), "\(retry.stdout)\(retry.stderr)")
        // The dispatcher takes the request (the task is put back, then loaded) before b may end:
        // a dispatcher with nothing left to run finishes.
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        for _ in 0..<1_000 where try registry.tasks(spec: "a").first?.state == .failed { usleep(10_000) }
        release(dir.file("gate"))
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        #expect(FileManager.default.fileExists(atPath: dir.file("ran-a")), "the running dispatcher ran a's task")
        #expect(try registry.tasks(spec: "a").first?.state == .done)
    }

    @Test func retryPutsAFailedTaskBackForTheNextRun() throws {
        let dir = try TemporaryDirectory("retry")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Fails until fixed\n- [ ] 2. After\n  - _Depends: 1_\n")
        try writeConfig(dir, script: #"[ -f "$ROOT/fixed" ]"#)
        let first = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(first.status == 1)
        #expect(first.stdout.contains("failed   1: exit code 1"))
        #expect(first.stdout.contains("not run  2: dependency 1 failed (waits on 1)"))
        try dir.write("fixed", "")
        let retry = try NecroBinary.run(["retry", "1"], in: dir.path)
        #expect(retry.status == 0, "\(retry.stderr)")
        let afterRetry = try NecroBinary.run(["status"], in: dir.path).stdout
        #expect(afterRetry.contains(": 1 blocked, 1 ready"), "1 waits on nothing: ready; 2 waits on it: \(afterRetry)")
        #expect(try NecroBinary.run(["retry", "2"], in: dir.path).status == 1, "2 never failed")
        let second = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)")
    }
}

@Suite(.serialized) struct CrashRecoveryTests {
    @Test func afterKill9TheNextRunAdoptsTheOrphansStopsTheSilentOnesAndFinishes() throws {
        let dir = try TemporaryDirectory("kill9")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready-1"), 0o644) == 0 && mkfifo(dir.file("ready-2"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n- [ ] 3. Three\n  - _Depends: 1, 2_\n")
        // First attempt: say so, then hang without a word. Later ones: finish at once.
        try writeConfig(
            dir,
            script: #"if [ ! -e "$ROOT/recovered" ]; then echo $$ > "$ROOT/ready-$NECRO_TASK_ID"; exec sleep 600; fi"#,
            extra: "  heartbeat_timeout: 1")
        let first = try WatchedRun(["run", "tasks.md"], in: dir.path)
        // Recorded with their pids (what adoption goes by), then running.
        #expect(first.awaitEvents(.runnerStarted, for: ["1", "2"]) == ["1", "2"])
        let orphan1 = try #require(Int32(awaitLine(fromFIFO: dir.file("ready-1")).trimmingCharacters(in: .whitespacesAndNewlines)))
        let orphan2 = try #require(Int32(awaitLine(fromFIFO: dir.file("ready-2")).trimmingCharacters(in: .whitespacesAndNewlines)))
        first.kill9()
        #expect(kill(orphan1, 0) == 0 && kill(orphan2, 0) == 0, "the runners outlive the dispatcher")

        try dir.write("recovered", "")
        let second = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        // Adopted, then stopped as any silent runner is after heartbeat_timeout, and retried.
        #expect(second.stderr.contains("recovery: adopting 2 runners still running from the previous dispatcher"))
        #expect(second.stdout.contains("1  adopted: still running from the previous dispatcher (pid "), "\(second.stdout)")
        for orphan in [orphan1, orphan2] {
            let state = try? String(contentsOfFile: "/proc/\(orphan)/stat", encoding: .utf8)
            #expect(state == nil || state!.contains(") Z "), "orphan \(orphan) was stopped")
        }
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        #expect(try registry.tasks(spec: spec).allSatisfy { $0.state == .done })
        let events = try registry.events(EventQuery(spec: spec))
        for task in ["1", "2", "3"] as [TaskID] {
            let own = events.filter { $0.taskID == task }
            #expect(own.map(\.seq) == Array(1...Int64(own.count)), "gapless seq for \(task)")
            #expect(own.filter { $0.type == .taskCompleted }.count == 1, "\(task) completed once")
        }
        #expect(events.filter { $0.type == .runnerAdopted }.compactMap(\.taskID).sorted() == ["1", "2"])
        #expect(events.filter { $0.type == .runnerTimedOut }.map { $0.payload["reason"] } == ["no heartbeat for 1 s", "no heartbeat for 1 s"])
        let runners = try registry.runners(runningOnly: false)
        #expect(Set(runners.map(\.id)).count == runners.count, "runner ids stay unique across dispatcher starts")
        // The adopted runners died of the SIGTERM that stopped them, as their supervisors recorded.
        #expect(runners.filter { $0.exit == "killed by signal 15" }.map(\.task.id).sorted() == ["1", "2"])
        #expect(runners.filter { $0.exit == "exit code 0" }.map(\.task.id).sorted() == ["1", "2", "3"])
        #expect(RunnerStatusTable.tables(in: dir.file(".necro/status")).isEmpty, "every runner accounted for: no status table is kept")
    }
}

extension CrashRecoveryTests {
    @Test func aRunnerThatKeepsPrintingOutlivesTheDispatcherIsAdoptedAndKeptAliveByItsOutput() throws {
        let dir = try TemporaryDirectory("kill9-chatty")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Chatty\n")
        // It prints about 150 KB over 3 s, more than a pipe holds, mostly after the dispatcher is
        // gone; the lease is 1 s, so only its output (read from its log) keeps it alive.
        let script = #"if [ -e "$ROOT/ran" ]; then echo rerun >> "$ROOT/ledger"; exit 0; fi; touch "$ROOT/ran"; echo $$ > "$ROOT/ready"; pad=$(printf "%0900d" 0); i=0; while [ $i -lt 150 ]; do printf "line %03d %s\n" $i "$pad"; i=$((i+1)); sleep 0.02; done; echo end >> "$ROOT/ledger""#
        try writeConfig(dir, script: script, extra: "  heartbeat_timeout: 1")
        let first = try WatchedRun(["run", "tasks.md"], in: dir.path)
        #expect(first.awaitEvents(.runnerStarted, for: ["1"]) == ["1"])
        _ = awaitLine(fromFIFO: dir.file("ready"))
        first.kill9()

        let second = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        let ledger = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8)
        #expect(ledger == "end\n", "it printed on to its end, was not killed by a closed pipe, and did not run again")
        let logs = try FileManager.default.contentsOfDirectory(atPath: dir.file(".necro/logs"))
        let log = try logs.map { try String(contentsOfFile: dir.file(".necro/logs/\($0)"), encoding: .utf8) }.joined()
        #expect(log.contains("line 000 ") && log.contains("line 149 "), "its output after the dispatcher's death is in its log: \(logs) \(log.prefix(300))")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        let events = try registry.events(EventQuery(spec: spec, task: "1"))
        #expect(events.filter { $0.type == .taskCompleted }.count == 1)
        #expect(events.contains { $0.type == .runnerAdopted })
        #expect(!events.contains { $0.type == .runnerTimedOut }, "its output renewed its lease")
        #expect(events.last { $0.type == .runnerFinished }?.payload["exit_code"] == 0)
    }
}

@Suite(.serialized) struct HeartbeatCommandTests {
    /// Runners reach the API with their own token, never the registry: over TCP when it is served,
    /// over a private unix socket with --no-server.
    @Test(arguments: [["--no-server"], ["--listen", "127.0.0.1:0"]])
    func aSilentRunnerThatCallsNecroHeartbeatKeepsItsLeaseAndOneThatDoesNotIsStopped(_ serving: [String]) throws {
        let dir = try TemporaryDirectory("heartbeat")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Beats\n- [ ] 2. Silent\n")
        // Both stay quiet for 2.4 s, longer than the 1 s lease; task 1 renews it with `necro heartbeat`.
        let script = #"env > "$ROOT/env-$NECRO_TASK_ID"; for i in 1 2 3 4; do if [ "$NECRO_TASK_ID" = 1 ]; then "$NECRO" heartbeat || exit 9; fi; sleep 0.6; done"#
        try writeConfig(dir, script: script, extra: "  heartbeat_timeout: 1")
        var config = try String(contentsOfFile: dir.file("necro.yaml"), encoding: .utf8)
        config = config.replacingOccurrences(of: "env: {ROOT:", with: "env: {NECRO: \"\(NecroBinary.path)\", ROOT:")
        try config.write(toFile: dir.file("necro.yaml"), atomically: true, encoding: .utf8)
        // An admin token set in the dispatcher's environment is not handed on either.
        let result = try runProcess(
            "/usr/bin/env", ["NECRO_ADMIN_TOKEN=the-admins-own", "NECRO_RUNNER_TOKEN=inherited", NecroBinary.path, "run", "tasks.md", "--no-workspace"] + serving,
            in: dir.path)
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        let records = Dictionary(uniqueKeysWithValues: try registry.tasks(spec: spec).map { ($0.task.id, $0) })
        #expect(records["1"]?.state == .done, "\(result.stdout)\(result.stderr)")
        #expect(records["2"]?.state == .failed && records["2"]?.reason == "no heartbeat for 1 s")
        let beats = try registry.runners(runningOnly: false).first { $0.task.id == "1" }?.lastHeartbeat
        #expect(beats != nil, "the heartbeats were recorded")

        // What a runner is given: its own token and the way to the API; not the registry, nor the
        // admin token beside it.
        let environment = try String(contentsOfFile: dir.file("env-2"), encoding: .utf8).split(separator: "\n")
        #expect(!environment.contains { $0.hasPrefix("NECRO_REGISTRY=") })
        #expect(!environment.contains { $0.contains("registry.sqlite") || $0.contains("admin.token") })
        #expect(!environment.contains { $0.contains("the-admins-own") || $0.contains("inherited") || $0.hasPrefix("NECRO_ADMIN_TOKEN=") })
        #expect(environment.contains { $0.hasPrefix("NECRO_RUNNER_TOKEN=") })
        #expect(environment.contains { $0.hasPrefix(serving == ["--no-server"] ? "NECRO_API_SOCKET=/" : "NECRO_API_URL=http://127.0.0.1:") })
        if serving == ["--no-server"] {
            let socket = environment.first { $0.hasPrefix("NECRO_API_SOCKET=") }.map { String($0.dropFirst("NECRO_API_SOCKET=".count)) } ?? ""
            #expect(!socket.hasPrefix(dir.path), "outside the registry's folder: \(socket)")
            #expect(!FileManager.default.fileExists(atPath: socket), "removed once the run is over")
        }
    }
    /// With --no-server the runners' socket is the same at every start on a registry: a runner
    /// adopted after a kill -9 reaches the next dispatcher there, and keeps its lease.
    @Test func aRunnerAdoptedAfterAKill9KeepsReachingItsDispatcherWithoutAServer() throws {
        let dir = try TemporaryDirectory("adopt-socket")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Beats through a restart\n")
        let script = #"echo running > "$ROOT/ready"; for i in 1 2 3 4 5 6 7 8 9 10; do "$NECRO" heartbeat 2> /dev/null || echo miss >> "$ROOT/misses"; sleep 0.3; done; echo done >> "$ROOT/ledger""#
        try writeConfig(dir, script: script, extra: "  heartbeat_timeout: 1")
        var config = try String(contentsOfFile: dir.file("necro.yaml"), encoding: .utf8)
        config = config.replacingOccurrences(of: "env: {ROOT:", with: "env: {NECRO: \"\(NecroBinary.path)\", ROOT:")
            .replacingOccurrences(of: "retry_max_attempts: 2", with: "retry_max_attempts: 1")
        try config.write(toFile: dir.file("necro.yaml"), atomically: true, encoding: .utf8)
        let first = try NecroBinary.start(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        usleep(400_000)  // a heartbeat or two reach the first dispatcher
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let second = try NecroBinary.run(["run", "tasks.md", "--no-workspace", "--no-server"], in: dir.path)
        #expect(second.status == 0, "the adopted runner kept its lease: \(second.stdout)\(second.stderr)")
        #expect(second.stderr.contains("recovery: adopting 1 runner still running"), "\(second.stderr)")
        let ledger = (try? String(contentsOfFile: dir.file("ledger"), encoding: .utf8)) ?? ""
        #expect(ledger == "done\n", "it ran once, to its end")
    }

}

@Suite(.serialized) struct ChaosTests {
    @Test func twentyKill9sDuringA200TaskRunLeaveEveryTaskDoneExactlyOnce() throws {
        let dir = try TemporaryDirectory("chaos")
        defer { dir.remove() }
        // 10 layers of 20; each task waits on two of the layer before.
        var random = SplitMix64(seed: 20_26)
        var lines: [String] = []
        for i in 0..<200 {
            lines.append("- [ ] \(i). Task \(i)")
            if i >= 20 {
                let base = (i / 20 - 1) * 20
                let a = base + Int(random.next() % 20)
                let b = base + (a - base + 1 + Int(random.next() % 19)) % 20
                lines.append("  - _Depends: \(a), \(b)_")
            }
        }
        try dir.write("tasks.md", lines.joined(separator: "\n") + "\n")
        // The ledger line is the runner's last act: a task in it twice ran to completion twice.
        try writeConfig(dir, script: #"sleep 0.05; echo "$NECRO_TASK_ID" >> "$ROOT/ledger""#, concurrency: 8)
        for _ in 0..<20 {
            let run = try NecroBinary.start(["run", "tasks.md"], in: dir.path)
            usleep(UInt32(100_000 + random.next() % 300_000))  // the kill's moment: chaos by design, not a wait
            kill(run.processIdentifier, SIGKILL)
            run.waitUntilExit()
        }
        let last = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(last.status == 0, "\(last.stdout.suffix(2000))\n\(last.stderr)")

        let ledger = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8).split(separator: "\n").map(String.init)
        let counts = Dictionary(grouping: ledger, by: { $0 }).mapValues(\.count)
        #expect(counts.count == 200, "every task ran to completion")
        #expect(counts.filter { $0.value > 1 }.isEmpty, "none twice: \(counts.filter { $0.value > 1 })")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        #expect(try registry.tasks(spec: spec).allSatisfy { $0.state == .done })
        let events = try registry.events(EventQuery(spec: spec))
        let byTask = Dictionary(grouping: events.filter { $0.taskID != nil }, by: { $0.taskID! })
        #expect(byTask.count == 200)
        for (task, own) in byTask {
            #expect(own.map(\.seq) == Array(1...Int64(own.count)), "gapless seq for \(task)")
            #expect(own.filter { $0.type == .taskCompleted }.count == 1, "\(task) completed once")
        }
        // The kills landed mid-run: each time, runners were left behind — adopted if still running,
        // taken as done by their supervisor's status if they had finished, requeued if they had
        // not started (killed between spawn and record).
        let requeued = events.filter { $0.type == .recoveryRequeued }.count
        let finishedUnseen = events.filter { $0.type == .taskCompleted && $0.payload["recovered"] == true }.count
        let adopted = events.filter { $0.type == .runnerAdopted }.count
        #expect(requeued + finishedUnseen + adopted >= 10, "requeued \(requeued), finished unseen \(finishedUnseen), adopted \(adopted)")
        let dispatcherEvents = events.filter { $0.taskID == nil }.map(\.seq)
        #expect(dispatcherEvents == Array(1...Int64(dispatcherEvents.count)))
    }
}

@Suite(.serialized) struct WorktreeRunTests {
    @Test func afterKill9TheNextRunAdoptsTheOrphansInTheirSlotsSavesTheirWorkAndFinishes() throws {
        let dir = try TemporaryDirectory("kill9-worktrees")
        defer { dir.remove() }
        let repo = try GitRepository(at: dir.file("repo"))
        #expect(mkfifo(dir.file("ready-1"), 0o644) == 0 && mkfifo(dir.file("ready-2"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n- [ ] 3. Three\n  - _Depends: 1, 2_\n")
        // First attempt: write something, say so, hang. After recovery: commit a file and finish.
        let script = #"if [ ! -e "$ROOT/recovered" ]; then echo half > "half-$NECRO_TASK_ID.txt"; echo $$ > "$ROOT/ready-$NECRO_TASK_ID"; exec sleep 600; fi; echo "$NECRO_TASK_ID" > "done-$NECRO_TASK_ID.txt"; git add -A; git -c user.name=a -c user.email=a@x commit -qm "task $NECRO_TASK_ID""#
        try writeConfig(dir, script: script, extra: "  heartbeat_timeout: 1")
        let first = try WatchedRun(["run", "tasks.md", "--workspace", "repo"], in: dir.path)
        #expect(first.awaitEvents(.runnerStarted, for: ["1", "2"]) == ["1", "2"])
        for ready in ["ready-1", "ready-2"] { _ = awaitLine(fromFIFO: dir.file(ready)) }
        let status = try NecroBinary.run(["status"], in: dir.path)
        #expect(status.stdout.contains("  slot-1 on necro/"), "status shows each runner's slot and branch: \(status.stdout)")
        first.kill9()
        // A worktree the dead dispatcher was in the middle of creating.
        try FileManager.default.createDirectory(atPath: dir.file(".necro/slots/slot-9"), withIntermediateDirectories: true)

        try dir.write("recovered", "")
        let second = try NecroBinary.run(["run", "tasks.md", "--workspace", "repo"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        #expect(second.stderr.contains("recovery: adopting 2 runners"), "\(second.stderr)")
        #expect(second.stderr.contains("recovery: slot-9: removed a worktree that was never finished"))
        #expect(!FileManager.default.fileExists(atPath: dir.file(".necro/slots/slot-9")))
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        let spec = try #require(try registry.taskSets().first?.name)
        #expect(try registry.tasks(spec: spec).allSatisfy { $0.state == .done })
        for id in ["1", "2"] {
            // The orphan's work is kept off the branch; the branch has the rerun's work.
            // Adopted, silent, stopped after heartbeat_timeout: its work saved before the stop.
            let saved = try #require(try registry.events(EventQuery(task: TaskID(id))).first { $0.type == .attemptSaved })
            let ref = try #require(saved.payload["ref"]?.stringValue)
            #expect(repo.show(ref, "half-\(id).txt") == "half\n")
            #expect(repo.show("necro/\(spec)/\(id)", "half-\(id).txt") == nil)
            #expect(repo.show("necro/\(spec)/\(id)", "done-\(id).txt") == "\(id)\n")
        }
        #expect(repo.show("necro/\(spec)/3", "done-1.txt") != nil && repo.show("necro/\(spec)/3", "done-2.txt") != nil)
        #expect(try repo.worktrees().count == 3, "the main worktree and the two slots, reused")
        #expect(second.stdout.contains("branches (3, from main):"))
    }

    @Test func aMissingRepositoryADirtyOneAndABadBranchTemplateExitTwoAndLeaveTheRegistryAlone() throws {
        let dir = try TemporaryDirectory("worktree-errors")
        defer { dir.remove() }
        let repo = try GitRepository(at: dir.file("repo"))
        try dir.write("tasks.md", "- [ ] 1. One\n")
        try writeConfig(dir, script: "true")
        #expect(try NecroBinary.run(["run", "tasks.md", "--workspace", "repo"], in: dir.path).status == 0)
        let registry = dir.file(".necro/registry.sqlite")
        let before = try SQLiteRegistry(path: registry).events(EventQuery())
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n")

        let missing = try NecroBinary.run(["run", "tasks.md", "--workspace", "nowhere"], in: dir.path)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("error: repo_pool.repo: \(dir.file("nowhere")) does not exist or is not a folder"), "\(missing.stderr)")

        try "# Sample, edited\n".write(toFile: repo.path + "/README.md", atomically: true, encoding: .utf8)
        let dirty = try NecroBinary.run(["run", "tasks.md", "--workspace", "repo"], in: dir.path)
        #expect(dirty.status == 2)
        #expect(dirty.stderr.contains("has uncommitted changes on main (README.md): commit or stash them first"), "\(dirty.stderr)")
        try repo.git("checkout", "--", "README.md")

        try writeConfig(dir, script: "true", extra: "repo_pool:\n  repo: repo\n  branch_template: \"agents/{spec}\"")
        let template = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(template.status == 2)
        #expect(template.stderr.contains("repo_pool.branch_template"), "\(template.stderr)")
        #expect(template.stderr.contains("must contain {task.id}"))
        #expect(template.stderr.contains("necro.yaml:"), "the error names the file and line: \(template.stderr)")
        try writeConfig(dir, script: "true", extra: "repo_pool:\n  repo: repo\n  branch_template: \"agents/{task.id}..{spec}\"")
        let invalid = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(invalid.status == 2 && invalid.stderr.contains("which git refuses: it contains .."), "\(invalid.stderr)")

        #expect(try SQLiteRegistry(path: registry).events(EventQuery()) == before, "nothing recorded")
        #expect(try SQLiteRegistry(path: registry).tasks(spec: try SQLiteRegistry(path: registry).taskSets()[0].name).count == 1, "the new task was not imported")
    }
}
