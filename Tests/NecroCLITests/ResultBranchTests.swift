import Foundation
import NecroCore
import NecroTesting
import Testing

/// A spec inside a git repository works in that repository, and a run ends with one branch that
/// holds every task's work.
@Suite(.serialized) struct ResultBranchTests {
    /// A repository with a Kiro spec in it and an agent that writes its task's title into a file
    /// (`notes.txt` for a title about notes, `task-ID.txt` otherwise) and commits it.
    private func project(_ dir: TemporaryDirectory, spec: String) throws -> GitRepository {
        let repo = try GitRepository(at: dir.file("project"), files: ["README.md": "# Project\n", "notes.txt": "base\n"])
        try dir.write(
            "project/necro.yaml",
            """
            agent_pools:
              local:
                max_concurrency: 2
                config:
                  command: [/bin/sh, -c, 'case "$2" in *notes*) f=notes.txt;; *) f="task-$1.txt";; esac; printf "%s\\n" "$2" > "$f" && git add -A && (git commit -qm "$1" || true)', sh, "{task.id}", "{task.title}"]
            """)
        try dir.write("project/.kiro/specs/shop/tasks.md", spec)
        try repo.commit(["necro.yaml": try String(contentsOfFile: dir.file("project/necro.yaml"), encoding: .utf8)], message: "config")
        return repo
    }

    @Test func aSpecInsideARepositoryRunsInItAndEndsWithABranchHoldingEveryTasksWork() throws {
        let dir = try TemporaryDirectory("result")
        defer { dir.remove() }
        let repo = try project(
            dir,
            spec: """
                # Implementation Plan
                - [ ] 1. Cart
                - [ ] 2. Checkout
                - [ ] 3. Receipts
                """)
        let result = try NecroBinary.run(["run", ".kiro/specs/shop/tasks.md", "--no-server"], in: dir.file("project"))
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("workspace: \(dir.file("project")), the spec's repository"), "\(result.stderr)")
        #expect(result.stdout.contains("branches (3, from main):"), "worktrees, not plain folders: \(result.stdout)")
        #expect(result.stdout.contains("result: necro/shop/result "), "\(result.stdout)")
        #expect(result.stdout.contains("every done task's work merged (3 tasks)"))
        for (file, title) in [("task-1.txt", "Cart"), ("task-2.txt", "Checkout"), ("task-3.txt", "Receipts")] {
            #expect(repo.show("necro/shop/result", file) == "\(title)\n", "\(file) on the result branch")
        }
        let exclude = try String(contentsOfFile: dir.file("project/.git/info/exclude"), encoding: .utf8)
        #expect(exclude.contains("\n/.necro/\n"), "the registry and slots inside the repository are kept out of git")
        #expect(try repo.git("status", "--porcelain").isEmpty, "the user's checkout is untouched")
        #expect(try repo.git("rev-parse", "--abbrev-ref", "HEAD") == "main")

        // Plain folders when asked.
        let plain = try NecroBinary.run(["run", ".kiro/specs/shop/tasks.md", "--no-server", "--no-workspace", "--name", "plain"], in: dir.file("project"))
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!plain.stdout.contains("branches ("), "\(plain.stdout)")
        #expect(FileManager.default.fileExists(atPath: dir.file("project/.necro/work/plain/1/task-1.txt")))
    }

    @Test func aConflictInTheResultIsReportedWithTheTaskAndFilesNeverForced() throws {
        let dir = try TemporaryDirectory("result-conflict")
        defer { dir.remove() }
        let repo = try project(
            dir,
            spec: """
                # Implementation Plan
                - [ ] 1. Write the notes one way
                  - _Depends:_ none
                - [ ] 2. Write the notes another way
                  - _Depends:_ none
                """)
        let result = try NecroBinary.run(["run", ".kiro/specs/shop/tasks.md", "--no-server"], in: dir.file("project"))
        #expect(result.status == 0, "both tasks are done: \(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("result: necro/shop/result stops before 2: merging it conflicts in notes.txt (1 of 2 tasks merged; nothing forced)"), "\(result.stdout)")
        #expect(repo.show("necro/shop/result", "notes.txt") == "Write the notes one way\n")
        #expect(try repo.git("status", "--porcelain").isEmpty)
    }
}
