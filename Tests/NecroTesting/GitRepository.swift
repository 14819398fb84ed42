import Foundation

/// A real git repository in a test's folder.
public struct GitRepository: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public let path: String

    /// Creates a repository on branch `main` with `files` in one commit.
    public init(at path: String, files: [String: String] = ["README.md": "# Sample\n"]) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try git("init", "-q", "-b", "main")
        try commit(files, message: "Initial commit")
    }

    /// A repository that exists already.
    public init(existing path: String) { self.path = path }

    /// Runs git in `directory` (the repository by default) and returns its trimmed output; throws
    /// if git fails.
    @discardableResult
    public func git(_ arguments: String..., in directory: String? = nil) throws -> String {
        let result = try runGit(arguments, in: directory)
        guard result.status == 0 else {
            throw Failure(description: "git \(arguments.joined(separator: " ")): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs git and returns its result whatever its status.
    public func runGit(_ arguments: [String], in directory: String? = nil) throws -> CommandResult {
        try runProcess(
            "/usr/bin/git", ["-c", "user.name=Test", "-c", "user.email=test@example.com"] + arguments, in: directory ?? path)
    }

    /// Writes files and commits them on the current branch.
    public func commit(_ files: [String: String], message: String) throws {
        for (name, text) in files {
            let target = "\(path)/\(name)"
            try FileManager.default.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: target, atomically: true, encoding: .utf8)
        }
        try git("add", "-A")
        try git("commit", "-q", "-m", message)
    }

    /// Whether `ref` names a commit.
    public func exists(_ ref: String) -> Bool {
        (try? runGit(["rev-parse", "--verify", "-q", "\(ref)^{commit}"]).status) == 0
    }

    /// The text of `file` at `ref`, or nil.
    public func show(_ ref: String, _ file: String) -> String? {
        guard let result = try? runGit(["show", "\(ref):\(file)"]), result.status == 0 else { return nil }
        return result.stdout
    }

    /// The worktrees git knows, the main one included.
    public func worktrees() throws -> [String] {
        try git("worktree", "list", "--porcelain").split(separator: "\n").filter { $0.hasPrefix("worktree ") }
            .map { String($0.dropFirst(9)) }
    }
}
