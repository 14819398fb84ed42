import Foundation
import NecroCore

/// A task's checkpoints: commits of its folder's whole state (tracked and untracked files, not
/// ignored ones) under `refs/necro/checkpoints/<spec>/<task>/<n>`, off the task's branch, its
/// index and files untouched. In a worktree they go into its repository; in a plain folder, into a
/// private repository necro keeps inside it (`.necro/checkpoints.git`, kept out of its own
/// snapshots), since a container sees only that folder.
public struct CheckpointStore: Sendable {
    /// A checkpoint as taken, or as found again.
    public struct Checkpoint: Hashable, Sendable {
        public var sequence: Int
        public var ref: String
        public var commit: String
        public var tree: String
        /// Files that differ from the checkpoint before it (or from the branch's head).
        public var filesChanged: [String]

        public init(sequence: Int, ref: String, commit: String, tree: String, filesChanged: [String]) {
            self.sequence = sequence
            self.ref = ref
            self.commit = commit
            self.tree = tree
            self.filesChanged = filesChanged
        }
    }

    public enum Verification: Hashable, Sendable {
        case verified
        /// Why it cannot be read back as recorded.
        case invalid(String)
    }

    public let folder: String
    private let git: Git
    /// Whether the folder is a repository's worktree (else the private repository is used).
    public let inRepository: Bool
    private let prefix: String
    /// The git folder of this worktree, where the scratch index and the runner's own files go.
    public let stateDirectory: String
    /// The worktree's own index: copied into the scratch one, so that unchanged files are not read.
    private let index: String?

