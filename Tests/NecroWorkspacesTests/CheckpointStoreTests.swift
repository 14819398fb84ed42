import Foundation
import NecroTesting
import NecroWorkspaces
import Testing

/// Checkpoints on real git: in a worktree's repository, and in the private repository of a plain
/// folder.
@Suite struct CheckpointStoreTests {
    @Test(arguments: [true, false])
    func aCheckpointKeepsTrackedAndUntrackedFilesReadsBackAndIsRestoredIgnoredFilesLeftAlone(_ inRepository: Bool) throws {
        let dir = try TemporaryDirectory("checkpoints")
        defer { dir.remove() }
        let folder = dir.file("work")
        if inRepository {
            let repository = try GitRepository(at: folder, files: ["README.md": "# r\n", ".gitignore": "build/\n"])
            try repository.git("checkout", "-q", "-b", "necro/s/1")
        } else {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        let store = try CheckpointStore(folder: folder, spec: "s", task: "1")
        #expect(store.inRepository == inRepository)
        let headBefore = inRepository ? try GitRepository(existing: folder).git("rev-parse", "HEAD") : ""
        try "one\n".write(toFile: folder + "/a.txt", atomically: true, encoding: .utf8)
        if inRepository { try "edited\n".write(toFile: folder + "/README.md", atomically: true, encoding: .utf8) }
        let first = try store.take(message: "step 1")
        #expect(first.sequence == 1 && first.ref == "refs/necro/checkpoints/s/1/1")
        #expect(first.filesChanged.sorted() == (inRepository ? ["README.md", "a.txt"] : ["a.txt"]))
        #expect(store.verify(ref: first.ref, commit: first.commit, tree: first.tree) == .verified)
        try "two\n".write(toFile: folder + "/b.txt", atomically: true, encoding: .utf8)
        let second = try store.take(message: "step 2", after: first)
        #expect(second.sequence == 2 && second.filesChanged == ["b.txt"])
        #expect(store.sequenceNumbers() == [1, 2])
        if inRepository {
            // The branch, its index and its files are untouched.
            let repository = GitRepository(existing: folder)
            #expect(try repository.git("rev-parse", "HEAD") == headBefore)
            #expect(try repository.runGit(["status", "--porcelain"]).stdout.split(separator: "\n").sorted() == [" M README.md", "?? a.txt", "?? b.txt"])
        }
        // Later work, and an ignored build folder; then back to checkpoint 1.
        try "three\n".write(toFile: folder + "/c.txt", atomically: true, encoding: .utf8)
        try "changed\n".write(toFile: folder + "/a.txt", atomically: true, encoding: .utf8)
        if inRepository {
            try FileManager.default.createDirectory(atPath: folder + "/build", withIntermediateDirectories: true)
            try "cache\n".write(toFile: folder + "/build/cache", atomically: true, encoding: .utf8)
        }
        try store.restore(commit: first.commit)
        #expect(try String(contentsOfFile: folder + "/a.txt", encoding: .utf8) == "one\n")
        #expect(!FileManager.default.fileExists(atPath: folder + "/b.txt") && !FileManager.default.fileExists(atPath: folder + "/c.txt"))
        if inRepository {
            #expect(try String(contentsOfFile: folder + "/README.md", encoding: .utf8) == "edited\n")
            #expect(FileManager.default.fileExists(atPath: folder + "/build/cache"), "ignored files are left alone")
        } else {
            #expect(FileManager.default.fileExists(atPath: folder + "/.necro/checkpoints.git/HEAD"), "necro's own repository is kept")
        }
    }

    @Test func aCheckpointWhoseRefNamesAnotherCommitOrIsGoneIsInvalid() throws {
        let dir = try TemporaryDirectory("checkpoints-invalid")
        defer { dir.remove() }
        let repository = try GitRepository(at: dir.file("work"))
        let store = try CheckpointStore(folder: repository.path, spec: "s", task: "1")
        try "x\n".write(toFile: repository.path + "/x.txt", atomically: true, encoding: .utf8)
        let taken = try store.take(message: "one")
        try repository.git("update-ref", taken.ref, "HEAD")
        guard case .invalid(let why) = store.verify(ref: taken.ref, commit: taken.commit, tree: taken.tree) else {
            Issue.record("a moved ref verified")
            return
        }
        #expect(why.contains("not the checkpoint's commit"))
        #expect(store.verify(ref: taken.ref, commit: taken.commit, tree: "0000") != .verified)
        try repository.git("update-ref", "-d", taken.ref)
        #expect(store.verify(ref: taken.ref, commit: taken.commit, tree: taken.tree) == .invalid("\(taken.ref) does not exist"))
    }

    @Test func aRestoreRemovesNoFolderNothingThroughALinkAndNothingIfTheCommitCannotBeRead() throws {
        let dir = try TemporaryDirectory("checkpoints-restore")
        defer { dir.remove() }
        let repository = try GitRepository(at: dir.file("work"), files: ["README.md": "# r\n", "lib/a.txt": "a\n"])
        let store = try CheckpointStore(folder: repository.path, spec: "s", task: "1")
        let taken = try store.take(message: "one")
        // Since: a nested repository, and lib replaced by a link to a folder outside.
        _ = try GitRepository(at: repository.path + "/nested", files: ["inner.txt": "inner\n"])
        try FileManager.default.createDirectory(atPath: dir.file("outside"), withIntermediateDirectories: true)
        try "keep\n".write(toFile: dir.file("outside/a.txt"), atomically: true, encoding: .utf8)
        try "keep\n".write(toFile: dir.file("outside/b.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: repository.path + "/lib")
        try FileManager.default.createSymbolicLink(atPath: repository.path + "/lib", withDestinationPath: dir.file("outside"))
        #expect(throws: (any Error).self) { try store.restore(commit: String(repeating: "0", count: 40)) }
        #expect(FileManager.default.fileExists(atPath: repository.path + "/nested/inner.txt"), "an unreadable commit changes nothing")
        try store.restore(commit: taken.commit)
        #expect(FileManager.default.fileExists(atPath: repository.path + "/nested/.git"), "a repository inside is left alone")
        #expect(FileManager.default.fileExists(atPath: dir.file("outside/a.txt")) && FileManager.default.fileExists(atPath: dir.file("outside/b.txt")),
            "nothing outside the folder is removed")
    }
}
