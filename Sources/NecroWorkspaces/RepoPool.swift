import Foundation
public import NecroCore

/// Slots as git worktrees of the user's repository, under one folder: `slot-1`, `slot-2`…
///
/// A slot serves one runner at a time, on that task's branch; when the runner ends, what it left
/// is committed (success) or saved under `refs/necro/attempts/…` (anything else), and the worktree
/// is cleaned and detached for the next task. A lease file beside each busy slot says which
/// runner it serves, so that a dispatcher starting after a crash knows whose work a slot holds.
public final class RepoPool: Workspaces, Sendable {
    /// The repository's top folder.
    public let repository: String
    public var gitDirectory: String { repository + "/.git" }
    /// What new branches start from.
    public let baseRef: String
    public let slotsDirectory: String
    public let slotCount: Int
    public let branchTemplate: BranchTemplate
    /// The specs inside the repository (paths from its top): merging branches that differ in them
    /// only by ticked checkboxes takes the union of the ticks.
    let specFiles: Set<String>
    let git: Git

    /// Opens the pool: checks the repository and creates the slots folder.
    /// - Parameters:
    ///   - defaultSlotsDirectory: where slots go when the configuration does not say.
    ///   - specs: the spec files (absolute paths): their uncommitted changes do not make the base
    ///     dirty (`--update-spec` ticks them), and merges take the union of their ticks.
    public init(
        _ configuration: RepoPoolConfiguration, slotCount: Int, defaultSlotsDirectory: String, specs: Set<String> = []
    ) throws(RepoPoolError) {
        let path = URL(fileURLWithPath: configuration.repository).standardizedFileURL.path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else {
            throw RepoPoolError("repo_pool.repo: \(path) does not exist or is not a folder")
        }
        let probe = Git(path)
        guard let top = try? probe.run(["rev-parse", "--show-toplevel"]) else {
            throw RepoPoolError("repo_pool.repo: \(path) is not a git repository")
        }
        let git = probe.at(top)
        guard git.check(["rev-parse", "--verify", "-q", "HEAD^{commit}"]) else {
            throw RepoPoolError("repo_pool.repo: \(top) has no commit yet: tasks need one to branch from")
        }
        let current = try? git.run(["symbolic-ref", "-q", "--short", "HEAD"])
        let base: String
        if let given = configuration.baseRef {
            guard git.check(["rev-parse", "--verify", "-q", "\(given)^{commit}"]) else {
                throw RepoPoolError("repo_pool.base_ref: \(given) is not a branch, tag or commit of \(top)")
            }
            base = given
        } else {
            guard let current, !current.isEmpty else {
                throw RepoPoolError("repo_pool.base_ref: not set, and \(top) has no current branch (detached HEAD): set base_ref")
            }
            base = current
        }
        // Work not committed on the base branch would be missing from every task's branch.
        if base == current {
            let changes = (try? git.run(["diff", "HEAD", "--name-only"])) ?? ""
            let files = changes.split(separator: "\n").filter { !Self.relative(specs, to: top).contains(String($0)) }
            if !files.isEmpty {
                throw RepoPoolError(
                    "repo_pool.repo: \(top) has uncommitted changes on \(base) (\(files.prefix(5).joined(separator: ", "))\(files.count > 5 ? ", …" : "")): commit or stash them first, so that tasks start from them")
            }
        }
        let slots = URL(fileURLWithPath: configuration.slotsDirectory ?? defaultSlotsDirectory).standardizedFileURL.path
        do {
            try PrivateFiles.makeFolder(slots)
        } catch {
            throw RepoPoolError("repo_pool.slots_dir: cannot create \(slots): \(error.message)")
        }
        self.repository = top
        self.baseRef = base
        self.slotsDirectory = slots
        self.slotCount = slotCount
        self.branchTemplate = configuration.branchTemplate
        self.specFiles = Self.relative(specs, to: top)
        self.git = git
        excludeSlots()
    }

    /// The paths inside `top`, from it.
    private static func relative(_ paths: Set<String>, to top: String) -> Set<String> {
        Set(paths.compactMap { path in
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            return absolute.hasPrefix(top + "/") ? String(absolute.dropFirst(top.count + 1)) : nil
        })
    }

