import Foundation
import NecroCore
import NecroRunners
import NecroTesting
import Testing

/// A launcher, its event iterator, and a folder for one test.
private struct Fixture {
    let launcher: LocalProcessLauncher
    var events: AsyncStream<RunnerEvent>.Iterator
    let dir: TemporaryDirectory
    let table: RunnerStatusTable
    var records: [RunnerID: StatusRecord] = [:]

    init(logLimit: Int = 1 << 20) throws {
        launcher = LocalProcessLauncher(logLimitBytes: logLimit, outputInterval: .zero)
        events = launcher.events.makeAsyncIterator()
        dir = try TemporaryDirectory("runner")
        table = try RunnerStatusTable(folder: dir.file("status"), name: "test")
    }

    mutating func start(
        _ name: String, _ argv: [String], env: [String: String] = [:], supervised: Bool = false, in folder: String? = nil,
        nice: Int = 0
    ) -> RunnerID {
        let id = RunnerID(name)
        let record = supervised ? try? table.claim(id).get() : nil
        records[id] = record
        launcher.launch(
            RunnerLaunch(
                runner: id, argv: argv, environment: ["PATH": "/usr/bin:/bin"].merging(env) { $1 },
                workingDirectory: folder ?? dir.path, logPath: dir.file("logs/\(name).log"), status: record, nice: nice))
        return id
    }

    /// How the supervisor recorded the runner's end, nil if it did not.
    func status(_ name: String) -> RunnerExit? {
        records[RunnerID(name)].flatMap { RunnerStatusTable.exit(of: RunnerID(name), in: $0) }
    }

    /// Events until the runner's exit, which is returned with the rest.
    mutating func untilExit(_ id: RunnerID) async -> (exit: RunnerExit?, seen: [RunnerEvent]) {
        var seen: [RunnerEvent] = []
        while let event = await next(&events) {
            seen.append(event)
            if case .exited(id, let exit) = event { return (exit, seen) }
        }
        return (nil, seen)
    }

    mutating func startedPid(_ id: RunnerID) async -> Int32? {
        while let event = await next(&events) {
            if case .started(id, let handle) = event { return handle.pid }
        }
        return nil
    }

    /// Ends the launcher's watching thread.
    func finish() {
        launcher.shutdown()
        dir.remove()
    }

    func log(_ name: String) -> String { (try? String(contentsOfFile: dir.file("logs/\(name).log"), encoding: .utf8)) ?? "" }
}

