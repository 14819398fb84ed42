import Foundation
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
        // 1: started, but the dispatcher stopped before recording its pid; it still runs, the leader
        // of its own process group (as a supervisor is), with its runner id in its environment.
        let launcher = LocalProcessLauncher()
        defer { launcher.shutdown() }
        var events = launcher.events.makeAsyncIterator()
        launcher.launch(
            RunnerLaunch(
                runner: RunnerID("s.1.a1-old"), argv: ["/bin/sleep", "30"],
                environment: ["PATH": "/usr/bin:/bin", "RUNNER_ID": "s.1.a1-old", "NECRO_DISPATCHER": Dispatcher<ContinuousClock>.runnerMarker(registry: registry.path)],
                workingDirectory: dir.path, logPath: dir.file("1.log")))
        guard case .started(_, let pid, _)? = await next(&events) else {
            Issue.record("the runner did not start")
            return
        }
        defer { kill(-pid, SIGKILL) }
        try registry.saveRunner(row("1"))
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

        let recovered = try Recovery.sortOut(of: "s", in: registry, runnersSee: registry.path)
        #expect(recovered.adopted.map(\.id) == [RunnerID("s.1.a1-old")])
        #expect(recovered.adopted.first?.pid == pid && recovered.adopted.first?.processStartTime == ProcessIdentity.startTime(of: pid))
        let ended = Dictionary(uniqueKeysWithValues: recovered.ended.map { ($0.runner.task.id, $0.exit?.reason ?? "none") })
        #expect(ended == ["2": "exit code 0", "3": "exit code 4", "4": "none"])
        // Another registry's runners are none of its business.
        #expect(try Recovery.sortOut(of: "s", in: registry, runnersSee: dir.file("other.sqlite")).adopted.isEmpty)
    }
}
