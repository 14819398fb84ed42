import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

/// `necro serve`, started as a user would, its address read from what it prints.
final class ServeProcess {
    let process = Process()
    let url: String
    private let errors: FileHandle

    init(in directory: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: NecroBinary.path)
        process.arguments = ["serve", "--listen", "127.0.0.1:0"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        errors = pipe.fileHandleForReading
        // It prints where it listens before it serves: read up to that line.
        var text = ""
        while !text.contains("dashboard: ") || !text.hasSuffix("\n") {
            let more = errors.availableData
            if more.isEmpty { break }
            text += String(decoding: more, as: UTF8.self)
        }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("necro serve: listening on ") }) else {
            throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "necro serve did not start: \(text)"])
        }
        url = String(line.dropFirst("necro serve: listening on ".count))
    }

    func stop() -> Int32 {
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// Sends a request with curl (as any client would); the reply's body.
@discardableResult
func curl(_ arguments: [String]) throws -> String {
    try runProcess("/usr/bin/curl", ["-s", "-f"] + arguments).stdout
}

/// Scrapes until `ready` holds of the samples (up to 10 s), and returns the last scrape.
func scrape(_ url: String, until ready: ([String: Double]) -> Bool) throws -> [String: Double] {
    var samples = try scrape(url)
    let deadline = Date().addingTimeInterval(10)
    while !ready(samples) && Date() < deadline {
        usleep(20_000)  // another process's state, seen only by asking again
        samples = try scrape(url)
    }
    return samples
}

/// Scrapes `/metrics` and parses it with the Prometheus project's own Python parser: each sample
/// as `name{label="value",…}` → value.
func scrape(_ url: String) throws -> [String: Double] {
    let script = #"""
        import json, sys, urllib.request
        from prometheus_client.parser import text_string_to_metric_families
        text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "le")
                if "le" in s.labels: continue
                samples[s.name + ("{" + labels + "}" if labels else "")] = s.value
        print(json.dumps(samples))
        """#
    let result = try runProcess("/usr/bin/env", ["python3", "-c", script, url])
    guard result.status == 0 else { throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: result.stderr]) }
    return try JSONDecoder().decode([String: Double].self, from: Data(result.stdout.utf8))
}

@Suite(.serialized) struct ServeTests {
    @Test func metricsParseAsPrometheusTextAndEachMovesAsTheRunGoes() throws {
        let dir = try TemporaryDirectory("metrics")
        defer { dir.remove() }
        let repo = try GitRepository(at: dir.file("repo"))
        #expect(mkfifo(dir.file("go"), 0o644) == 0)
        #expect(mkfifo(dir.file("ready"), 0o644) == 0)
        // One runner at a time: "gate" runs first and waits on a FIFO (the others queue meanwhile);
        // "flaky" fails once; "silent" says nothing for longer than the 1 s lease; "locked" cannot
        // get its slot.
        let script = #"""
            case "$NECRO_TASK_ID" in
              gate) echo running > "$ROOT/ready"; read line < "$ROOT/go" ;;
              flaky) if [ ! -e "$ROOT/flaked" ]; then touch "$ROOT/flaked"; exit 1; fi ;;
              silent) exec sleep 30 ;;
            esac
            """#
        try dir.write(
            "necro.yaml",
            """
            dispatcher:
              heartbeat_timeout: 1
              retry_max_attempts: 2
              retry_initial_delay: 0.05
              graceful_shutdown_timeout: 1
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: [/bin/sh, -c, '\(script)']
                  env: {ROOT: "\(dir.path)"}
            """)
        let spec = """
            spec_name: m
            tasks:
              - {id: gate, title: Gate}
              - {id: flaky, title: Flaky}
              - {id: silent, title: Silent, optional: true, max_attempts: 1}
              - {id: locked, title: Locked, optional: true, max_attempts: 1}
            """
        try dir.write("spec.yaml", spec)
        // A stale lock on "locked"'s branch: git cannot create it, so its slot cannot be prepared.
        try FileManager.default.createDirectory(atPath: repo.path + "/.git/refs/heads/necro/m", withIntermediateDirectories: true)
        try dir.write("repo/.git/refs/heads/necro/m/locked.lock", "")
        let serve = try ServeProcess(in: dir.path, arguments: ["--workspace", "repo"], environment: ["NECRO_ADMIN_TOKEN": "t"])
        defer { _ = serve.stop() }

        let initial = try scrape(serve.url)
        #expect(initial["necro_tasks_running{pool=\"local\"}"] == 0 && initial["necro_queue_depth"] == 0)
        for counter in ["necro_retries_total", "necro_heartbeat_timeouts_total", "necro_slot_allocation_failures_total", "necro_events_total", "necro_task_wait_seconds_count", "necro_task_run_seconds_count"] {
            #expect(initial[counter] == 0, "\(counter) starts at 0")
        }
        // Reads need a token: `necro token --read` prints the read-only one.
        let readToken = try NecroBinary.run(["token", "--read"], in: dir.path).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(readToken.count == 64)
        func status(_ arguments: [String]) throws -> String {
            try runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}"] + arguments).stdout
        }
        #expect(try status(["-H", "Authorization: Bearer \(readToken)", "\(serve.url)/v1/tasks"]) == "200")
        #expect(try status(["\(serve.url)/v1/tasks"]) == "401")
        #expect(try status(["-X", "POST", "-H", "Authorization: Bearer \(readToken)", "\(serve.url)/v1/pools/local/disable"]) == "403")
        try curl(["-X", "POST", "-H", "Authorization: Bearer t", "--data-binary", "@\(dir.file("spec.yaml"))", "\(serve.url)/v1/tasksets?format=yaml&with_optional=true"])
        // While "gate" runs, the other three are ready and wait for the only place.
        #expect(awaitLine(fromFIFO: dir.file("ready")) == "running\n")
        let during = try scrape(serve.url)
        #expect(during["necro_tasks_running{pool=\"local\"}"] == 1)
        #expect(during["necro_pool_utilization_ratio{pool=\"local\"}"] == 1)
        #expect(during["necro_queue_depth"] == 3)
        #expect(during["necro_tasks{state=\"running\"}"] == 1 && during["necro_tasks{state=\"ready\"}"] == 3)
        release(dir.file("go"))
        // Then everything ends: done, retried, timed out, unplaceable. (The counters follow the
        // recorded events a moment after they are recorded: scraped until they are there.)
        let after = try scrape(serve.url) {
            $0["necro_tasks{state=\"done\"}"] == 2 && $0["necro_tasks{state=\"failed\"}"] == 2
                && $0["necro_slot_allocation_failures_total"] == 1 && $0["necro_heartbeat_timeouts_total"] == 1
                && ($0["necro_task_run_seconds_count"] ?? 0) >= 4
        }
        #expect(after["necro_tasks{state=\"done\"}"] == 2 && after["necro_tasks{state=\"failed\"}"] == 2, "\(after)")
        #expect(after["necro_tasks_running{pool=\"local\"}"] == 0 && after["necro_pool_utilization_ratio{pool=\"local\"}"] == 0)
        #expect(after["necro_queue_depth"] == 0)
        #expect(after["necro_retries_total"] == 1, "flaky's second attempt")
        #expect(after["necro_heartbeat_timeouts_total"] == 1, "silent, stopped after its lease")
        #expect(after["necro_slot_allocation_failures_total"] == 1, "locked")
        #expect((after["necro_task_wait_seconds_count"] ?? 0) >= 4)
        #expect((after["necro_task_run_seconds_count"] ?? 0) >= 4 && (after["necro_task_run_seconds_sum"] ?? 0) >= 1)
        #expect((after["necro_events_total"] ?? 0) > (during["necro_events_total"] ?? 0))
        // Every event counts, the imports recorded beside the dispatcher too: as many as the
        // registry holds (it was empty when serving began).
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"), readOnly: true)
        let recorded = try registry.events(EventQuery()).count
        let counted = try scrape(serve.url)["necro_events_total"]
        #expect(counted == Double(recorded), "\(counted ?? -1) counted, \(recorded) recorded")
        #expect(serve.stop() == 0)
    }
}

@Suite(.serialized) struct DashboardTests {
    /// Starts `necro run SPEC --listen 127.0.0.1:0` in `dir`: the process, and the dashboard's
    /// address it prints first (nil if it printed none).
    static func runServing(_ spec: String, in dir: TemporaryDirectory) throws -> (Process, String?) {
        let run = Process()
        run.executableURL = URL(fileURLWithPath: NecroBinary.path)
        run.arguments = ["run", spec, "--listen", "127.0.0.1:0"]
        run.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        let errors = Pipe()
        run.standardError = errors
        run.standardOutput = FileHandle.nullDevice
        try run.run()
        var text = ""
        while !text.contains("\n") {
            let more = errors.fileHandleForReading.availableData
            if more.isEmpty { break }
            text += String(decoding: more, as: UTF8.self)
        }
        return (run, text.split(separator: "\n").first { $0.hasPrefix("dashboard: ") }.map { String($0.dropFirst(11)) })
    }

    @Test func theDashboardShowsATaskTurnFromRunningToDoneLiveInARealBrowser() throws {
        let dir = try TemporaryDirectory("dashboard")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("go"), 0o644) == 0 && mkfifo(dir.file("end"), 0o644) == 0)
        // "1.1" runs until the browser has seen it running; "1.2" keeps the run alive to the end.
        try dir.write("tasks.md", "- [ ] 1. Chat\n  - [ ] 1.1 Login\n  - [ ] 1.2 Logout\n    - _Depends: 1.1_\n")
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  command: [/bin/sh, -c, 'echo "working on $NECRO_TASK_ID"; if [ "$NECRO_TASK_ID" = 1.1 ]; then read l < "$ROOT/go"; else read l < "$ROOT/end"; fi']
                  env: {ROOT: "\(dir.path)"}
            """)
        let (run, address) = try Self.runServing("tasks.md", in: dir)
        let dashboard = try #require(address)
        #expect(dashboard.contains("/#token="), "the address carries the admin token for the page's controls")

        let screenshot = "\(repositoryRoot)/.build/test-output/dashboard.png"
        try? FileManager.default.removeItem(atPath: screenshot)
        let browser = Process()
        browser.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        browser.arguments = ["python3", "\(repositoryRoot)/Tests/NecroCLITests/Browser/watch_dashboard.py", dashboard, "\((dir.path as NSString).lastPathComponent)/1.1", screenshot]
        let said = Pipe()
        browser.standardOutput = said
        try browser.run()
        func line() -> String {
            var text = ""
            while !text.hasSuffix("\n") {
                let more = said.fileHandleForReading.availableData
                if more.isEmpty { break }
                text += String(decoding: more, as: UTF8.self)
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(line() == "running", "the page shows 1.1 running")
        release(dir.file("go"))
        let done = line()
        #expect(done.hasPrefix("done"), "the same page, not reloaded, shows 1.1 done: \(done)")
        #expect(done == "done live", "and it is following the stream")
        browser.waitUntilExit()
        #expect(browser.terminationStatus == 0)
        let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 10_000, "a screenshot of the page")
        release(dir.file("end"))
        run.waitUntilExit()
        #expect(run.terminationStatus == 0)
    }
}

