/// Where tasks get their git worktrees: the `repo_pool:` section of the configuration.
public struct RepoPoolConfiguration: Hashable, Sendable {
    /// The user's repository: a local git repository.
    public var repository: String
    /// What new task branches start from; nil for the repository's current branch.
    public var baseRef: String?
    /// Where slots (worktrees) live; nil for `slots` beside the registry file.
    public var slotsDirectory: String?
    /// How many worktrees may exist; nil for the global concurrency.
    public var maxSlots: Int?
    public var branchTemplate: BranchTemplate

    public init(
        repository: String, baseRef: String? = nil, slotsDirectory: String? = nil, maxSlots: Int? = nil,
        branchTemplate: BranchTemplate = .standard
    ) {
        self.repository = repository
        self.baseRef = baseRef
        self.slotsDirectory = slotsDirectory
        self.maxSlots = maxSlots
        self.branchTemplate = branchTemplate
    }

    /// The tasks of `spec` whose branch git would refuse, each with why.
    public func branchProblems(in spec: TaskSetSpec) -> [String] {
        var owners: [String: TaskID] = [:]
        var problems: [String] = []
        for task in spec.tasks where !task.isGroup {
            let branch = branchTemplate.render(spec: spec.name, task: task.id)
            if let problem = RefName.problem(branch) {
                problems.append("task \(task.id) would get branch \(branch), which git refuses: \(problem)")
            } else {
                owners[branch] = task.id
            }
        }
        // Refs are files: `x` and `x/y` cannot both be branches.
        for (branch, task) in owners.sorted(by: { $0.key < $1.key }) {
            var prefix = Substring(branch)
            while let slash = prefix.lastIndex(of: "/") {
                prefix = prefix[..<slash]
                if let other = owners[String(prefix)] {
                    problems.append(
                        "tasks \(other) and \(task) would get branches \(prefix) and \(branch), which git cannot hold together (one is a folder of the other)")
                }
            }
        }
        return problems
    }
}

/// The name of a task's branch, such as `necro/{spec}/{task.id}`.
public struct BranchTemplate: Hashable, Sendable, CustomStringConvertible {
    public static let placeholders: Set<String> = ["spec", "task.id"]
    public static let standard = BranchTemplate(unchecked: "necro/{spec}/{task.id}")

    public let text: String

    private init(unchecked text: String) { self.text = text }

    /// A template, or why it cannot name one branch per task.
    public static func parse(_ text: String) -> Result<BranchTemplate, BranchTemplateError> {
        let names = CommandTemplate([text]).placeholderNames
        if let unknown = names.first(where: { !placeholders.contains($0) }) {
            return .failure(BranchTemplateError("unknown placeholder {\(unknown)} (known: {spec}, {task.id})"))
        }
        guard names.contains("task.id") else {
            return .failure(BranchTemplateError("must contain {task.id}, or every task would share one branch"))
        }
        // The fixed parts must make a valid name whatever the values: try plain ones.
        let sample = BranchTemplate(unchecked: text).render(spec: "spec", task: TaskID("1"))
        if let problem = RefName.problem(sample) {
            return .failure(BranchTemplateError("gives branch names such as \(sample), which git refuses: \(problem)"))
        }
        return .success(BranchTemplate(unchecked: text))
    }

    public func render(spec: String, task: TaskID) -> String {
        CommandTemplate([text]).render(["spec": spec, "task.id": task.rawValue])[0]
    }

    public var description: String { text }
}

public struct BranchTemplateError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Git's rules for reference names (`git check-ref-format --branch`), checked without git.
public enum RefName {
    /// Why git would refuse `name` as a branch name, or nil if it would take it.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "it is empty" }
        if name == "@" { return "it is @" }
        if name.hasPrefix("-") { return "it starts with -" }
        if name.hasPrefix("/") || name.hasSuffix("/") { return "it starts or ends with /" }
        if name.hasSuffix(".") { return "it ends with ." }
        if name.contains("..") { return "it contains .." }
        if name.contains("//") { return "it contains //" }
        if name.contains("@{") { return "it contains @{" }
        for scalar in name.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f { return "it contains a control character" }
            if " ~^:?*[\\".unicodeScalars.contains(scalar) { return "it contains '\(scalar)'" }
        }
        for component in name.split(separator: "/") {
            if component.hasPrefix(".") { return "a part starts with ." }
            if component.hasSuffix(".lock") { return "a part ends with .lock" }
        }
        return nil
    }

    /// `text` made into one valid ref component: characters git refuses become `-`.
    public static func component(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            let bad = scalar.value < 0x20 || scalar.value == 0x7f || " ~^:?*[\\/@{".unicodeScalars.contains(scalar)
                || (scalar == "." && result.hasSuffix("."))
            result.unicodeScalars.append(bad ? "-" : scalar)
        }
        if result.isEmpty || result.hasPrefix(".") || result.hasPrefix("-") { result = "x" + result }
        if result.hasSuffix(".") || result.hasSuffix(".lock") { result += "-" }
        return result
    }
}

/// The worktree a task's runner works in.
public struct TaskSlot: Hashable, Sendable, Codable {
    /// `slot-N`: generated, never taken from a task or spec name.
    public var id: String
    public var path: String
    public var branch: String

    public init(id: String, path: String, branch: String) {
        self.id = id
        self.path = path
        self.branch = branch
    }

    /// The id of the slot numbered `number`.
    public static func id(_ number: Int) -> String { "slot-\(number)" }

    /// The number of a slot id, if `name` is one.
    public static func number(of name: String) -> Int? {
        guard name.hasPrefix("slot-"), let number = Int(name.dropFirst(5)), number >= 1, id(number) == name else { return nil }
        return number
    }
}

/// What the repo pool did with a runner's slot, to be recorded on the runner's task.
public enum SlotReport: Hashable, Sendable {
    /// The worktree is on the task's branch, with these dependencies' branches merged in.
    case prepared(created: Bool, merged: [TaskID], head: String)
    /// The agent left uncommitted changes and succeeded: the dispatcher committed them on the branch.
    case workCommitted(commit: String, message: String)
    /// Uncommitted changes of an attempt that did not succeed (or was about to be stopped), saved
    /// as a commit under this ref, off the task's branch.
    case attemptSaved(ref: String, commit: String)
    /// Cleaned, detached and free again.
    case released
    /// The worktree could not be made ready.
    case allocationFailed(String)
}