    /// Opens the store of `task` of `spec` for `folder`; creates the private repository if the
    /// folder is in none.
    public init(folder: String, spec: String, task: String) throws {
        self.folder = folder
        prefix = "refs/necro/checkpoints/\(RefName.component(spec))/\(RefName.component(task))"
        let plain = Git(folder)
        let found = (try? plain.run(["rev-parse", "--show-toplevel", "--absolute-git-dir"]))?.split(separator: "\n").map(String.init) ?? []
        if found.count == 2, Self.samePath(found[0], folder) {
            inRepository = true
            git = plain
            stateDirectory = found[1] + "/necro"
            index = found[1] + "/index"
        } else {
            inRepository = false
            let repository = folder + "/.necro/checkpoints.git"
            stateDirectory = folder + "/.necro"
            if !FileManager.default.fileExists(atPath: repository + "/HEAD") {
                try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                try Git(stateDirectory).run(["init", "-q", "--bare", repository])
                try Data("/.necro/\n".utf8).write(to: URL(fileURLWithPath: repository + "/info/exclude"))
            }
            git = plain
            index = nil
        }
        // Yours alone, as the registry's folder is: the spool in it holds what gates printed.
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    private static func samePath(_ a: String, _ b: String) -> Bool {
        realPath(a) == realPath(b)
    }

    /// The path with every link resolved (itself if it cannot be).
    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Git's environment here: the private repository's folders when there is one; with
    /// `scratch`, the scratch index too (the worktree's own is never touched).
    private func environment(scratch: Bool) -> [String: String] {
        var environment = inRepository ? [:] : ["GIT_DIR": folder + "/.necro/checkpoints.git", "GIT_WORK_TREE": folder]
        if scratch { environment["GIT_INDEX_FILE"] = stateDirectory + "/checkpoint.index" }
        return environment
    }

    @discardableResult
    private func run(_ arguments: [String], scratch: Bool = false) throws -> String {
        try git.run(arguments, environment: environment(scratch: scratch))
    }

    /// The paths a `-z` listing gives, untrimmed (a path may begin or end with a space).
    private func paths(_ arguments: [String]) throws -> [String] {
        let result = try git.attempt(arguments, environment: environment(scratch: false))
        guard result.succeeded else { throw Git.Failure(command: arguments, status: result.status, output: result.stderr) }
        return result.stdout.split(separator: "\0").map(String.init)
    }

    /// The task's checkpoints as refs, by sequence number.
    public func sequenceNumbers() -> [Int] {
        let listed = (try? run(["for-each-ref", "--format=%(refname)", prefix + "/"])) ?? ""
        return listed.split(separator: "\n").compactMap { Int($0.split(separator: "/").last ?? "") }.sorted()
    }

    /// Takes a checkpoint of the folder as it is now: the next sequence number, its parent the
    /// last one taken (or the branch's head).
    public func take(message: String, after previous: Checkpoint? = nil) throws -> Checkpoint {
        let sequence = (sequenceNumbers().last ?? 0) + 1
        let scratchIndex = stateDirectory + "/checkpoint.index"
        try? FileManager.default.removeItem(atPath: scratchIndex)
        let head = try? run(["rev-parse", "--verify", "-q", "HEAD^{commit}"])
        if let index, FileManager.default.fileExists(atPath: index) {
            try FileManager.default.copyItem(atPath: index, toPath: scratchIndex)
        }
        try run(["add", "-A", "--", "."], scratch: true)
        let tree = try run(["write-tree"], scratch: true)
        var arguments = ["commit-tree", tree, "-m", message]
        if let parent = previous?.commit ?? head { arguments += ["-p", parent] }
        let commit = try run(arguments)
        let ref = "\(prefix)/\(sequence)"
        try run(["update-ref", ref, commit])
        let base = previous?.tree ?? head.map { "\($0)^{tree}" }
        var changed: [String] = []
        if let base {
            changed = (try? run(["diff-tree", "-r", "--name-only", "--no-commit-id", base, tree]))?.split(separator: "\n").map(String.init) ?? []
        } else {
            changed = (try? run(["ls-tree", "-r", "--name-only", tree]))?.split(separator: "\n").map(String.init) ?? []
        }
        return Checkpoint(sequence: sequence, ref: ref, commit: commit, tree: tree, filesChanged: changed)
    }

    /// Reads a checkpoint back: its ref names the commit recorded, whose tree is the one recorded.
    public func verify(ref: String, commit: String, tree: String) -> Verification {
        guard let found = try? run(["rev-parse", "\(ref)^{commit}", "\(ref)^{tree}"]).split(separator: "\n").map(String.init),
            found.count == 2
        else {
            return .invalid("\(ref) does not exist")
        }
        guard found[0] == commit else { return .invalid("\(ref) names \(found[0].prefix(12)), not the checkpoint's commit \(commit.prefix(12))") }
        guard found[1] == tree else { return .invalid("the tree of \(commit.prefix(12)) is not the checkpoint's tree \(tree.prefix(12))") }
        // Every tree under it is there (listing it reads them all).
        guard (try? run(["ls-tree", "-r", "--name-only", tree])) != nil else { return .invalid("the tree \(tree.prefix(12)) cannot be read") }
        return .verified
    }

    /// Puts the folder's files back as they were at `commit`: those not in it are removed, the
    /// others written; ignored files are left alone, the index is untouched. The commit is read
    /// first: one that cannot be read changes nothing. Only files are removed, never a folder (an
    /// untracked repository inside is left as it is), and nothing through a symbolic link.
    public func restore(commit: String) throws {
        let wanted = Set(try paths(["ls-tree", "-r", "-z", "--name-only", commit]))
        try? FileManager.default.removeItem(atPath: stateDirectory + "/checkpoint.index")
        try run(["read-tree", commit], scratch: true)
        let top = Self.realPath(folder)
        for path in try paths(["ls-files", "-z", "-co", "--exclude-standard"]) where !wanted.contains(path) && !path.hasSuffix("/") {
            let parent = Self.realPath(((folder + "/" + path) as NSString).deletingLastPathComponent)
            guard parent == top || parent.hasPrefix(top + "/") else { continue }
            unlink(folder + "/" + path)  // a file or a link, never what a link points to
        }
        try run(["checkout-index", "-a", "-f"], scratch: true)
    }
}
