import Foundation
import CNecroSystem
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroRunners
import NecroTesting
import Testing

@testable import NecroCLI

@Suite struct RecoveryTests {
    @Test func runnersLeftRunningAreAdoptedIfAliveElseTakenAtTheStatusTheirSupervisorsRecorded() async throws {
        let dir = try TemporaryDirectory("recovery")
        defer { dir.remove() }
        let registry = try SQLiteRegistry(path: dir.file("registry.sqlite"))
        try registry.importTaskSet(
            TaskSetSpec(name: "s", tasks: ["1", "2", "3", "4"].map { TaskSpec(id: TaskID($0), title: "Task \($0)") }), source: nil)
        let table = try RunnerStatusTable(folder: dir.file("status"), name: "old")
        func row(_ task: String, pid: Int32? = nil, startTime: UInt64? = nil) -> RunnerRecord {
            let id = RunnerID("s.\(task).a1-old")
            return RunnerRecord(
                id: id, task: TaskKey(spec: "s", id: TaskID(task)), attempt: 1, pool: "local", pid: pid, processStartTime: startTime,
                status: try? table.claim(id).get(), startedAt: Timestamp(secondsSince1970: 0))
        }
        // 1: started, supervised, but the dispatcher stopped before recording its pid: found by the
        // lock over its status record, with the supervisor's pid in it.
        let launcher = LocalProcessLauncher()
        defer { launcher.shutdown() }
        var events = launcher.events.makeAsyncIterator()
        let one = row("1")
        launcher.launch(
            RunnerLaunch(
                runner: RunnerID("s.1.a1-old"), argv: ["/bin/sleep", "30"], environment: ["PATH": "/usr/bin:/bin"],
                workingDirectory: dir.path, logPath: dir.file("1.log"), status: one.status))
        guard case .started(_, let handle)? = await next(&events), let pid = handle.pid else {
            Issue.record("the runner did not start")
            return
        }
        defer { kill(-pid, SIGKILL) }
        try registry.saveRunner(one)
        // 2: recorded, gone; its supervisor recorded exit 0. 3: gone, exit 4. 4: gone, nothing recorded.
        let gone = try runProcess("/bin/sh", ["-c", "echo $$"]).stdout
        let deadPid = try #require(Int32(gone.trimmingCharacters(in: .whitespacesAndNewlines)))
        let two = row("2", pid: deadPid, startTime: 1)
        let three = row("3", pid: deadPid, startTime: 1)
        for (record, text) in [(two.status!, "0\n"), (three.status!, "4\n")] {
            let file = open(record.path, O_WRONLY)
            _ = text.withCString { pwrite(file, $0, strlen($0), off_t(record.offset)) }
            close(file)
        }
        for record in [two, three, row("4", pid: deadPid, startTime: 1)] { try registry.saveRunner(record) }

        let recovered = try await Dispatcher<ContinuousClock>.sortOut(["s"], in: registry, launchers: [launcher])
        #expect(recovered.adopted.map(\.id) == [RunnerID("s.1.a1-old")])
        #expect(recovered.adopted.first?.pid == pid && recovered.adopted.first?.processStartTime == ProcessIdentity.startTime(of: pid))
        let ended = Dictionary(uniqueKeysWithValues: recovered.ended.map { ($0.runner.task.id, $0.exit?.reason ?? "none") })
        #expect(ended == ["2": "exit code 0", "3": "exit code 4", "4": "none"])
        #expect(RunnerStatusTable.supervisor(of: RunnerID("s.1.a1-old"), in: one.status!) == .alive(pid: pid))
        #expect(RunnerStatusTable.supervisor(of: RunnerID("s.2.a1-old"), in: two.status!) == .gone, "nothing holds 2's record")
        // Once the supervisor is gone (killed with its runner), its lock goes with it.
        kill(-pid, SIGKILL)
        _ = await next(&events)
        #expect(RunnerStatusTable.supervisor(of: RunnerID("s.1.a1-old"), in: one.status!) == .gone)
    }

    /// A supervisor caught between its start and writing its pid (the dispatcher died right after
    /// starting it) is waited for, not taken for gone: else its task would run twice.
    @Test func aSupervisorThatHasNotWrittenItsPidYetIsWaitedForAndAdopted() async throws {
        let dir = try TemporaryDirectory("recovery-wait")
        defer { dir.remove() }
        let registry = try SQLiteRegistry(path: dir.file("registry.sqlite"))
        try registry.importTaskSet(TaskSetSpec(name: "s", tasks: [TaskSpec(id: "5", title: "Task 5")]), source: nil)
        let table = try RunnerStatusTable(folder: dir.file("status"), name: "old")
        let id = RunnerID("s.5.a1-old")
        let record = try table.claim(id).get()
        try registry.saveRunner(
            RunnerRecord(id: id, task: TaskKey(spec: "s", id: "5"), attempt: 1, pool: "local", status: record, startedAt: Timestamp(secondsSince1970: 0)))
        // The lock a launch takes before its supervisor starts; the "supervisor" (a process that
        // lives) writes its pid a moment later.
        let lock = necro_lock_status_record(record.path, record.offset)
        #expect(lock >= 0)
        defer { close(lock) }
        let supervisor = Process()
        supervisor.executableURL = URL(fileURLWithPath: "/bin/sleep")
        supervisor.arguments = ["30"]
        try supervisor.run()
        defer { supervisor.terminate() }
        let pid = supervisor.processIdentifier
        let writer = Thread {
            usleep(200_000)
            let file = open(record.path, O_WRONLY)
            _ = "S\(pid)".withCString { pwrite(file, $0, strlen($0), off_t(record.offset)) }
            close(file)
        }
        writer.start()
        let launcher = LocalProcessLauncher()
        defer { launcher.shutdown() }
        let recovered = try await Dispatcher<ContinuousClock>.sortOut(["s"], in: registry, launchers: [launcher])
        #expect(recovered.adopted.map(\.id) == [id] && recovered.adopted.first?.pid == pid, "\(recovered)")
        #expect(recovered.adopted.first?.handle == "\(pid)@\(ProcessIdentity.startTime(of: pid) ?? 0)", "the handle a later adoption goes by")
        #expect(recovered.ended.isEmpty)
    }
}
