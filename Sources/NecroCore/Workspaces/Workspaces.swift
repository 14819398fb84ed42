/// Gives runners their working copies: a git worktree per slot, on the task's branch.
///
/// The dispatcher calls it off its loop, one call at a time; each call does the git work and says
/// what it did, for the task's events.
public protocol Workspaces: Sendable {
    /// The repository's git folder, which its worktrees work in: what a runner in a container
    /// needs mounted beside its worktree for `git` to work.
    var gitDirectory: String { get }
    /// Puts the slot's worktree on the task's branch and merges its dependencies' branches in.
    func prepare(_ slot: TaskSlot, for runner: SlotUser, merging: [DependencyBranch]) -> SlotPreparation
    /// Saves the slot's uncommitted changes under the attempt's ref, if there are any.
    func saveAttempt(_ slot: TaskSlot, of runner: SlotUser) -> SlotReport?
    /// After the runner ended: commits what a successful one left (on the branch) or saves what a
    /// failed one left (under the attempt's ref), then cleans and detaches the worktree.
    func release(_ slot: TaskSlot, of runner: SlotUser, succeeded: Bool) -> [SlotReport]
    /// Renames the branch and attempt refs of renumbered tasks (in the order given; the renames of
    /// one import together, so that tasks may trade ids). Returns the renames carried out.
    func applyRenames(_ renames: [TaskRename]) -> [TaskRename]
}

/// A task renamed by an import, as the registry notes it for the git refs named after tasks.
public struct TaskRename: Hashable, Sendable {
    /// The note's number in the registry.
    public var number: Int64
    public var spec: String
    /// The taskset's version that the import made: the renames of one import go together.
    public var version: Int
    public var from: TaskID
    public var to: TaskID

    public init(number: Int64, spec: String, version: Int, from: TaskID, to: TaskID) {
        self.number = number
        self.spec = spec
        self.version = version
        self.from = from
        self.to = to
    }
}

/// The runner a slot serves.
public struct SlotUser: Hashable, Sendable {
    public var runner: RunnerID
    public var task: TaskKey
    public var attempt: Int
    public var title: String

    public init(runner: RunnerID, task: TaskKey, attempt: Int, title: String) {
        self.runner = runner
        self.task = task
        self.attempt = attempt
        self.title = title
    }
}

public enum SlotPreparation: Hashable, Sendable {
    case ready(SlotReport)
    /// Merging this dependency's branch conflicted in these files; the worktree is clean again.
    case conflict(dependency: TaskID, files: [String])
    case failed(String)
}
