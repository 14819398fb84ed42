import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

/// Importing a spec again, as people regenerate them: renumbered tasks, same-named specs, the plan
/// shown before anything is written.
@Suite(.serialized) struct ReimportTests {
    /// A configuration whose agent writes a file named after its task, commits it on the task's
    /// branch, and logs its task id.
    private func configure(_ dir: TemporaryDirectory) throws {
        try dir.write(
            "necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  command: [/bin/sh, -c, 'echo "$1" >> "$ROOT/ran"; echo "$2" > "work-$1.txt"; git add -A && git commit -qm "$1: $2"', sh, "{task.id}", "{task.title}"]
                  env: {ROOT: "\(dir.path)"}
            """)
    }

    private func ran(_ dir: TemporaryDirectory) -> [String] {
        ((try? String(contentsOfFile: dir.file("ran"), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func aTaskInsertedAtTwoRunsAloneAndTheRenumberedOnesKeepTheirStateBranchAndHistory() throws {
        let dir = try TemporaryDirectory("reimport")
        defer { dir.remove() }
        try configure(dir)
        let repo = try GitRepository(at: dir.file("repo"))
        let spec = "spec/tasks.md"
        try dir.write(spec, "# Implementation Plan\n- [ ] 1. Schema\n- [ ] 2. Service\n- [ ] 3. API\n")
        let first = try NecroBinary.run(["run", spec, "--workspace", "repo", "--no-server"], in: dir.path)
        #expect(first.status == 0, "\(first.stdout)\n\(first.stderr)")
        #expect(ran(dir) == ["1", "2", "3"])
        let serviceCommit = try repo.git("rev-parse", "necro/spec/2")

        // Kiro regenerates the spec with a task inserted at 2: the old 2 and 3 are now 3 and 4.
        try dir.write(spec, "# Implementation Plan\n- [ ] 1. Schema\n- [ ] 2. Audit log\n- [ ] 3. Service\n- [ ] 4. API\n")
        let registryFile = dir.file(".necro/registry.sqlite")
        let before = try Data(contentsOf: URL(fileURLWithPath: registryFile))
        let plan = try NecroBinary.run(["import", spec, "--dry-run"], in: dir.path)
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("new      2  Audit log"), "\(plan.stdout)")
        // Renumbered, and changed: in the order written, each now waits on a different task.
        #expect(plan.stdout.contains("changed  3  Service (was 2): renumbered, keeps its state and history"), "\(plan.stdout)")
        #expect(plan.stdout.contains("changed  4  API (was 3): renumbered"), "\(plan.stdout)")
        #expect(plan.stdout.contains("1 new, 2 changed, 1 kept (1 as they were), 0 removed"), "\(plan.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: registryFile)) == before, "a dry run writes nothing")
        let runPlan = try NecroBinary.run(["run", spec, "--dry-run"], in: dir.path)
        #expect(runPlan.status == 0 && runPlan.stdout.contains("new      2  Audit log"), "\(runPlan.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: registryFile)) == before)
        #expect(ran(dir) == ["1", "2", "3"], "a dry run runs nothing")

        let second = try NecroBinary.run(["run", spec, "--workspace", "repo", "--no-server"], in: dir.path)
        #expect(second.status == 0, "\(second.stdout)\n\(second.stderr)")
        #expect(ran(dir) == ["1", "2", "3", "2"], "only the inserted task runs")
        let registry = try SQLiteRegistry(path: registryFile)
        let records = Dictionary(uniqueKeysWithValues: try registry.tasks(spec: "spec").map { ($0.task.id, $0) })
        #expect(records.mapValues(\.state) == ["1": .done, "2": .done, "3": .done, "4": .done])
        #expect(records["3"]?.task.title == "Service" && records["2"]?.task.title == "Audit log")
        // History, branch and work follow the task, not the number.
        let serviceEvents = try registry.events(EventQuery(spec: "spec", task: "3")).map(\.type)
        #expect(serviceEvents.contains(.taskCompleted) && serviceEvents.contains(.taskRenumbered))
        let auditEvents = try registry.events(EventQuery(spec: "spec", task: "2")).map(\.type)
        #expect(auditEvents.filter { $0 == .taskCompleted }.count == 1, "the new 2 inherits nothing: \(auditEvents)")
        #expect(try repo.git("rev-parse", "necro/spec/3") == serviceCommit, "the branch was renamed with its task")
        #expect(repo.show("necro/spec/3", "work-2.txt") == "Service\n")
        #expect(repo.show("necro/spec/2", "work-2.txt") == "Audit log\n", "the new 2 has a branch of its own")
        #expect(repo.show("necro/spec/4", "work-3.txt") == "API\n")
    }

    @Test func sameNamedSpecsFromTwoProjectsStayApart() throws {
        let dir = try TemporaryDirectory("two-projects")
        defer { dir.remove() }
        let a = try dir.write("a/.kiro/specs/user-authentication/tasks.md", "- [ ] 1. Login form\n")
        let b = try dir.write("b/.kiro/specs/user-authentication/tasks.md", "- [ ] 1. OAuth provider\n")
        #expect(try NecroBinary.run(["import", a], in: dir.path).status == 0)
        let refused = try NecroBinary.run(["import", b], in: dir.path)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("taskset user-authentication comes from \(dir.path)/a/.kiro/specs/user-authentication/tasks.md"), "\(refused.stderr)")
        #expect(refused.stderr.contains("\(dir.path)/b/.kiro/specs/user-authentication/tasks.md is another spec of the same name"))
        #expect(refused.stderr.contains("--name"))
        let named = try NecroBinary.run(["import", b, "--name", "b-auth"], in: dir.path)
        #expect(named.status == 0, "\(named.stderr)")
        let registry = try SQLiteRegistry(path: dir.file(".necro/registry.sqlite"))
        #expect(try registry.tasks(spec: "user-authentication").map(\.task.title) == ["Login form"], "the first one untouched")
        #expect(try registry.tasks(spec: "b-auth").map(\.task.title) == ["OAuth provider"])
        #expect(try NecroBinary.run(["import", a], in: dir.path).status == 0, "the same file again is the same taskset")
    }
}
