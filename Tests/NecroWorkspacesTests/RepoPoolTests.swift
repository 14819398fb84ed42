import Foundation
import NecroCore
import NecroTesting
import NecroWorkspaces
import Testing

/// A repository, its pool, and helpers to hand out slots as the dispatcher does.
private struct Fixture {
    let dir: TemporaryDirectory
    let repo: GitRepository
    let pool: RepoPool

    init(
        slots: Int = 3, files: [String: String] = ["README.md": "# Sample\n", ".gitignore": "build/\n"], specs: [String] = []
    ) throws {
        let dir = try TemporaryDirectory("repopool")
        self.dir = dir
        repo = try GitRepository(at: dir.file("repo"), files: files)
        pool = try RepoPool(
            RepoPoolConfiguration(repository: repo.path), slotCount: slots, defaultSlotsDirectory: dir.file("slots"),
            specs: Set(specs.map { "\(dir.file("repo"))/\($0)" }))
    }

    func slot(_ number: Int, for task: TaskID) -> TaskSlot {
        TaskSlot(id: TaskSlot.id(number), path: pool.path(of: TaskSlot.id(number))!, branch: "necro/app/\(task)")
    }

    func user(_ task: TaskID, attempt: Int = 1, runner: String? = nil) -> SlotUser {
        SlotUser(runner: RunnerID(runner ?? "app.\(task).a\(attempt)"), task: TaskKey(spec: "app", id: task), attempt: attempt, title: "Task \(task)")
    }

    /// Prepares a slot for a task and expects it ready.
    @discardableResult
    func prepare(_ number: Int, _ task: TaskID, merging: [TaskID] = [], attempt: Int = 1) throws -> TaskSlot {
        let slot = slot(number, for: task)
        let result = pool.prepare(slot, for: user(task, attempt: attempt), merging: merging.map { DependencyBranch(task: $0, branch: "necro/app/\($0)") })
        guard case .ready = result else { throw GitRepository.Failure(description: "prepare \(task): \(result)") }
        return slot
    }

    func write(_ slot: TaskSlot, _ name: String, _ text: String) throws {
        let target = "\(slot.path)/\(name)"
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: target, atomically: true, encoding: .utf8)
    }

    /// Commits in the slot as an agent would.
    func agentCommit(_ slot: TaskSlot, _ name: String, _ text: String) throws {
        try write(slot, name, text)
        try repo.git("add", "-A", in: slot.path)
        try repo.git("commit", "-q", "-m", "agent: \(name)", in: slot.path)
    }
}

@Suite struct RepoPoolTests {
    @Test func branchesThatTickDifferentTasksOfTheSpecMergeWithEveryTickAndOtherConflictsStay() throws {
        let spec = "- [ ] 1. One\n- [ ] 2. Two\n- [ ] 3. Three\n"
        let f = try Fixture(files: ["README.md": "# Sample\n", "specs/tasks.md": spec, "notes.txt": "base\n"], specs: ["specs/tasks.md"])
        defer { f.dir.remove() }
        let one = try f.prepare(1, "1")
        try f.agentCommit(one, "specs/tasks.md", "- [x] 1. One\n- [ ] 2. Two\n- [ ] 3. Three\n")
        _ = f.pool.release(one, of: f.user("1"), succeeded: true)
        let two = try f.prepare(2, "2")
        try f.agentCommit(two, "specs/tasks.md", "- [ ] 1. One\n- [x] 2. Two\n- [-] 3. Three\n")
        _ = f.pool.release(two, of: f.user("2"), succeeded: true)
        let three = try f.prepare(3, "3", merging: ["1", "2"])
        let joined = try String(contentsOfFile: "\(three.path)/specs/tasks.md", encoding: .utf8)
        #expect(joined == "- [x] 1. One\n- [x] 2. Two\n- [-] 3. Three\n", "\(joined)")
        _ = f.pool.release(three, of: f.user("3"), succeeded: true)

        // Anything more than ticks is a conflict as before.
        let four = try f.prepare(1, "4")
        try f.agentCommit(four, "specs/tasks.md", "- [x] 1. One, renamed\n- [ ] 2. Two\n- [ ] 3. Three\n")
        _ = f.pool.release(four, of: f.user("4"), succeeded: true)
        let five = f.pool.prepare(f.slot(2, for: "5"), for: f.user("5"), merging: [
            DependencyBranch(task: "1", branch: "necro/app/1"), DependencyBranch(task: "4", branch: "necro/app/4"),
        ])
        #expect(five == .conflict(dependency: "4", files: ["specs/tasks.md"]))
    }