extension DashboardTests {
    /// A task run through `necro runner`: its span tree in the dashboard, in a real browser.
    @Test func theDashboardShowsATasksSpanTreeWithPhasesWorkItemsGatesAndCheckpoints() throws {
        let dir = try TemporaryDirectory("dashboard-spans")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("end"), 0o644) == 0)
        // Task 1: two steps and a gate, through necro runner; task 2 keeps the run alive.
        try dir.write(
            "tasks.yaml",
            """
            spec_name: demo
            tasks:
              - id: "1"
                title: Build the thing
                steps: [{title: Write the code}, {title: Write the tests}]
                gates: [[sh, -c, "test -f code.txt && test -f tests.txt && echo both there"]]
              - {id: "2", title: Wait, dependencies: ["1"]}
            """)
        try dir.write(
            "necro.yaml",
            """
            agent:
              command: [/bin/sh, -c, 'if [ "$NECRO_TASK_ID" = 2 ]; then read l < "$ROOT/end"; exit 0; fi; $NECRO step start 1 && echo code > code.txt && $NECRO step done 1 && $NECRO step start 2 && echo tests > tests.txt && $NECRO step done 2']
            agent_pools:
              local:
                max_concurrency: 2
                config: {env: {ROOT: "\(dir.path)", NECRO: "\(NecroBinary.path)"}}
            """)
        let (run, address) = try Self.runServing("tasks.yaml", in: dir)
        defer { if run.isRunning { kill(run.processIdentifier, SIGKILL) } }
        let dashboard = try #require(address)
        let screenshot = "\(repositoryRoot)/.build/test-output/dashboard-spans.png"
        let browser = try runProcess(
            "/usr/bin/env", ["python3", "\(repositoryRoot)/Tests/NecroCLITests/Browser/inspect_span_tree.py", dashboard, "demo/1", screenshot])
        release(dir.file("end"))
        run.waitUntilExit()
        #expect(browser.status == 0, "\(browser.stdout)\(browser.stderr)")
        struct Shown: Decodable {
            struct Span: Decodable {
                var span: String
                var parent: String?
                var state: String?
                var head: String
                var events: [String]
                var text: [String]
            }
            var spans: [Span]
            var gates: [String]
        }
        let shown = try JSONDecoder().decode(Shown.self, from: Data(browser.stdout.utf8))
        let main = try #require(shown.spans.first { $0.span == "main" })
        #expect(main.parent == nil)
        #expect(main.events.filter { $0.hasPrefix("phase_") } == ["phase_enter", "phase_exit", "phase_enter", "phase_exit", "phase_enter", "phase_exit"])
        #expect(main.text.contains("▶ verifying") && main.text.contains("gate `sh -c test -f code.txt && test -f tests.txt && echo both there` passed, exit 0, " + (main.text.first { $0.contains("passed, exit 0") }?.components(separatedBy: ", exit 0, ").last ?? "")))
        #expect(main.text.contains("checkpoint 1 (1 file)") && main.text.contains("checkpoint 1#2 verified"), "\(main.text)")
        for (step, file) in [("1", "code.txt"), ("2", "tests.txt")] {
            let span = try #require(shown.spans.first { $0.span == "work_step_\(step)" })
            #expect(span.parent == "main" && span.state == "done" && span.head == "work item step_\(step) — done")
            #expect(span.events == ["work_item_start", "lease_acquired", "work_item_done"])
            #expect(span.text.last == "done — \(file)")
        }
        #expect(shown.gates == ["both there\n"])
        let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 10_000)
    }
}

