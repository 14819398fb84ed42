import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

/// The dispatcher under faults of its storage: a disk that fills up mid-run, a registry another
/// process holds locked.
@Suite(.serialized) struct FaultTests {
    /// 200 tasks with the registry on a 2 MB file system that fills up mid-run (a real tmpfs: the
    /// test mounts it, as root; CI runs as root). The run must not claim, nor start, what it
    /// could not record: it gives up, non-zero. Once space is freed, the run resumed does every
    /// task that is left, and none twice.
    @Test func aRunOnADiskThatFillsUpStopsStartingWorkFailsAndOnceSpaceIsFreedResumesWithoutRunningAnythingTwice() throws {
        let dir = try TemporaryDirectory("full-disk")
        defer { dir.remove() }
        guard let mountPoint = try SmallDisk.mount(in: dir, size: "2m") else { return }
        defer { SmallDisk.unmount(mountPoint) }
        try dir.write("spec.yaml", SmallDisk.twoHundredTasks)
        try dir.write(
            "necro.yaml",
            """
            dispatcher:
              record_failure_timeout: 2s
            agent_pools:
              local:
                max_concurrency: 4
                config:
                  command: [/bin/sh, -c, 'echo "$NECRO_TASK_ID" >> "$LEDGER"; echo working']
                  env: {LEDGER: "\(dir.file("ledger"))"}
            """)
        let arguments = ["run", "spec.yaml", "--no-workspace", "--no-server", "--registry", "small/registry.sqlite"]

        let first = try NecroBinary.run(arguments, in: dir.path)
        #expect(first.status == 1, "the first run gives up: \(first.stdout)\(first.stderr)")
        #expect(first.stderr.contains("error: gave up: no record could be written for 2 s, and nothing runs"), "\(first.stderr)")
        #expect(first.stderr.contains("registry small/registry.sqlite: database or disk is full"), "it names the file and the error")
        #expect(first.stderr.contains("journal \(mountPoint)/registry.sqlite.fallback.jsonl: No space left on device"))
        let registry = try SQLiteRegistry(path: dir.file("small/registry.sqlite"), readOnly: true)
        let recorded = try registry.tasks(spec: "full").filter { $0.state == .done }.count
        #expect(recorded < 200, "the disk filled up before the end")
        #expect(first.stdout.contains("full: ") && first.stdout.contains("\(recorded) done"), "the summary says what the registry holds: \(first.stdout)")
        let ledgerAfterFirst = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8).split(separator: "\n")
        #expect(ledgerAfterFirst.count < 200, "it stopped starting work")

        #expect(try runProcess("/bin/mount", ["-o", "remount,size=64m", mountPoint]).status == 0)
        let second = try NecroBinary.run(arguments, in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\(second.stderr)")
        #expect(second.stdout.contains("full: 200 done"), "\(second.stdout)")

        let ledger = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(ledger.count == 200 && Set(ledger).count == 200, "every task ran exactly once: \(ledger.count) runs, \(Set(ledger).count) tasks")
        let resumed = try SQLiteRegistry(path: dir.file("small/registry.sqlite"), readOnly: true)
        for task in try resumed.tasks(spec: "full") {
            let seqs = try resumed.events(EventQuery(spec: "full", task: task.task.id)).map(\.seq)
            #expect(seqs == Array(1...Int64(seqs.count)), "\(task.task.id): seq \(seqs)")
        }
    }