@Suite struct LocalProcessLauncherTests {
    @Test func runsTheCommandInItsFolderWithItsEnvironmentAndKeepsItsOutput() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("env", ["/bin/sh", "-c", "pwd; echo \"runner=$RUNNER_ID\"; echo oops >&2; exit 3"], env: ["RUNNER_ID": "r-1"])
        let (exit, seen) = await f.untilExit(id)
        #expect(exit == .exited(code: 3))
        guard case .started(id, let handle) = seen.first, let pid = handle.pid else {
            Issue.record("first event must be started, got \(seen)")
            return
        }
        #expect(pid > 0 && handle.processStartTime != nil)
        #expect(handle.value == "\(pid)@\(handle.processStartTime ?? 0)")
        #expect(f.log("env") == "\(f.dir.path)\nrunner=r-1\noops\n")
    }

    @Test(arguments: [false, true])
    func aRunnerInheritsNoDescriptorButItsStandardOnes(supervised: Bool) async throws {
        var f = try Fixture()
        defer { f.finish() }
        // A descriptor of ours without close-on-exec, as libraries sometimes leave them, at a number
        // ls would never pick for itself. A free one: the tests run in parallel in this process,
        // and taking over a number in use (dup2) would pull another test's pipe from under it.
        let opened = open("/dev/null", O_RDONLY)
        let leak = fcntl(opened, F_DUPFD, 200)
        close(opened)
        defer { close(leak) }
        #expect(leak >= 200 && fcntl(leak, F_GETFD) & FD_CLOEXEC == 0)
        let id = f.start("fds", ["/bin/sh", "-c", "ls /proc/self/fd"], supervised: supervised)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        // ls sees 0, 1, 2 and the one it opened to list the folder: nothing of ours.
        let fds = f.log("fds").split(separator: "\n").compactMap { Int($0) }
        #expect(fds.count == 4 && fds.prefix(3) == [0, 1, 2], "\(fds)")
        #expect(!fds.contains(Int(leak)))
    }

    @Test func aMissingCommandIsALaunchFailure() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("missing", ["no-such-agent-command", "--flag"])
        let (exit, seen) = await f.untilExit(id)
        #expect(exit == .launchFailed("command not found: no-such-agent-command"))
        #expect(seen.count == 1)
        #expect(exit?.succeeded == false)
    }

    @Test func outputIsReportedWithItsLastLine() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("talk", ["/bin/sh", "-c", "echo planning; echo 'writing file 2 of 3'"])
        let (exit, seen) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        let lines = seen.compactMap { event -> String? in
            if case .output(_, let line) = event { return line }
            return nil
        }
        #expect(lines.last == "writing file 2 of 3")
    }

    @Test(arguments: [false, true])
    func aSilentRunnerReportsNoOutputOnlyItsStartAndExit(supervised: Bool) async throws {
        var f = try Fixture()
        defer { f.finish() }
        // Its pipe's end is not output: no sign of life, no empty last line (an input to the loop per runner).
        let id = f.start("quiet", ["/bin/true"], supervised: supervised)
        let (exit, seen) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        #expect(seen.count == 2, "started and exited, nothing else: \(seen)")
        #expect(!seen.contains { if case .output = $0 { true } else { false } })
    }

    @Test func terminateStopsTheWholeProcessGroup() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("tree", ["/bin/sh", "-c", "sleep 300 & echo $! > child.pid; echo started; wait"])
        #expect(await f.startedPid(id) != nil)
        // Wait for its output: the child's pid is written by then.
        while let event = await next(&f.events) { if case .output(id, _) = event { break } }
        let child = try #require(
            Int32(try String(contentsOfFile: f.dir.file("child.pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(child, 0) == 0, "the background child runs")
        f.launcher.signal(id, .terminate)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .signalled(15))
        // The child was in the runner's group: it got SIGTERM too. Reap-free check: it is gone or a zombie of init.
        var gone = false
        for _ in 0..<200 where !gone {
            gone = kill(child, 0) != 0 || (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8))?.contains(") Z") == true
            if !gone { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(gone, "the runner's child process was stopped with it")
    }

    @Test func aRunnerThatIgnoresTerminateIsKilled() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("stubborn", ["/bin/sh", "-c", "trap 'echo ignoring TERM' TERM; echo ready; while true; do sleep 1; done"])
        while let event = await next(&f.events) { if case .output(id, "ready") = event { break } }
        f.launcher.signal(id, .terminate)
        // It says it got SIGTERM and goes on: the signal arrived and did not stop it.
        var answer: RunnerEvent?
        while let event = await next(&f.events) {
            if case .output(id, "ignoring TERM") = event { answer = event; break }
            if case .exited(id, _) = event { answer = event; break }
        }
        #expect(answer == .output(id, lastLine: "ignoring TERM"))
        f.launcher.signal(id, .kill)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .signalled(9))
    }

    @Test func theLogIsCapped() async throws {
        var f = try Fixture(logLimit: 1000)
        defer { f.finish() }
        let id = f.start("loud", ["/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo 0123456789abcdef; i=$((i+1)); done"])
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        let log = f.log("loud")
        #expect(log.hasPrefix("0123456789abcdef\n"))
        #expect(log.contains("[necro: 33000 more bytes of output were not kept: the log is capped at 1000 bytes]"))
        #expect(log.utf8.count < 1200)
    }

    @Test func manyRunnersAtOnceAllReportTheirExit() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let ids = (0..<40).map { f.start("r\($0)", ["/bin/sh", "-c", "exit \($0 % 3)"]) }
        var exits: [RunnerID: RunnerExit] = [:]
        while exits.count < ids.count, let event = await next(&f.events) {
            if case .exited(let id, let exit) = event { exits[id] = exit }
        }
        #expect(exits.count == 40)
        for (i, id) in ids.enumerated() { #expect(exits[id] == .exited(code: Int32(i % 3))) }
    }

    @Test func processIdentityTellsAliveFromGone() async throws {
        let pid = getpid()
        let start = try #require(ProcessIdentity.startTime(of: pid))
        #expect(ProcessIdentity.isAlive(pid: pid, startTime: start))
        #expect(!ProcessIdentity.isAlive(pid: pid, startTime: start + 1))
    }

    @Test func theStartTimeOfEachStartIsTheOneProcReports() async throws {
        var f = try Fixture()
        defer { f.finish() }
        #expect(mkfifo(f.dir.file("go"), 0o644) == 0)
        let ids = (0..<20).map { i in
            f.start("wait-\(i)", ["/bin/sh", "-c", #"read line < "$0""#, f.dir.file("go")], supervised: i % 2 == 0)
        }
        var started: [RunnerID: (pid: Int32, startTime: UInt64?)] = [:]
        while started.count < ids.count, let event = await next(&f.events) {
            if case .started(let id, let handle) = event, let pid = handle.pid { started[id] = (pid, handle.processStartTime) }
        }
        // Read while every one of them is alive: the pid cannot have been reused.
        for id in ids {
            let runner = try #require(started[id])
            #expect(runner.startTime != nil && runner.startTime == ProcessIdentity.startTime(of: runner.pid), "\(id)")
        }
        release(f.dir.file("go"))
        var exited = 0
        while exited < ids.count, let event = await next(&f.events) {
            if case .exited = event { exited += 1 }
        }
        #expect(exited == ids.count)
    }

    @Test func aSupervisedRunnerLeavesItsExitStatusBehind() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("sup", ["/bin/sh", "-c", "echo working; exit 3"], supervised: true)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .exited(code: 3))
        #expect(f.status("sup") == .exited(code: 3))
        #expect(f.log("sup") == "working\n", "the supervisor adds nothing to the output")
    }

    @Test func theStatusIsWrittenEvenWithNobodyWatching() async throws {
        var f = try Fixture()
        defer { f.dir.remove() }
        #expect(mkfifo(f.dir.file("go"), 0o644) == 0)
        let id = f.start("alone", ["/bin/sh", "-c", #"read line < "$0"; echo done"#, f.dir.file("go")], supervised: true)
        let pid = try #require(await f.startedPid(id))
        f.launcher.shutdown()  // as if the dispatcher were gone
        release(f.dir.file("go"))
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)  // the test process is the parent: it waits for it
        #expect(f.status("alone") == .exited(code: 0))
    }

    @Test func aSupervisedRunnerStoppedByTerminateRecordsIt() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("stop", ["/bin/sh", "-c", "echo up; exec sleep 600"], supervised: true)
        let pid = try #require(await f.startedPid(id))
        while let event = await next(&f.events) { if case .output(id, "up") = event { break } }
        f.launcher.signal(id, .terminate)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .signalled(SIGTERM), "the supervisor ends as the agent did: the dispatcher sees the signal")
        #expect(f.status("stop") == .signalled(SIGTERM), "the record says 128 + 15, as a shell would")
        // Its group had the supervisor as leader, and nothing of it is left.
        #expect(kill(-pid, 0) != 0)
    }

    @Test func aSupervisedMissingCommandIsStillALaunchFailure() async throws {
        var f = try Fixture()
        defer { f.finish() }
        let id = f.start("nothing", ["no-such-agent-command"], supervised: true)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .launchFailed("command not found: no-such-agent-command"))
        #expect(f.status("nothing") == nil)
    }

    @Test func aSupervisedRunnerThatCannotStartIsALaunchFailureWithTheReason() async throws {
        var f = try Fixture()
        defer { f.finish() }
        // Found and executable, but not a program the kernel can run: the exec fails in the
        // supervisor, after the start was reported; the record says why.
        try f.dir.write("not-a-program", "\u{7f}ELF garbage")
        chmod(f.dir.file("not-a-program"), 0o755)
        // (A process another test forks meanwhile may hold the file open for writing for a moment:
        // "Text file busy" then, and it is tried again.)
        var exit: RunnerExit?
        for attempt in 1...20 {
            let id = f.start("garbage-\(attempt)", [f.dir.file("not-a-program")], supervised: true)
            exit = await f.untilExit(id).0
            if exit != .launchFailed("cannot start the command: Text file busy") { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(exit == .launchFailed("cannot start the command: Exec format error"))
        // A working folder that cannot be entered.
        try f.dir.write("a-file", "")
        let elsewhere = f.start("nowhere", ["/bin/true"], supervised: true, in: f.dir.file("a-file"))
        let (failed, _) = await f.untilExit(elsewhere)
        #expect(failed == .launchFailed("cannot make or enter the working directory: Not a directory"))
    }

    @Test(arguments: [false, true])
    func aMissingWorkingFolderIsMadeWithItsParents(supervised: Bool) async throws {
        var f = try Fixture()
        defer { f.finish() }
        // Supervised, the supervisor makes the folder itself and the launcher only its parents.
        let folder = f.dir.file("work/a/b/task-1")
        let id = f.start("made", ["/bin/sh", "-c", "pwd"], supervised: supervised, in: folder)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        #expect(f.log("made") == folder + "\n")
        var isFolder: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder) && isFolder.boolValue)
        // One whose parent is a file cannot be made: the runner does not start, and the reason says so.
        try f.dir.write("plain", "")
        let nowhere = f.start("unmade", ["/bin/true"], supervised: true, in: f.dir.file("plain/task-2"))
        let (failed, _) = await f.untilExit(nowhere)
        #expect(failed == .launchFailed("cannot make or enter the working directory: Not a directory"))
    }

    @Test func aRunnerRunsAtItsPoolsNicenessAddedToTheDispatchers() async throws {
        let supervised = true  // (an unsupervised runner gets it just after its start: not from its first instruction)
        var f = try Fixture()
        defer { f.finish() }
        let own = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        // Field 19 of /proc/self/stat is the niceness; the shell reads its own.
        let id = f.start("nice", ["/bin/sh", "-c", "cut -d' ' -f19 /proc/$$/stat"], supervised: supervised, nice: 7)
        let (exit, _) = await f.untilExit(id)
        #expect(exit == .exited(code: 0))
        #expect(f.log("nice") == "\(min(19, own + 7))\n")
        let capped = f.start("capped", ["/bin/sh", "-c", "cut -d' ' -f19 /proc/$$/stat"], supervised: supervised, nice: 19)
        _ = await f.untilExit(capped)
        #expect(f.log("capped") == "19\n")
    }

    @Test func aStatusRecordIsOnlyReadForItsOwnRunnerAndServesTheNextOnceReleased() throws {
        let dir = try TemporaryDirectory("table")
        defer { dir.remove() }
        let table = try RunnerStatusTable(folder: dir.file("status"), name: "t")
        let first = try table.claim(RunnerID("spec.1.a1")).get()
        let second = try table.claim(RunnerID("spec.1.a1-long")).get()
        #expect(first.offset != second.offset && first.path == table.path)
        // A supervisor writes 8 bytes at the record's offset.
        let file = open(table.path, O_WRONLY)
        _ = pwrite(file, "0\n\0\0\0\0\0\0", 8, off_t(first.offset))
        close(file)
        #expect(RunnerStatusTable.exit(of: RunnerID("spec.1.a1"), in: first) == .exited(code: 0))
        #expect(RunnerStatusTable.exit(of: RunnerID("spec.1.a1-long"), in: first) == nil, "another runner's record")
        #expect(RunnerStatusTable.exit(of: RunnerID("spec.1.a1-long"), in: second) == nil, "nothing recorded yet")
        #expect(!table.removeIfUnused(), "records are in use")
        table.release(first)
        let third = try table.claim(RunnerID("spec.2.a1")).get()
        #expect(third.offset == first.offset, "a released record is reused")
        #expect(RunnerStatusTable.exit(of: RunnerID("spec.2.a1"), in: third) == nil, "with its old status cleared")
        // A long id is kept as a hash: still told apart.
        let long = RunnerID(String(repeating: "x", count: 400))
        let hashed = try table.claim(long).get()
        #expect(RunnerStatusTable.exit(of: RunnerID(String(repeating: "x", count: 399)), in: hashed) == nil)
        // The table of a live dispatcher (this one: it holds its lock) is not removed.
        RunnerStatusTable.removeUnused(in: dir.file("status"), referenced: [])
        #expect(FileManager.default.fileExists(atPath: table.path))
        [second, third, hashed].forEach(table.release)
        #expect(table.removeIfUnused() && !FileManager.default.fileExists(atPath: table.path))
    }
}
