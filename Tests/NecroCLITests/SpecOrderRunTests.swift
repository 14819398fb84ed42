import Foundation
import NecroCore
import NecroTesting
import Testing

/// Runs specs through `necro run` with real runners that log when they start and end, and checks
/// the order the tasks really ran in.
@Suite(.serialized) struct SpecOrderRunTests {
    /// When each task's runner started and ended, in nanoseconds of the wall clock.
    struct Interval {
        var start: Int
        var end: Int
    }

    /// Writes a configuration whose agent logs "start ID NS" and "end ID NS", working `seconds`
    /// in between, four runners at a time.
    private func configure(_ dir: TemporaryDirectory, seconds: String = "0.2") throws {
        try dir.write(
            "necro.yaml",
            """
            dispatcher:
              graceful_shutdown_timeout: 1
            agent_pools:
              local:
                max_concurrency: 4
                config:
                  command: [/bin/sh, -c, 'echo "start $1 $(date +%s%N)" >> "$ROOT/log"; sleep \(seconds); echo "end $1 $(date +%s%N)" >> "$ROOT/log"', sh, "{task.id}"]
                  env: {ROOT: "\(dir.path)"}
            """)
    }

    private func run(_ dir: TemporaryDirectory, _ arguments: [String] = []) throws -> [String: Interval] {
        let result = try NecroBinary.run(["run", "spec/tasks.md", "--no-server"] + arguments, in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        var intervals: [String: Interval] = [:]
        let log = (try? String(contentsOfFile: dir.file("log"), encoding: .utf8)) ?? ""
        for line in log.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let time = Int(parts[2]) else { continue }
            let id = String(parts[1])
            if parts[0] == "start" {
                #expect(intervals[id] == nil, "\(id) ran once")
                intervals[id] = Interval(start: time, end: .max)
            } else {
                intervals[id]?.end = time
            }
        }
        return intervals
    }

    private func expect(_ intervals: [String: Interval], _ later: String, startsAfter earlier: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        guard let a = intervals[earlier], let b = intervals[later] else {
            Issue.record("\(earlier) and \(later) both ran: \(intervals.keys.sorted())", sourceLocation: sourceLocation)
            return
        }
        #expect(b.start >= a.end, "\(later) starts after \(earlier) ends", sourceLocation: sourceLocation)
    }

    @Test func aSpecWithoutDependenciesRunsStrictlyInTheOrderWritten() throws {
        let dir = try TemporaryDirectory("written")
        defer { dir.remove() }
        try configure(dir, seconds: "0.1")
        try dir.write(
            "spec/tasks.md",
            """
            # Implementation Plan

            - [ ] 1. Set up the database schema
              - _Requirements: 1.1_
            - [ ] 2. Services
              - [ ] 2.1 Create the order status service
              - [ ] 2.2 Create the notification service
            - [ ] 3. Wire the services into the API
            - [ ] 4. Document the API
            """)
        let intervals = try run(dir)
        let order = ["1", "2.1", "2.2", "3", "4"]
        #expect(Set(intervals.keys) == Set(order), "the group 2 does not run itself")
        for (earlier, later) in zip(order, order.dropFirst()) { expect(intervals, later, startsAfter: earlier) }
    }

    @Test func aWavesBlockRunsEachWaveInParallelAndTheWavesOneAfterAnother() throws {
        let dir = try TemporaryDirectory("waves")
        defer { dir.remove() }
        try configure(dir, seconds: "0.5")
        try dir.write(
            "spec/tasks.md",
            """
            # Implementation Plan

            - [ ] 1. Backend
              - [ ] 1.1 Schema
              - [ ] 1.2 Endpoints
            - [ ] 2. Frontend
              - [ ] 2.1 Layout
              - [ ] 2.2 Forms
            - [ ] 3. Release notes

            ## Task Dependency Graph

            ```json
            {
              "waves": [
                { "id": 0, "tasks": ["1.1", "2.1"] },
                { "id": 1, "tasks": ["1.2", "2.2"] }
              ]
            }
            ```
            """)
        let intervals = try run(dir)
        #expect(Set(intervals.keys) == ["1.1", "1.2", "2.1", "2.2", "3"])
        for later in ["1.2", "2.2"] { for earlier in ["1.1", "2.1"] { expect(intervals, later, startsAfter: earlier) } }
        for earlier in ["1.2", "2.2"] { expect(intervals, "3", startsAfter: earlier) }
        // Each wave's two tasks ran at the same time (each works half a second).
        for (a, b) in [("1.1", "2.1"), ("1.2", "2.2")] {
            if let x = intervals[a], let y = intervals[b] {
                #expect(x.start < y.end && y.start < x.end, "\(a) and \(b) overlap")
            }
        }
    }