@Suite(.serialized) struct RunServerOptionTests {
    @Test func runServesOnTheDefaultPortOrAnyFreeOneAndSaysWhere() throws {
        let dir = try TemporaryDirectory("run-server")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. One\n")
        try dir.write("necro.yaml", "agent_pools:\n  local:\n    max_concurrency: 1\n    config: {command: [/bin/true]}\n")
        // The default port taken by someone else: the run serves elsewhere.
        let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(taken) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(7777).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var yes: Int32 = 1
        setsockopt(taken, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(taken, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        _ = listen(taken, 1)
        let run = try NecroBinary.run(["run", "tasks.md"], in: dir.path)
        #expect(run.status == 0, "\(run.stderr)")
        let line = try #require(run.stderr.split(separator: "\n").first { $0.hasPrefix("dashboard: http://127.0.0.1:") })
        if bound == 0 { #expect(!line.hasPrefix("dashboard: http://127.0.0.1:7777/"), "\(line)") }
        #expect(try String(contentsOfFile: dir.file(".necro/admin.token"), encoding: .utf8).count == 65, "a token made on first use")
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.file(".necro/admin.token"))
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(line.hasSuffix("/#token=" + (try String(contentsOfFile: dir.file(".necro/admin.token"), encoding: .utf8)).trimmingCharacters(in: .newlines)))

        let quiet = try NecroBinary.run(["run", "tasks.md", "--no-server"], in: dir.path)
        #expect(quiet.status == 0 && !quiet.stderr.contains("dashboard:"))
        let bad = try NecroBinary.run(["run", "tasks.md", "--listen", "localhost"], in: dir.path)
        #expect(bad.status == 2 && bad.stderr.contains("--listen localhost: expected HOST:PORT"))
    }
}