    /// How merging a branch into a worktree went.
    enum MergeOutcome {
        case merged
        case conflict([String])
        case failed(String)
    }

    /// Merges `branch` into the worktree's branch; a conflict (or failure) leaves it as it was.
    /// Conflicts only in spec files, only over checkbox marks, are resolved by taking every tick.
    func merge(_ branch: String, into tree: Git) throws -> MergeOutcome {
        let result = try tree.attempt(["merge", "--no-edit", "-q", branch])
        if result.succeeded { return .merged }
        let conflicted = ((try? tree.run(["diff", "--name-only", "--diff-filter=U"])) ?? "").split(separator: "\n").map(String.init)
        if !conflicted.isEmpty, try resolveTicks(conflicted, in: tree) { return .merged }
        _ = try? tree.attempt(["merge", "--abort"])
        try clean(tree)
        if !conflicted.isEmpty { return .conflict(conflicted) }
        return .failed("merging \(branch): \((result.stderr + result.stdout).trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    /// Agents tick `tasks.md` on their branches: two branches that tick different tasks conflict
    /// over nothing. Resolved, and the merge committed, when that is all there is.
    private func resolveTicks(_ files: [String], in tree: Git) throws -> Bool {
        guard files.allSatisfy(specFiles.contains) else { return false }
        var joined: [(String, [UInt8])] = []
        for file in files {
            let ours = try tree.attempt(["show", ":2:\(file)"])
            let theirs = try tree.attempt(["show", ":3:\(file)"])
            guard ours.succeeded, theirs.succeeded,
                let union = SpecCheckboxes.union(Array(ours.stdout.utf8), Array(theirs.stdout.utf8))
            else { return false }
            joined.append((file, union))
        }
        for (file, bytes) in joined {
            try Data(bytes).write(to: URL(fileURLWithPath: "\(tree.directory)/\(file)"))
            try tree.run(["add", "--", file])
        }
        try tree.run(["commit", "-q", "--no-edit", "--no-verify"])
        return true
    }

    /// The top folder of the git repository that holds `path` (a file or folder), if any.
    public static func repository(containing path: String) -> String? {
        var folder = URL(fileURLWithPath: path).standardizedFileURL
        var isFolder: ObjCBool = false
        if !(FileManager.default.fileExists(atPath: folder.path, isDirectory: &isFolder) && isFolder.boolValue) {
            folder.deleteLastPathComponent()
        }
        return try? Git(folder.path).run(["rev-parse", "--show-toplevel"])
    }

    /// Slots inside the repository's own folder (`.necro/slots` when the registry is in it) are
    /// kept out of git: `/.necro/` goes into `.git/info/exclude`.
    private func excludeSlots() {
        let top = repository.hasSuffix("/") ? repository : repository + "/"
        guard slotsDirectory.hasPrefix(top), let first = slotsDirectory.dropFirst(top.count).split(separator: "/").first else { return }
        let line = "/\(first)/"
        guard let relative = try? git.run(["rev-parse", "--git-path", "info/exclude"]) else { return }
        let file = relative.hasPrefix("/") ? relative : "\(repository)/\(relative)"
        let existing = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        guard !existing.split(separator: "\n").contains(Substring(line)) else { return }
        try? FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let text = existing + (existing.isEmpty || existing.hasSuffix("\n") ? "" : "\n") + "# necro's registry, logs and slots\n\(line)\n"
        try? text.write(toFile: file, atomically: true, encoding: .utf8)
    }

    /// What `assemble` made of the result branch.
    public enum Assembly: Hashable, Sendable {
        /// Every task's branch is merged in.
        case assembled(merged: [TaskID], commit: String)
        /// Merging `task` conflicted in `files`: the branch holds what was merged before it.
        case conflict(merged: [TaskID], task: TaskID, files: [String])
        case failed(String)
    }

    /// Builds `branch` anew from the base, in a worktree of its own for the time it takes: the
    /// branches of `tasks` merged into it one by one, in the order given (dependencies first). A
    /// conflict stops it, reported, never forced.
    public func assemble(_ branch: String, from tasks: [DependencyBranch]) -> Assembly {
        let path = "\(slotsDirectory)/result"
        do {
            try ensureWorktree(path)
            let tree = git.at(path)
            defer { _ = try? git.attempt(["worktree", "remove", "--force", path]) }  // a worktree only while it is made
            try tree.run(["checkout", "-q", "-B", branch, baseRef])
            var merged: [TaskID] = []
            for task in tasks where tree.check(["rev-parse", "--verify", "-q", "refs/heads/\(task.branch)"]) {
                switch try merge(task.branch, into: tree) {
                case .merged: merged.append(task.task)
                case .conflict(let files): return .conflict(merged: merged, task: task.task, files: files)
                case .failed(let reason): return .failed(reason)
                }
            }
            return .assembled(merged: merged, commit: try tree.run(["rev-parse", "--short", "HEAD"]))
        } catch {
            return .failed("\(error)")
        }
    }

    /// The path of slot `id`; nil if `id` is not a slot id (so no name can lead outside the folder).
    public func path(of id: String) -> String? {
        TaskSlot.number(of: id).map { "\(slotsDirectory)/\(TaskSlot.id($0))" }
    }

    // MARK: Workspaces

    public func prepare(_ slot: TaskSlot, for user: SlotUser, merging dependencies: [DependencyBranch]) -> SlotPreparation {
        guard let path = path(of: slot.id), path == slot.path else { return .failed("slot \(slot.id) is not in \(slotsDirectory)") }
        do {
            try writeLease(Lease(user), slot: slot.id)
            try ensureWorktree(path)
            let tree = git.at(path)
            let exists = tree.check(["rev-parse", "--verify", "-q", "refs/heads/\(slot.branch)"])
            if exists {
                try tree.run(["checkout", "-q", slot.branch])  // a retry goes on from where its branch was left
            } else {
                try tree.run(["checkout", "-q", "-b", slot.branch, baseRef])
            }
            var merged: [TaskID] = []
            for dependency in dependencies where tree.check(["rev-parse", "--verify", "-q", "refs/heads/\(dependency.branch)"]) {
                switch try merge(dependency.branch, into: tree) {
                case .merged:
                    merged.append(dependency.task)
                case .conflict(let files):
                    try removeLease(slot.id)
                    return .conflict(dependency: dependency.task, files: files)
                case .failed(let reason):
                    try removeLease(slot.id)
                    return .failed(reason)
                }
            }
            let head = try tree.run(["rev-parse", "HEAD"])
            return .ready(.prepared(created: !exists, merged: merged, head: head))
        } catch {
            if let tree = worktree(at: path) { try? clean(tree) }
            try? removeLease(slot.id)
            return .failed("\(error)")
        }
    }

    public func saveAttempt(_ slot: TaskSlot, of user: SlotUser) -> SlotReport? {
        guard let path = path(of: slot.id), let tree = worktree(at: path) else { return nil }
        return try? snapshot(tree, user)
    }

    public func release(_ slot: TaskSlot, of user: SlotUser, succeeded: Bool) -> [SlotReport] {
        guard let path = path(of: slot.id), let tree = worktree(at: path) else { return [] }
        var reports: [SlotReport] = []
        do {
            if succeeded {
                if let committed = try commitLeftovers(tree, user) { reports.append(committed) }
            } else if let saved = try snapshot(tree, user) {
                reports.append(saved)
            }
            try clean(tree)
            try removeLease(slot.id)
            reports.append(.released)
        } catch {
            reports.append(.allocationFailed("releasing \(slot.id): \(error)"))
        }
        return reports
    }

    // MARK: Git work

    /// Creates the slot's worktree if it does not exist yet (or is not a worktree any more).
    private func ensureWorktree(_ path: String) throws {
        if worktree(at: path) != nil { return }
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
        _ = try? git.attempt(["worktree", "prune"])
        try git.run(["worktree", "add", "-q", "--detach", path, baseRef])
    }

    /// Commits everything the agent left on the task's branch.
    private func commitLeftovers(_ tree: Git, _ user: SlotUser) throws -> SlotReport? {
        guard try !tree.run(["status", "--porcelain", "--untracked-files=all"]).isEmpty else { return nil }
        guard (try? tree.run(["symbolic-ref", "-q", "HEAD"])) != nil else {
            return try snapshot(tree, user)  // not on a branch any more: keep it off the branch
        }
        try tree.run(["add", "-A"])
        let message = "necro: task \(user.task.id) \(user.title)"
        try tree.run(["commit", "-q", "--no-verify", "-m", message])
        return .workCommitted(commit: try tree.run(["rev-parse", "HEAD"]), message: message)
    }

    /// Saves uncommitted changes, untracked files included, as a commit off the branch, without
    /// touching the worktree's index or files.
    private func snapshot(_ tree: Git, _ user: SlotUser) throws -> SlotReport? {
        guard try !tree.run(["status", "--porcelain", "--untracked-files=all"]).isEmpty else { return nil }
        let index = try tree.run(["rev-parse", "--git-path", "index"])
        let indexPath = index.hasPrefix("/") ? index : "\(tree.directory)/\(index)"
        let scratch = indexPath + ".necro-snapshot"
        try? FileManager.default.removeItem(atPath: scratch)
        if FileManager.default.fileExists(atPath: indexPath) { try FileManager.default.copyItem(atPath: indexPath, toPath: scratch) }
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let environment = ["GIT_INDEX_FILE": scratch]
        try tree.run(["add", "-A"], environment: environment)
        let treeID = try tree.run(["write-tree"], environment: environment)
        let marker = "runner \(user.runner)"
        let commit = try tree.run([
            "commit-tree", treeID, "-p", "HEAD", "-m",
            "necro: uncommitted work of task \(user.task.id), attempt \(user.attempt)\n\n\(marker)",
        ])
        let ref = try attemptRef(user, marker: marker)
        try tree.run(["update-ref", ref, commit])
        return .attemptSaved(ref: ref, commit: commit)
    }

    /// `refs/necro/attempts/<spec>/<task>/<attempt>`, or with `-2`, `-3`… when that attempt
    /// number was used by an earlier runner (an attempt given back after a shutdown comes again).
    private func attemptRef(_ user: SlotUser, marker: String) throws -> String {
        let stem = "refs/necro/attempts/\(RefName.component(user.task.spec))/\(RefName.component(user.task.id.rawValue))/\(user.attempt)"
        var candidate = stem
        var number = 1
        while let message = try? git.run(["log", "-1", "--format=%B", candidate]),
            !message.split(separator: "\n").contains(Substring(marker))
        {
            number += 1
            candidate = "\(stem)-\(number)"
        }
        return candidate
    }

    /// Back to a clean, detached worktree: nothing of the last task left.
    func clean(_ tree: Git) throws {
        try tree.run(["reset", "-q", "--hard"])
        try tree.run(["clean", "-q", "-ffdx"])
        try tree.run(["checkout", "-q", "--detach"])
    }

    // MARK: Leases

    struct Lease: Codable {
        var runner: String
        var spec: String
        var task: String
        var attempt: Int
        var title: String

        init(_ user: SlotUser) {
            runner = user.runner.rawValue
            spec = user.task.spec
            task = user.task.id.rawValue
            attempt = user.attempt
            title = user.title
        }

        var user: SlotUser {
            SlotUser(runner: RunnerID(runner), task: TaskKey(spec: spec, id: TaskID(task)), attempt: attempt, title: title)
        }
    }

    func leasePath(_ id: String) -> String { "\(slotsDirectory)/\(id).lease" }

    private func writeLease(_ lease: Lease, slot id: String) throws {
        try JSONEncoder().encode(lease).write(to: URL(fileURLWithPath: leasePath(id)), options: .atomic)
    }

    private func removeLease(_ id: String) throws {
        if FileManager.default.fileExists(atPath: leasePath(id)) { try FileManager.default.removeItem(atPath: leasePath(id)) }
    }

    func readLease(_ id: String) -> Lease? {
        guard let data = FileManager.default.contents(atPath: leasePath(id)) else { return nil }
        return try? JSONDecoder().decode(Lease.self, from: data)
    }
}

public struct RepoPoolError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