    @Test func eachSlotIsAWorktreeOnItsTasksBranchInsideTheSlotsFolder() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let a = try f.prepare(1, "1")
        let b = try f.prepare(2, "2")
        #expect(a.path != b.path)
        #expect(a.path.hasPrefix(f.pool.slotsDirectory + "/") && b.path.hasPrefix(f.pool.slotsDirectory + "/"))
        #expect(try f.repo.git("rev-parse", "--abbrev-ref", "HEAD", in: a.path) == "necro/app/1")
        #expect(try f.repo.git("rev-parse", "--abbrev-ref", "HEAD", in: b.path) == "necro/app/2")
        #expect(try f.repo.worktrees().count == 3)
        // Only generated ids name slots: nothing can lead outside the folder.
        #expect(f.pool.path(of: "../escape") == nil && f.pool.path(of: "slot-0") == nil && f.pool.path(of: "slot-01") == nil)
        let outside = TaskSlot(id: "slot-1", path: f.dir.file("elsewhere"), branch: "necro/app/3")
        #expect(f.pool.prepare(outside, for: f.user("3"), merging: []) == .failed("slot slot-1 is not in \(f.pool.slotsDirectory)"))
    }

    @Test func aDependentsBranchHasTheCommitsOfAllItsDependencies() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let a = try f.prepare(1, "a")
        try f.agentCommit(a, "a.txt", "from a\n")
        _ = f.pool.release(a, of: f.user("a"), succeeded: true)
        let b = try f.prepare(1, "b")
        try f.agentCommit(b, "b.txt", "from b\n")
        _ = f.pool.release(b, of: f.user("b"), succeeded: true)
        let c = try f.prepare(2, "c", merging: ["a", "b"])
        #expect(FileManager.default.fileExists(atPath: "\(c.path)/a.txt"))
        #expect(FileManager.default.fileExists(atPath: "\(c.path)/b.txt"))
        #expect(f.repo.show("necro/app/c", "a.txt") == "from a\n" && f.repo.show("necro/app/c", "b.txt") == "from b\n")
    }

    @Test func aMergeConflictNamesTheDependencyAndTheFilesAndLeavesTheSlotClean() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        for (task, text) in [("x", "x wrote this\n"), ("y", "y wrote that\n")] {
            let slot = try f.prepare(1, TaskID(task))
            try f.agentCommit(slot, "shared.txt", text)
            _ = f.pool.release(slot, of: f.user(TaskID(task)), succeeded: true)
        }
        let slot = f.slot(2, for: "z")
        let result = f.pool.prepare(
            slot, for: f.user("z"), merging: [DependencyBranch(task: "x", branch: "necro/app/x"), DependencyBranch(task: "y", branch: "necro/app/y")])
        #expect(result == .conflict(dependency: "y", files: ["shared.txt"]))
        #expect(RunnerExit.mergeConflict(dependency: "y", files: ["shared.txt"]).reason == "merge conflict with y (files: shared.txt)")
        #expect(try f.repo.git("status", "--porcelain", in: slot.path).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(slot.path)/.git/MERGE_HEAD"))
    }

    @Test func aReleasedSlotIsCleanDetachedAndReusedWithTheSuccessfulAgentsLeftoversCommitted() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let first = try f.prepare(1, "1")
        try f.write(first, "notes.txt", "left uncommitted\n")
        try f.write(first, "build/junk.o", "ignored build output\n")
        let reports = f.pool.release(first, of: f.user("1"), succeeded: true)
        guard case .workCommitted(let commit, let message) = reports.first else {
            Issue.record("expected the leftovers committed, got \(reports)")
            return
        }
        #expect(message == "necro: task 1 Task 1")
        #expect(reports.last == .released)
        #expect(try f.repo.git("rev-parse", "necro/app/1") == commit)
        #expect(f.repo.show("necro/app/1", "notes.txt") == "left uncommitted\n")
        #expect(f.repo.show("necro/app/1", "build/junk.o") == nil, "ignored files are not committed")
        #expect(try f.repo.git("status", "--porcelain", "--ignored", in: first.path).isEmpty, "nothing left, ignored files included")
        #expect((try? f.repo.git("symbolic-ref", "-q", "HEAD", in: first.path)) == nil, "detached: the branch is free")

        let second = try f.prepare(1, "2")
        #expect(second.path == first.path)
        #expect(!FileManager.default.fileExists(atPath: "\(second.path)/notes.txt"), "task 2 does not depend on 1")
        #expect(try f.repo.git("rev-parse", "--abbrev-ref", "HEAD", in: second.path) == "necro/app/2")
    }

    @Test func aFailedAttemptsWorkIsSavedUnderItsAttemptRefNotOnTheBranch() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let slot = try f.prepare(1, "1")
        try f.agentCommit(slot, "committed.txt", "kept on the branch\n")
        try f.write(slot, "README.md", "# Sample, edited\n")
        try f.write(slot, "new/untracked.txt", "half done\n")
        // Saved before a stop, then again at the end: the same ref, brought up to date.
        let early = f.pool.saveAttempt(slot, of: f.user("1"))
        try f.write(slot, "late.txt", "written after the first save\n")
        let reports = f.pool.release(slot, of: f.user("1"), succeeded: false)
        guard case .attemptSaved(let earlyRef, _) = early, case .attemptSaved(let ref, let commit) = reports.first else {
            Issue.record("expected saved attempts, got \(String(describing: early)) and \(reports)")
            return
        }
        #expect(earlyRef == "refs/necro/attempts/app/1/1" && ref == earlyRef)
        #expect(try f.repo.git("rev-parse", ref) == commit)
        #expect(f.repo.show(ref, "new/untracked.txt") == "half done\n")
        #expect(f.repo.show(ref, "README.md") == "# Sample, edited\n")
        #expect(f.repo.show(ref, "late.txt") == "written after the first save\n")
        #expect(f.repo.show("necro/app/1", "committed.txt") == "kept on the branch\n")
        #expect(f.repo.show("necro/app/1", "new/untracked.txt") == nil)
        #expect(try f.repo.git("rev-parse", "\(ref)^") == f.repo.git("rev-parse", "necro/app/1"), "its parent is the branch")

        // A retry goes on from the branch as it was left; the same attempt number from another
        // runner (an attempt given back) gets a ref of its own.
        let retry = try f.prepare(1, "1", attempt: 1)
        #expect(FileManager.default.fileExists(atPath: "\(retry.path)/committed.txt"))
        #expect(!FileManager.default.fileExists(atPath: "\(retry.path)/new/untracked.txt"))
        try f.write(retry, "again.txt", "x\n")
        let again = f.pool.release(retry, of: f.user("1", runner: "app.1.a1-other"), succeeded: false)
        guard case .attemptSaved(let secondRef, _) = again.first else {
            Issue.record("expected a saved attempt, got \(again)")
            return
        }
        #expect(secondRef == "refs/necro/attempts/app/1/1-2")
        #expect(f.repo.show(ref, "late.txt") != nil, "the first one is kept")
    }

    @Test func anAttemptRefBelongsToItsOwnRunnerEvenWhenOneIdStartsWithTheOther() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        var refs: [String] = []
        for runner in ["app.1.a1-ab", "app.1.a1"] {
            let slot = try f.prepare(1, "1")
            try f.write(slot, "\(runner).txt", "x\n")
            if case .attemptSaved(let ref, _) = f.pool.release(slot, of: f.user("1", runner: runner), succeeded: false).first { refs.append(ref) }
        }
        #expect(refs == ["refs/necro/attempts/app/1/1", "refs/necro/attempts/app/1/1-2"])
        #expect(f.repo.show(refs[0], "app.1.a1-ab.txt") == "x\n", "the first runner's work is kept")
    }

    @Test func openingRefusesWhatCannotWorkWithAClearMessage() throws {
        let dir = try TemporaryDirectory("repopool-open")
        defer { dir.remove() }
        func problem(_ configuration: RepoPoolConfiguration) -> String? {
            do {
                _ = try RepoPool(configuration, slotCount: 2, defaultSlotsDirectory: dir.file("slots"))
                return nil
            } catch {
                return error.message
            }
        }
        #expect(problem(RepoPoolConfiguration(repository: dir.file("missing"))) == "repo_pool.repo: \(dir.file("missing")) does not exist or is not a folder")
        try FileManager.default.createDirectory(atPath: dir.file("plain"), withIntermediateDirectories: true)
        #expect(problem(RepoPoolConfiguration(repository: dir.file("plain")))?.hasSuffix("is not a git repository") == true)
        let repo = try GitRepository(at: dir.file("repo"), files: ["a.txt": "a\n"])
        #expect(problem(RepoPoolConfiguration(repository: repo.path)) == nil)
        #expect(problem(RepoPoolConfiguration(repository: repo.path, baseRef: "no-such-branch"))?.contains("no-such-branch is not a branch") == true)
        try "changed\n".write(toFile: repo.path + "/a.txt", atomically: true, encoding: .utf8)
        let dirty = problem(RepoPoolConfiguration(repository: repo.path))
        #expect(dirty?.contains("has uncommitted changes on main (a.txt)") == true, "\(dirty ?? "accepted")")
        // Untracked files (the registry's own folder, say) are not changes on the branch.
        try repo.git("checkout", "--", "a.txt")
        try "new\n".write(toFile: repo.path + "/untracked.txt", atomically: true, encoding: .utf8)
        #expect(problem(RepoPoolConfiguration(repository: repo.path)) == nil)
    }

    @Test func recoveryCommitsAFinishedTasksLeftoversSavesTheRestAndRemovesHalfMadeSlots() throws {
        let f = try Fixture(slots: 2)
        defer { f.dir.remove() }
        // A dispatcher died with two busy slots: task d finished (recovery found its exit 0), task
        // u did not.
        let done = try f.prepare(1, "d")
        try f.write(done, "d.txt", "finished\n")
        let unfinished = try f.prepare(2, "u")
        try f.write(unfinished, "u.txt", "half\n")
        // It died in the middle of a git command in that slot.
        try "".write(toFile: f.repo.path + "/.git/worktrees/slot-2/index.lock", atomically: true, encoding: .utf8)
        // A worktree it was creating, and a slot beyond max_slots from an earlier configuration.
        try FileManager.default.createDirectory(atPath: f.dir.file("slots/slot-7"), withIntermediateDirectories: true)
        try f.repo.git("worktree", "add", "-q", "--detach", f.dir.file("slots/slot-3"), "main")
        let recovered = f.pool.recover { $0.id == "d" }
        #expect(recovered.map(\.slot) == ["slot-1", "slot-2", "slot-3", "slot-7"])
        #expect(f.repo.show("necro/app/d", "d.txt") == "finished\n")
        #expect(f.repo.show("refs/necro/attempts/app/u/1", "u.txt") == "half\n")
        #expect(f.repo.show("necro/app/u", "u.txt") == nil)
        #expect(!FileManager.default.fileExists(atPath: f.dir.file("slots/slot-7")))
        #expect(!FileManager.default.fileExists(atPath: f.dir.file("slots/slot-3")))
        #expect(try f.repo.worktrees().count == 3, "the main worktree and two slots")
        #expect(try f.repo.git("status", "--porcelain", in: done.path).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: f.dir.file("slots/slot-1.lease")))
        // Both slots serve new tasks.
        try f.prepare(1, "next")
        try f.prepare(2, "other")
    }
}
