import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

private let example = "\(repositoryRoot)/Examples/chat-app"

/// Every row of the registry's tables, to show a failed command changed nothing.
private func snapshot(_ registryPath: String) throws -> String {
    let registry = try SQLiteRegistry(path: registryPath)
    var lines: [String] = []
    for set in try registry.taskSets() { lines.append("set \(set.name) v\(set.version) \(set.importedAt)") }
    for set in try registry.taskSets() {
        for task in try registry.tasks(spec: set.name) { lines.append("task \(task.key) \(task.state) \(task.task.title) \(task.updatedAt)") }
    }
    for event in try registry.events(EventQuery()) { lines.append("event \(event.id) \(event.taskID?.rawValue ?? "") \(event.seq) \(event.type)") }
    return lines.joined(separator: "\n")
}

/// Lines a process prints, read as they come; the process is killed if they do not come in time
/// (a guard against a hang, not part of what is tested).
private final class LineReader: @unchecked Sendable {  // used from one test at a time
    let process = Process()
    private let output: FileHandle
    private var pending = Data()

    init(_ arguments: [String]) throws {
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: NecroBinary.path)
        process.arguments = arguments
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        output = pipe.fileHandleForReading
    }

    /// The next `count` lines, fewer if the process ends first (or is killed after `guardTime`).
    func lines(_ count: Int, guardTime: Double = 30) -> [String] {
        let pid = process.processIdentifier
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            if done.wait(timeout: .now() + guardTime) == .timedOut { kill(pid, SIGKILL) }
        }
        defer { done.signal() }
        var lines: [String] = []
        while lines.count < count {
            if let newline = pending.firstIndex(of: 10) {
                lines.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...newline)
                continue
            }
            let more = output.availableData  // blocks until there is output, empty at its end
            if more.isEmpty { break }
            pending.append(more)
        }
        return lines
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

