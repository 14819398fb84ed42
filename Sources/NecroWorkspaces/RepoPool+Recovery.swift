import Foundation
public import NecroCore

extension RepoPool {
    /// What startup found in a slot a crashed dispatcher left behind, and did with it.
    public struct RecoveredSlot: Hashable, Sendable {
        public var slot: String
        /// The runner it served, if it was busy.
        public var user: SlotUser?
        public var reports: [SlotReport]
        /// What was done, for people.
        public var note: String
    }

    /// Puts the slots folder in order after a dispatcher that stopped without releasing its slots
    /// (a crash, kill -9): run once no runner of the old dispatcher is left. A busy slot's leftovers
    /// are committed on the task's branch if the task is done (it finished while no dispatcher
    /// watched), else saved under the attempt's ref; then the worktree is cleaned and detached.
    /// Half-created worktrees and slots beyond `slotCount` are removed. The slots of runners in
    /// `keeping` (adopted: still running) are left as they are.
    public func recover(keeping: Set<RunnerID> = [], isDone: (TaskKey) -> Bool) -> [RecoveredSlot] {
        _ = try? git.attempt(["worktree", "prune"])
        let names = (try? FileManager.default.contentsOfDirectory(atPath: slotsDirectory)) ?? []
        var recovered: [RecoveredSlot] = []
        for name in names.sorted() {
            let path = "\(slotsDirectory)/\(name)"
            if name.hasSuffix(".lease") {
                let id = String(name.dropLast(6))
                if TaskSlot.number(of: id) != nil && !FileManager.default.fileExists(atPath: "\(slotsDirectory)/\(id)") {
                    try? FileManager.default.removeItem(atPath: path)
                }
                continue
            }
            guard let number = TaskSlot.number(of: name) else { continue }  // not ours: left alone
            if let lease = readLease(name), keeping.contains(lease.user.runner) { continue }
            guard let tree = worktree(at: path) else {
                try? FileManager.default.removeItem(atPath: path)
                try? FileManager.default.removeItem(atPath: leasePath(name))
                recovered.append(RecoveredSlot(slot: name, user: nil, reports: [], note: "removed a worktree that was never finished"))
                continue
            }
            // A git command the dead dispatcher was running left its lock: no git works here until
            // it is gone, and no process of that dispatcher is left to hold it.
            if let lock = try? tree.run(["rev-parse", "--git-path", "index.lock"]) {
                try? FileManager.default.removeItem(atPath: lock.hasPrefix("/") ? lock : "\(path)/\(lock)")
            }
            var reports: [SlotReport] = []
            var user: SlotUser?
            if let lease = readLease(name) {
                user = lease.user
                let slot = TaskSlot(id: name, path: path, branch: branchTemplate.render(spec: lease.spec, task: TaskID(lease.task)))
                reports = release(slot, of: lease.user, succeeded: isDone(lease.user.task))
            } else {
                try? clean(tree)  // free, but a release may have been cut short
            }
            var note = user.map { "cleaned after runner \($0.runner)" } ?? "cleaned"
            if number > slotCount {
                _ = try? git.attempt(["worktree", "remove", "--force", path])
                note = "removed: beyond max_slots (\(slotCount))"
            }
            if user != nil || number > slotCount {
                recovered.append(RecoveredSlot(slot: name, user: user, reports: reports, note: note))
            }
        }
        return recovered
    }

    /// The worktree at `path`, if it is one of this repository's.
    func worktree(at path: String) -> Git? {
        guard FileManager.default.fileExists(atPath: "\(path)/.git") else { return nil }
        let tree = git.at(path)
        guard let top = try? tree.run(["rev-parse", "--show-toplevel"]),
            URL(fileURLWithPath: top).resolvingSymlinksInPath().path == URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        else { return nil }
        return tree
    }

    /// A task's branch as the run left it.
    public struct TaskBranch: Hashable, Sendable {
        public var task: TaskID
        public var branch: String
        public var commit: String
        public var subject: String
        /// Commits on it that the base does not have.
        public var ahead: Int?
    }

    /// The branches of these tasks that exist, in the tasks' order.
    public func branches(spec: String, tasks: [TaskID]) -> [TaskBranch] {
        let listing = (try? git.run(["for-each-ref", "--format=%(refname:short)%09%(objectname:short)%09%(subject)", "refs/heads/"])) ?? ""
        var heads: [String: (String, String)] = [:]
        for line in listing.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            heads[String(parts[0])] = (String(parts[1]), String(parts[2]))
        }
        let found = tasks.compactMap { task -> TaskBranch? in
            let branch = branchTemplate.render(spec: spec, task: task)
            guard let (commit, subject) = heads[branch] else { return nil }
            return TaskBranch(task: task, branch: branch, commit: commit, subject: subject, ahead: nil)
        }
        // Counting is one git call per branch: only for summaries a person reads.
        guard found.count <= 200 else { return found }
        return found.map { branch in
            var branch = branch
            branch.ahead = (try? git.run(["rev-list", "--count", "\(baseRef)..\(branch.branch)"])).flatMap { Int($0) }
            return branch
        }
    }

    /// Moves the branch and the attempt refs of each renamed task to its new id, the renames of
    /// one import in two steps (through `refs/necro/renaming/…`) so that tasks may trade ids.
    public func applyRenames(_ renames: [TaskRename]) -> [TaskRename] {
        var applied: [TaskRename] = []
        var start = 0
        while start < renames.count {
            var end = start + 1
            while end < renames.count, renames[end].spec == renames[start].spec, renames[end].version == renames[start].version { end += 1 }
            let batch = Array(renames[start..<end])
            start = end
            var moves: [(from: String, to: String, commit: String)] = []
            for rename in batch {
                let branch = "refs/heads/" + branchTemplate.render(spec: rename.spec, task: rename.from)
                if let commit = try? git.run(["rev-parse", "--verify", "-q", branch]) {
                    moves.append((branch, "refs/heads/" + branchTemplate.render(spec: rename.spec, task: rename.to), commit))
                }
                let spec = RefName.component(rename.spec)
                let prefix = "refs/necro/attempts/\(spec)/\(RefName.component(rename.from.rawValue))/"
                let listing = (try? git.run(["for-each-ref", "--format=%(refname) %(objectname)", prefix])) ?? ""
                for line in listing.split(separator: "\n") {
                    let parts = line.split(separator: " ")
                    guard parts.count == 2 else { continue }
                    let suffix = parts[0].dropFirst(prefix.count)
                    moves.append((String(parts[0]), "refs/necro/attempts/\(spec)/\(RefName.component(rename.to.rawValue))/\(suffix)", String(parts[1])))
                }
            }
            do {
                for (k, move) in moves.enumerated() {
                    try git.run(["update-ref", "refs/necro/renaming/\(k)", move.commit])
                    try git.run(["update-ref", "-d", move.from])
                }
                for (k, move) in moves.enumerated() {
                    try git.run(["update-ref", move.to, move.commit])
                    try git.run(["update-ref", "-d", "refs/necro/renaming/\(k)"])
                }
                applied += batch
            } catch {
                break  // left for the next start; what moved stays under refs/necro/renaming/
            }
        }
        return applied
    }
}