    /// `necro serve` on a disk that fills up: it starts nothing while no record can be written,
    /// says so on /healthz (503, with the file and the error), keeps trying, and goes on once
    /// there is room again.
    @Test func aServedDispatcherOnAFullDiskReportsItOnHealthzAndGoesOnOnceThereIsRoom() throws {
        let dir = try TemporaryDirectory("full-disk-serve")
        defer { dir.remove() }
        guard let mountPoint = try SmallDisk.mount(in: dir, size: "4m") else { return }
        defer { SmallDisk.unmount(mountPoint) }
        #expect(mkfifo(dir.file("ready"), 0o644) == 0 && mkfifo(dir.file("gate"), 0o644) == 0)
        // "gate" waits at the gate; "beater" calls `necro heartbeat` until told to stop, noting
        // each call's outcome (outside the small disk); "after" waits on "gate".
        let script = #"""
            case "$NECRO_TASK_ID" in
              gate) echo running > "$ROOT/ready"; read line < "$ROOT/gate" ;;
              beater) while [ ! -e "$ROOT/stop" ]; do if "$NECRO" heartbeat 2> /dev/null; then echo ok >> "$ROOT/beats"; else echo failed >> "$ROOT/beats"; fi; sleep 0.1; done ;;
              *) touch "$ROOT/ran-$NECRO_TASK_ID" ;;
            esac
            """#
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  command: [/bin/sh, -c, '\(script)']
                  env: {ROOT: "\(dir.path)", NECRO: "\(NecroBinary.path)"}
            """)
        try dir.write(
            "spec.yaml", "spec_name: full\ntasks:\n  - {id: gate, title: Gate}\n  - {id: beater, title: Beater}\n  - {id: after, title: After, dependencies: [gate]}\n")
        let serve = try ServeProcess(in: dir.path, arguments: ["--registry", "small/registry.sqlite"], environment: ["NECRO_ADMIN_TOKEN": "t"])
        defer { _ = serve.stop() }
        func health() throws -> (code: String, body: String) {
            let result = try runProcess("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "\(serve.url)/healthz"]).stdout
            let parts = result.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n"))
        }
        #expect(try health().code == "200")
        let posted = try runProcess(
            "/usr/bin/curl",
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer t", "--data-binary", "@\(dir.file("spec.yaml"))",
             "\(serve.url)/v1/tasksets?format=yaml"])
        try #require(posted.stdout == "201", "the spec was taken: \(posted.stdout)")
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        // No slack left anywhere: the WAL emptied into the database and cut to nothing, then the
        // rest of the disk filled.
        let checkpoint = try runProcess(
            "/usr/bin/python3", ["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())", dir.file("small/registry.sqlite")])
        #expect(checkpoint.stdout.hasPrefix("(0,"), "\(checkpoint.stdout)\(checkpoint.stderr)")
        _ = try runProcess("/bin/dd", ["if=/dev/zero", "of=\(dir.file("small/filler"))", "bs=64k"])
        release(dir.file("gate"))
        var answer = try health()
        for _ in 0..<100 where answer.code != "503" {
            usleep(100_000)  // another process's state, seen only by asking again
            answer = try health()
        }
        #expect(answer.code == "503", "\(answer)")
        #expect(answer.body.contains("\"status\":\"records_failing\"") && answer.body.contains("registry small/registry.sqlite"), "\(answer.body)")
        #expect(answer.body.contains("No space left on device"), "\(answer.body)")
        // A running runner's heartbeats are still answered, at once.
        let beatsBefore = ((try? String(contentsOfFile: dir.file("beats"), encoding: .utf8)) ?? "").split(separator: "\n").count
        var beats: [Substring] = []
        for _ in 0..<100 where beats.count < beatsBefore + 3 {
            usleep(100_000)
            beats = ((try? String(contentsOfFile: dir.file("beats"), encoding: .utf8)) ?? "").split(separator: "\n")
        }
        #expect(beats.count >= beatsBefore + 3 && !beats.contains("failed"), "\(beats)")
        let ledger = try SQLiteRegistry(path: dir.file("small/registry.sqlite"), readOnly: true)
        // (Outside the full disk: what a runner of "after" would leave.)
        #expect(!FileManager.default.fileExists(atPath: dir.file("ran-after")), "nothing started meanwhile")

        try FileManager.default.removeItem(atPath: dir.file("small/filler"))
        for _ in 0..<100 where answer.code != "200" {
            usleep(100_000)
            answer = try health()
        }
        #expect(answer.code == "200", "records are written again: \(answer)")
        try dir.write("stop", "")
        var states: [TaskID: TaskState] = [:]
        for _ in 0..<100 where states["after"] != .done || states["beater"] != .done {
            usleep(100_000)
            states = Dictionary(try ledger.tasks(spec: "full").map { ($0.task.id, $0.state) }) { a, _ in a }
        }
        #expect(states == ["gate": .done, "beater": .done, "after": .done], "\(states)")
        #expect(FileManager.default.fileExists(atPath: dir.file("ran-after")))
    }

    /// The journal on another disk (`journal_path`) takes the records the full registry cannot:
    /// the run goes on; the next start takes them in, and nothing runs twice.
    @Test func aJournalOnAnotherDiskKeepsTheRecordsAFullRegistryCannotTake() throws {
        let dir = try TemporaryDirectory("full-disk-journal")
        defer { dir.remove() }
        guard let mountPoint = try SmallDisk.mount(in: dir, size: "2m") else { return }
        defer { SmallDisk.unmount(mountPoint) }
        try dir.write("spec.yaml", SmallDisk.twoHundredTasks)
        try dir.write(
            "necro.yaml",
            """
            dispatcher:
              record_failure_timeout: 2s
              journal_path: elsewhere/journal.jsonl
            agent_pools:
              local:
                max_concurrency: 4
                config:
                  command: [/bin/sh, -c, 'echo "$NECRO_TASK_ID" >> "$LEDGER"']
                  env: {LEDGER: "\(dir.file("ledger"))"}
            """)
        try FileManager.default.createDirectory(atPath: dir.file("elsewhere"), withIntermediateDirectories: true)
        let arguments = ["run", "spec.yaml", "--no-workspace", "--no-server", "--registry", "small/registry.sqlite"]
        let first = try NecroBinary.run(arguments, in: dir.path)
        let journal = FileManager.default.contents(atPath: dir.file("elsewhere/journal.jsonl")) ?? Data()
        #expect(!journal.isEmpty, "the journal beside the configuration held what the registry could not take")
        #expect(!FileManager.default.fileExists(atPath: dir.file("small/registry.sqlite.fallback.jsonl")))
        let ranFirst = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8).split(separator: "\n").count
        let recorded = try SQLiteRegistry(path: dir.file("small/registry.sqlite"), readOnly: true).tasks(spec: "full").filter { $0.state == .done }.count
        // The whole run went on: every task ran, the registry holding what it could, the journal the rest.
        #expect(first.status == 0 && ranFirst == 200, "\(ranFirst) runs: \(first.stdout.suffix(300))\(first.stderr)")
        #expect(recorded < 200, "the registry's disk filled up")
        #expect(first.stdout.contains("done in") && first.stdout.contains("(as recorded)"), "the summary says what the registry holds")
        #expect(first.stderr.contains("warning: the registry") && first.stderr.contains("elsewhere/journal.jsonl and go in at the next start"), "\(first.stderr)")

        #expect(try runProcess("/bin/mount", ["-o", "remount,size=64m", mountPoint]).status == 0)
        let second = try NecroBinary.run(arguments, in: dir.path)
        #expect(second.status == 0 && second.stdout.contains("full: 200 done"), "\(second.stdout)\(second.stderr)")
        let ledger = try String(contentsOfFile: dir.file("ledger"), encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(ledger.count == 200 && Set(ledger).count == 200, "every task ran exactly once: \(ledger.count) runs")
    }

    /// Under umask 000, everything necro makes beside its registry is still the user's alone:
    /// folders 0700, files 0600 (the runners' logs, the status records recovery trusts, the
    /// registry and its journal, the tokens).
    @Test func whatNecroMakesBesideItsRegistryIsTheUsersAloneWhateverTheUmask() throws {
        let dir = try TemporaryDirectory("modes")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. Say hello\n- [ ] 2. Say it again\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  command: [/bin/sh, -c, 'echo hello']
            """)
        let run = try runProcess(
            "/bin/sh", ["-c", "umask 000; exec \"$0\" \"$@\"", NecroBinary.path, "run", "tasks.md", "--no-workspace", "--listen", "127.0.0.1:0"],
            in: dir.path)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        var seen = 0
        var open: [String] = []
        let root = dir.file(".necro")
        var attributes = stat()
        #expect(stat(root, &attributes) == 0 && attributes.st_mode & 0o777 == 0o700, "the registry's folder")
        for path in [root] + (FileManager.default.subpaths(atPath: root) ?? []).map({ "\(root)/\($0)" }) {
            guard lstat(path, &attributes) == 0 else { continue }
            seen += 1
            let mode = attributes.st_mode & 0o777
            let isFolder = attributes.st_mode & S_IFMT == S_IFDIR
            if (isFolder && mode != 0o700) || (!isFolder && mode & 0o077 != 0) { open.append("\(path): \(String(mode, radix: 8))") }
        }
        #expect(seen >= 8, "the registry, its logs, statuses, work folders and tokens were looked at (\(seen))")
        #expect(open.isEmpty, "readable or writable by others: \(open)")
    }

    /// While another process holds the registry locked, events are stamped with the time they
    /// happened, not the time the registry took them.
    @Test func eventsRecordedLateCarryTheTimeTheyHappened() throws {
        let dir = try TemporaryDirectory("late-events")
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
                  command: [/bin/sh, -c, 'echo running > "$ROOT/ready"; read line < "$ROOT/gate"']
                  env: {ROOT: "\(dir.path)"}
            """)
        let run = try NecroBinary.start(["run", "tasks.md", "--no-server", "--no-workspace"], in: dir.path)
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        // Another process takes the registry's write lock for 3 s.
        let locker = Process()
        locker.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        locker.arguments = [
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(3); c.execute('COMMIT')",
            dir.file(".necro/registry.sqlite"),
        ]
        let out = Pipe()
        locker.standardOutput = out
        try locker.run()
        var said = Data()
        while !said.contains(10) {
            let more = out.fileHandleForReading.availableData
            if more.isEmpty { break }
            said += more
        }
        #expect(String(decoding: said, as: UTF8.self) == "locked\n")
        let finished = Date().timeIntervalSince1970
        release(dir.file("gate"))
        locker.waitUntilExit()
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"), readOnly: true)
        let completed = try registry.events(EventQuery(type: .taskCompleted)).first
        let stamp = try #require(completed).timestamp.secondsSince1970
        #expect(stamp >= finished - 0.5 && stamp < finished + 1.5, "stamped \(stamp - finished) s after the task ended; the lock was held 3 s")
    }
}

/// A real small file system for a test, a tmpfs it mounts (as root; CI runs as root).
enum SmallDisk {
    /// `dir/small`, a tmpfs of `size` (`2m`); nil where mounting is not permitted (the test is
    /// skipped, saying why), and an issue as root, where it must run.
    static func mount(in dir: TemporaryDirectory, size: String) throws -> String? {
        let mountPoint = dir.file("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mountPoint])
        guard mount.status == 0 else {
            let why = mount.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            if getuid() == 0 { Issue.record("cannot mount a tmpfs as root: \(why)") } else { print("skipped: cannot mount a tmpfs here (\(why))") }
            return nil
        }
        return mountPoint
    }

    static func unmount(_ mountPoint: String) { _ = try? runProcess("/bin/umount", ["-l", mountPoint]) }

    /// A YAML spec of 200 independent tasks, `t1`…`t200`.
    static let twoHundredTasks = "spec_name: full\ntasks:\n" + (1...200).map { "  - id: t\($0)\n    title: Task \($0)\n" }.joined()
}