    @Test func aCheckpointIsABarrierWhetherTheOrderIsDeclaredOrWritten() throws {
        let spec = """
            # Implementation Plan

            - [ ] 1. Parser
            - [ ] 2. Printer
            - [ ] 3. Checkpoint - ensure all tests pass
            - [ ] 4. Command line
            - [ ] 5. Packaging
              - _Depends: 1_
            """
        for arguments in [[], ["--order", "written"]] {
            let dir = try TemporaryDirectory("barrier")
            defer { dir.remove() }
            try configure(dir, seconds: "0.1")
            try dir.write("spec/tasks.md", spec)
            let intervals = try run(dir, arguments)
            #expect(intervals.count == 5)
            for earlier in ["1", "2"] { expect(intervals, "3", startsAfter: earlier) }
            for later in ["4", "5"] { expect(intervals, later, startsAfter: "3") }
        }
    }

    @Test func optionalTasksAreSkippedUnlessAskedForAndWhatFollowsThemRuns() throws {
        let dir = try TemporaryDirectory("optional")
        defer { dir.remove() }
        try configure(dir, seconds: "0.05")
        try dir.write(
            "spec/tasks.md",
            """
            # Implementation Plan
            - [ ] 1. Implement the parser
            - [ ]* 2. Write property tests for the parser
            - [ ]* 3. Benchmarks
              - [ ] 3.1 Write the benchmark
            - [ ] 4. Implement the printer
            """)
        let result = try NecroBinary.run(["run", "spec/tasks.md", "--no-server"], in: dir.path)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("2  skipped: optional (--with-optional runs it)"), "\(result.stdout)")
        #expect(result.stdout.contains("spec: 2 done, 2 skipped in "), "\(result.stdout)")
        #expect(result.stdout.contains("  skipped  2, 3.1: optional; necro run --with-optional runs them"), "an optional group's tasks are optional")
        let log = try String(contentsOfFile: dir.file("log"), encoding: .utf8)
        #expect(log.split(separator: "\n").map { $0.split(separator: " ")[1] } == ["1", "1", "4", "4"], "\(log)")

        try FileManager.default.removeItem(atPath: dir.file("log"))
        let intervals = try run(dir, ["--with-optional"])
        #expect(Set(intervals.keys) == ["2", "3.1"], "only what was skipped runs, what ran does not run again")
        expect(intervals, "3.1", startsAfter: "2")
    }

    @Test func aParentWithWorkOfItsOwnRunsItBeforeItsSubtasksAndWhatFollowsWaitsForAll() throws {
        let dir = try TemporaryDirectory("parent")
        defer { dir.remove() }
        try configure(dir, seconds: "0.1")
        try dir.write(
            "spec/tasks.md",
            """
            # Implementation Plan

            - [ ] 1. Implement the rate limiter
              - Token bucket per client, refilled every second
              - _Requirements: 3.1, 3.2_
              - [ ] 1.1 Write property tests for the rate limiter
              - [ ] 1.2 Expose its counters as metrics
            - [ ] 2. Load test
            """)
        let intervals = try run(dir)
        #expect(Set(intervals.keys) == ["1", "1.1", "1.2", "2"], "the parent's agent is called with its own id")
        expect(intervals, "1.1", startsAfter: "1")
        expect(intervals, "1.2", startsAfter: "1.1")
        expect(intervals, "2", startsAfter: "1.2")
    }
}
