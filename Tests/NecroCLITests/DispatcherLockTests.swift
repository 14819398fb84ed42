import Foundation
import NecroCore
import NecroTesting
import Testing

/// One registry, one dispatcher: a second `necro run` or `necro serve` on a registry in use is
/// refused before it touches anything, while the commands that read or ask keep working beside it.
@Suite(.serialized) struct DispatcherLockTests {
    @Test func aSecondDispatcherOnARegistryInUseIsRefusedAndTheFirstGoesOnUntouched() throws {
        let dir = try TemporaryDirectory("lock")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0 && mkfifo(dir.file("gate"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Wait at the gate\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: [/bin/sh, -c, 'if [ "$1" = 1 ]; then echo running > "$ROOT/ready"; read line < "$ROOT/gate"; else touch "$ROOT/ran-$1"; fi', sh, "{task.id}"]
                  env: {ROOT: "\(dir.path)"}
            """)
        let first = try NecroBinary.start(["run", "tasks.md", "--no-server"], in: dir.path)
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")

        for command in [["run", "tasks.md", "--no-server"], ["serve", "--listen", "127.0.0.1:0"]] {
            let second = try NecroBinary.run(command, in: dir.path)
            #expect(second.status == 2, "\(command): \(second.stderr)")
            #expect(second.stderr.contains("registry .necro/registry.sqlite in use by pid \(first.processIdentifier) (necro run, started "), "\(second.stderr)")
            #expect(second.stderr.contains("necro import SPEC"))
        }
        let retryRunning = try NecroBinary.run(["retry", "1"], in: dir.path)
        #expect(retryRunning.status == 1 && retryRunning.stderr.contains("/1 is running: wait for it to end, or cancel it"), "\(retryRunning.stdout)\(retryRunning.stderr)")
        let status = try NecroBinary.run(["status"], in: dir.path)
        #expect(status.status == 0 && status.stdout.contains("1 running"), "status works beside it: \(status.stdout)")
        #expect(FileManager.default.fileExists(atPath: dir.file(".necro/registry.sqlite.dispatcher.pid")), "the first one's pid file is left alone")
        // Work added beside it is taken up by it.
        try dir.write("extra/tasks.md", "- [ ] 9. Added while it runs\n")
        let imported = try NecroBinary.run(["import", "extra/tasks.md"], in: dir.path)
        #expect(imported.status == 0 && imported.stdout.contains("extra: taken up by the running dispatcher"), "\(imported.stdout)\(imported.stderr)")

        release(dir.file("gate"))
        first.waitUntilExit()
        #expect(first.terminationStatus == 0, "the first run finished its task")
        let spec = (dir.path as NSString).lastPathComponent
        let retryDone = try NecroBinary.run(["retry", "1", "--spec", spec], in: dir.path)
        #expect(retryDone.status == 1 && retryDone.stderr.contains("\(spec)/1 is done: nothing to retry"), "\(retryDone.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.file("ran-9")), "and the one imported beside it")
        #expect(try NecroBinary.run(["run", "tasks.md", "--no-server"], in: dir.path).status == 0, "free again once it ended")
    }

    @Test func statusShowsTheRunningDispatcherItsPoolsAndWhatWaitsOnADisabledPool() throws {
        let dir = try TemporaryDirectory("disabled-pool")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. One\n- [ ] 2. Two\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                enabled: false
                config:
                  command: [/bin/true]
            """)
        let before = try NecroBinary.run(["status"], in: dir.path)
        #expect(before.status == 1, "no registry yet")
        let run = try NecroBinary.start(
            ["run", "tasks.md", "--order", "declared", "--no-workspace", "--no-server"], in: dir.path, outputFile: dir.file("out"))
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        var status = ""
        for _ in 0..<100 where !status.contains("waiting: ") {
            usleep(100_000)  // another process's state, seen only by asking again
            status = (try? NecroBinary.run(["status"], in: dir.path).stdout) ?? ""
        }
        let spec = (dir.path as NSString).lastPathComponent
        #expect(status.contains("dispatcher: pid \(run.processIdentifier), necro run since "), "\(status)")
        #expect(status.contains("pools: local (local-process) 0/2 running, disabled: necro pool enable local"), "\(status)")
        #expect(status.contains("queue: 2 ready to start, 0 running"), "\(status)")
        #expect(status.contains("waiting: 2 tasks (\(spec)/1, \(spec)/2) can only go to disabled pool local: necro pool enable local"), "\(status)")
        let json = try NecroBinary.run(["status", "--json"], in: dir.path)
        let report = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.stdout.utf8))
        #expect(report["dispatcher"]?["pid"] == .int(Int(run.processIdentifier)) && report["dispatcher"]?["waiting"]?.arrayValue?.count == 1)

        #expect(try NecroBinary.run(["pool", "enable", "local"], in: dir.path).status == 0)
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        let out = try String(contentsOfFile: dir.file("out"), encoding: .utf8)
        #expect(out.contains("waiting: 2 tasks (1, 2) can only go to pool local, which is disabled: `necro pool enable local` lets them start"), "\(out)")
        let after = try NecroBinary.run(["status"], in: dir.path)
        #expect(after.stdout.contains("dispatcher: none running on .necro/registry.sqlite"), "\(after.stdout)")
    }

    @Test func aDispatcherKilledWithSIGKILLLeavesNoLockBehind() throws {
        let dir = try TemporaryDirectory("lock-kill")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        try dir.write("tasks.md", "- [ ] 1. Sleep\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: [/bin/sh, -c, 'echo running > "$ROOT/ready"; sleep 1']
                  env: {ROOT: "\(dir.path)"}
            """)
        let first = try NecroBinary.start(["run", "tasks.md", "--no-server"], in: dir.path)
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        // Its runner (and the runner's supervisor) still runs: they do not hold the lock.
        let next = try NecroBinary.run(["run", "tasks.md", "--no-server"], in: dir.path)
        #expect(next.status == 0, "\(next.stderr)")
    }
}
