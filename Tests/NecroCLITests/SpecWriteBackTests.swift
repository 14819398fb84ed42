import Foundation
import NecroCore
import NecroTesting
import Testing

/// `necro run --update-spec`: the spec's checkboxes ticked as tasks finish, nothing else touched.
@Suite(.serialized) struct SpecWriteBackTests {
    private let original = """
        # Implementation Plan

        - [ ] 1. Parser
          - [ ] a step is left alone
        - [ ] 2. Printer
        - [ ] 3. Group
          - [ ] 3.1 Command line
          - [ ]* 3.2 Optional benchmarks
        - [ ] 4. Flaky

        ## Notes
        - Tasks marked * are optional
        """

    @Test func tasksAreTickedAsTheyFinishAndNothingTheUserWroteMeanwhileIsLost() throws {
        let dir = try TemporaryDirectory("update-spec")
        defer { dir.remove() }
        let spec = try dir.write("plan/tasks.md", original)
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: spec)
        // Task 2's agent is the user editing the spec during the run; task 4 fails.
        try dir.write(
            "necro.yaml",
            """
            dispatcher: {retry_max_attempts: 1}
            agent_pools:
              local:
                max_concurrency: 1
                config:
                  command: [/bin/sh, -c, 'if [ "$1" = 2 ]; then printf "<!-- reviewed by the user -->\\n" >> "$SPEC"; fi; [ "$1" != 4 ]', sh, "{task.id}"]
                  env: {SPEC: "\(spec)"}
            """)
        let result = try NecroBinary.run(["run", "plan/tasks.md", "--update-spec", "--no-server", "--config", "necro.yaml"], in: dir.path)
        #expect(result.status == 1, "task 4 failed: \(result.stdout)\n\(result.stderr)")
        let final = try String(contentsOfFile: spec, encoding: .utf8)
        let edit = "<!-- reviewed by the user -->\n"
        #expect(final.hasSuffix(edit), "what the user wrote during the run is kept: \(final)")
        let ticked = String(final.dropLast(edit.count))
        let expected = original
            .replacingOccurrences(of: "- [ ] 1. Parser", with: "- [x] 1. Parser")
            .replacingOccurrences(of: "- [ ] 2. Printer", with: "- [x] 2. Printer")
            .replacingOccurrences(of: "- [ ] 3. Group", with: "- [x] 3. Group")
            .replacingOccurrences(of: "- [ ] 3.1 Command line", with: "- [x] 3.1 Command line")
        #expect(ticked == expected, "done tasks and the group ticked; steps, the skipped 3.2 and the failed 4 keep [ ]: \(ticked)")
        #expect(Array(ticked.utf8).count == Array(original.utf8).count)
        let permissions = try FileManager.default.attributesOfItem(atPath: spec)[.posixPermissions] as? Int
        #expect(permissions == 0o640, "the file keeps its permissions")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.file("plan"))
        #expect(leftovers == ["tasks.md"], "no temporary file left: \(leftovers)")
    }

    @Test func aRepositoryWhoseOnlyChangeIsTheWriteBackIsNotRefusedByTheNextRun() throws {
        let dir = try TemporaryDirectory("update-spec-repo")
        defer { dir.remove() }
        let repo = try GitRepository(at: dir.file("project"), files: [
            ".kiro/specs/app/tasks.md": "- [ ] 1. One\n- [ ] 2. Two\n",
            "necro.yaml": "agent_pools:\n  local:\n    max_concurrency: 1\n    config:\n      command: [/bin/true]\n",
        ])
        let first = try NecroBinary.run(["run", ".kiro/specs/app/tasks.md", "--update-spec", "--no-server"], in: repo.path)
        #expect(first.status == 0, "\(first.stdout)\n\(first.stderr)")
        #expect(try String(contentsOfFile: "\(repo.path)/.kiro/specs/app/tasks.md", encoding: .utf8) == "- [x] 1. One\n- [x] 2. Two\n")
        #expect(try repo.git("status", "--porcelain") == "M .kiro/specs/app/tasks.md")
        let second = try NecroBinary.run(["run", ".kiro/specs/app/tasks.md", "--update-spec", "--no-server"], in: repo.path)
        #expect(second.status == 0, "not refused as dirty: \(second.stderr)")
    }
}