@Suite struct CLITests {
    @Test func eventsFollowPrintsWhatIsRecordedAfterItStarted() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file(".necro/registry.sqlite")
        let registry = try SQLiteRegistry(path: path)
        try registry.importTaskSet(TaskSetSpec(name: "first", tasks: [TaskSpec(id: "a", title: "A")]), source: nil)
        let before = try registry.events(EventQuery())
        let follower = try LineReader(["events", "--registry", path, "--follow", "--json"])
        defer { follower.stop() }
        let printed = follower.lines(before.count)
        #expect(printed.count == before.count, "what was there is printed first")
        // Recorded by another process's writes while it follows: it is told by the kernel, not a timer.
        let other = try NecroBinary.run(["import", "--registry", path, try dir.write("second.yaml", "spec_name: second\ntasks:\n  - id: b\n    title: B\n")])
        #expect(other.status == 0, "\(other.stderr)")
        let after = try registry.events(EventQuery())
        #expect(after.count > before.count)
        let followed = follower.lines(after.count - before.count)
        let ids = followed.compactMap { line in
            (try? JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8)))?["id"]?.intValue.map(Int64.init)
        }
        #expect(ids == after.dropFirst(before.count).map(\.id), "each new event once, in order")
        #expect(follower.process.isRunning, "it goes on following")
    }

    @Test func eventsPrintsOnlyTheTypeAskedFor() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file(".necro/registry.sqlite")
        let registry = try SQLiteRegistry(path: path)
        try registry.importTaskSet(
            TaskSetSpec(name: "s", tasks: [TaskSpec(id: "a", title: "A"), TaskSpec(id: "b", title: "B", dependencies: ["a"])]), source: nil)
        let result = try NecroBinary.run(["events", "--registry", path, "--type", "TaskReady", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let types = result.stdout.split(separator: "\n").map { line in
            (try? JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8)))?["event_type"]
        }
        #expect(types == [.string("TaskReady")], "only a is ready: \(result.stdout)")
    }

    @Test func validateSummarisesTheExample() throws {
        let result = try NecroBinary.run(["validate", "\(example)/tasks.md"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("chat-app: valid"))
        #expect(result.stdout.contains("tasks:         14 in 3 groups (1 marked done, 2 optional)"))
        #expect(result.stdout.contains("roots:         1 (1)"))
        #expect(result.stdout.contains("skills:        backend 5, database 3, devops 3, frontend 3"))
        #expect(result.stdout.contains("critical path: 10 tasks"))
        #expect(result.stdout.contains("order:         declared — 13 tasks declare their dependencies (_Depends:_)"))
        #expect(result.stdout.contains("at once:       at most 3 tasks"))
        let json = try NecroBinary.run(["validate", "\(example)/tasks.yaml", "--json"])
        let summary = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.stdout.utf8))
        #expect(summary["criticalPathLength"] == 10 && summary["tasks"] == 14 && summary["format"] == "yaml")

        // An invalid spec: its errors as JSON too, on standard output, exit 2.
        let dir = try TemporaryDirectory("validate-json")
        defer { dir.remove() }
        try dir.write("tasks.md", "- [ ] 1. One\n  - _Depends: 9_\n")
        let invalid = try NecroBinary.run(["validate", "tasks.md", "--json"], in: dir.path)
        #expect(invalid.status == 2)
        let answer = try JSONDecoder().decode([String: JSONValue].self, from: Data(invalid.stdout.utf8))
        #expect(answer["valid"] == false)
        let first = answer["errors"]?.arrayValue?.first
        #expect(first?["file"] == "tasks.md" && first?["line"] == 2 && first?["message"]?.stringValue?.contains("9") == true, "\(invalid.stdout)")
    }

    @Test func validateSaysWhichOrderItChoseWhyAndHowManyTasksRunAtOnce() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let spec = try dir.write(
            "plan/tasks.md",
            """
            # Implementation Plan
            - [ ] 1. Schema
            - [-] 2. Services
            - [ ] 3. Checkpoint - ensure all tests pass

            ## Notes
            - [ ] Tasks marked * are optional
            """)
        let written = try NecroBinary.run(["validate", spec])
        #expect(written.status == 0, "\(written.stderr)")
        #expect(written.stdout.contains("order:         as written — no task declares a dependency"))
        #expect(written.stdout.contains("at once:       at most 1 task (one after another, as written: declare dependencies"))
        #expect(written.stdout.contains("barriers:      1 (3): each waits for every task before it"))
        #expect(written.stdout.contains("1 marked [-] or [~]: read as not done"))
        #expect(written.stderr.contains("\(spec):7: warning: an unnumbered checkbox outside the task list (under \"Notes\", line 6)"))
        let declared = try NecroBinary.run(["validate", spec, "--order", "declared", "--json"])
        let summary = try JSONDecoder().decode([String: JSONValue].self, from: Data(declared.stdout.utf8))
        #expect(summary["order"] == "declared" && summary["mostAtOnce"] == 2 && summary["barriers"] == ["3"])
        #expect(try NecroBinary.run(["validate", spec, "--order", "sideways"]).status != 0)
        let graph = try NecroBinary.run(["graph", spec, "--order", "declared"])
        #expect(graph.stdout.contains("t0 --> t2") && !graph.stdout.contains("t0 --> t1"), "\(graph.stdout)")
        let empty = try dir.write("empty/tasks.md", "# Implementation Plan\n\nNothing yet.\n")
        let refused = try NecroBinary.run(["validate", empty])
        #expect(refused.status == 2 && refused.stderr.contains("the spec has no tasks"))
    }

    @Test func graphDrawsAParentWithWorkOfItsOwnAsABoxThatWhatFollowsWaitsOn() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let spec = try dir.write(
            "p/tasks.md", "- [ ] 1. Implement X\n  - its own work\n- [ ] 1.1 Test X\n- [ ] 2. Next\n")
        let mermaid = try NecroBinary.run(["graph", spec]).stdout
        #expect(mermaid.contains("subgraph g0[\"1 Implement X\"]"), "\(mermaid)")
        #expect(mermaid.contains("t0 --> t1") && mermaid.contains("g0 --> t2") && !mermaid.contains("t0 --> t2"), "\(mermaid)")
        let dot = try NecroBinary.run(["graph", spec, "--format", "dot"]).stdout
        #expect(dot.contains("subgraph cluster_t0 {") && dot.contains("t0 -> t2 [ltail=cluster_t0];"), "\(dot)")
    }

    @Test func invalidSpecExitsTwoWithEveryErrorLocated() throws {
        let dir = try TemporaryDirectory()
        let spec = try dir.write(
            "bad/tasks.md",
            """
            - [ ] 1. First
              - _Depends: 9_
            - [ ] 1. Again
            - [ ] 2. Loop
              - _Depends: 3_
            - [ ] 3. Loop back
              - _Depends: 2_
            """)
        let result = try NecroBinary.run(["validate", spec])
        #expect(result.status == 2)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("\(spec):2: error: task 1 depends on 9, which is not a task of this spec [unknown-dependency]"))
        #expect(result.stderr.contains("\(spec):3: error: duplicate task id 1"))
        #expect(result.stderr.contains("\(spec):4: error: dependency cycle: 2 -> 3 -> 2"))
        #expect(result.stderr.contains("3 errors"))
    }

    @Test func importCreatesTheRegistryAndReimportReportsChanges() throws {
        let dir = try TemporaryDirectory()
        let spec = try dir.write("chat-app/tasks.md", try String(contentsOfFile: "\(example)/tasks.md", encoding: .utf8))
        let first = try NecroBinary.run(["import", spec], in: dir.path)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "chat-app v1: imported 17 tasks\n")
        #expect(FileManager.default.fileExists(atPath: dir.file(".necro/registry.sqlite")), "default registry path")

        let edited = try String(contentsOfFile: spec, encoding: .utf8).replacingOccurrences(
            of: "Login UI\n    - _Requirements: 3.1_", with: "Login UI\n    - With a remember-me box\n    - _Requirements: 3.1_")
        try edited.write(toFile: spec, atomically: true, encoding: .utf8)
        let second = try NecroBinary.run(["import", spec, "--registry", dir.file(".necro/registry.sqlite")])
        #expect(second.status == 0)
        #expect(second.stdout == "chat-app v2: 0 added, 1 changed (4.1), 0 removed, 16 unchanged\n", "\(second.stdout)")
        // A new title under the same id is a new task: the old one leaves, with its history.
        let renamed = try String(contentsOfFile: spec, encoding: .utf8).replacingOccurrences(of: "Presence tracking", with: "Typing indicators")
        try renamed.write(toFile: spec, atomically: true, encoding: .utf8)
        let third = try NecroBinary.run(["import", spec], in: dir.path)
        #expect(third.stdout == "chat-app v3: 1 added (3.4), 0 changed, 1 removed (3.4, kept as 3.4@v3), 16 unchanged\n", "\(third.stdout)")
    }

    @Test func failedImportLeavesTheRegistryAsItWas() throws {
        let dir = try TemporaryDirectory()
        let registry = dir.file("reg/registry.sqlite")
        let spec = try dir.write("chat-app/tasks.yaml", try String(contentsOfFile: "\(example)/tasks.yaml", encoding: .utf8))
        #expect(try NecroBinary.run(["import", spec, "--registry", registry]).status == 0)
        let before = try snapshot(registry)

        // A later version of the spec that adds a cycle and a type error.
        let broken = try String(contentsOfFile: spec, encoding: .utf8)
            .replacingOccurrences(of: "dependencies: [\"2.1\"]", with: "dependencies: [\"2.1\", \"3.3\"]")
            .replacingOccurrences(of: "priority: 4", with: "priority: urgent")
        try broken.write(toFile: spec, atomically: true, encoding: .utf8)
        let result = try NecroBinary.run(["import", spec, "--registry", registry])
        #expect(result.status == 2)
        #expect(result.stderr.contains("error: expected an integer, found a string [wrong-type]"))
        #expect(result.stderr.contains("dependency cycle: 2.2 -> 3.3 -> 3.1 -> 2.2"))
        #expect(try snapshot(registry) == before)
    }

    @Test func failedFirstImportCreatesNoRegistry() throws {
        let dir = try TemporaryDirectory()
        let spec = try dir.write("s.json", #"{"spec_name": "s", "tasks": [{"id": "1", "title": "A", "dependencies": ["1"]}]}"#)
        let result = try NecroBinary.run(["import", spec, "--registry", dir.file("r/registry.sqlite")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("s.json:1 (tasks[0].dependencies[0]): error: task 1 depends on itself [self-dependency]"), "JSON errors have their line too")
        #expect(!FileManager.default.fileExists(atPath: dir.file("r")))
    }

    @Test func graphDrawsGroupsAndEdgesInBothFormats() throws {
        let mermaid = try NecroBinary.run(["graph", "\(example)/tasks.md"])
        #expect(mermaid.status == 0)
        let lines = mermaid.stdout.split(separator: "\n").map { $0.trimmingSpaces }
        #expect(lines.first == "flowchart LR")
        #expect(lines.contains("subgraph t1[\"2 Data layer\"]"))
        #expect(lines.contains("t2[\"2.1 Define the database schema [database]\"]"))
        #expect(lines.contains("t0 --> t2"), "1 -> 2.1")
        #expect(lines.contains("t5 --> t14"), "the group 3 -> task 5")
        #expect(lines.filter { $0.contains("-->") }.count == 17)

        let dot = try NecroBinary.run(["graph", "\(example)/tasks.json", "--format", "dot"])
        #expect(dot.status == 0)
        #expect(dot.stdout.hasPrefix("digraph \"chat-app\" {"))
        #expect(dot.stdout.contains("subgraph cluster_t1 {"))
        #expect(dot.stdout.contains("t0 -> t2;"))
        #expect(dot.stdout.contains("-> t14 [ltail=cluster_t5];"))
        let bad = try NecroBinary.run(["graph", "\(example)/tasks.md", "--format", "png"])
        #expect(bad.status != 0)
    }
}
