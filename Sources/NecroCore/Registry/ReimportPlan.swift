/// How a spec imported again maps onto the tasks the registry already has.
///
/// A task keeps its state, attempts, events, branch and attempt refs across imports only when it
/// is recognisably the same task: the same title (whitespace and case aside), told apart by its
/// parent's title and its place among equals where titles repeat. Kiro renumbers tasks when a spec
/// is regenerated: a task renumbered by an insertion keeps its history under its new id; a task
/// whose id stayed but whose title changed is a new task, and the one it replaces leaves with its
/// history (moved aside to `<id>@v<version>`, cancelled).
public struct ReimportPlan: Sendable, Equatable {
    /// What the registry holds of one task.
    public struct Stored: Sendable, Equatable {
        public var id: TaskID
        public var title: String
        public var parent: TaskID?
        /// Removed from the spec by an earlier import, kept for its history.
        public var removed: Bool

        public init(id: TaskID, title: String, parent: TaskID?, removed: Bool) {
            self.id = id
            self.title = title
            self.parent = parent
            self.removed = removed
        }
    }

    /// A task's id changes from `from` to `to`, with everything keyed by it.
    public struct Rename: Hashable, Sendable {
        public var from: TaskID
        public var to: TaskID

        public init(from: TaskID, to: TaskID) {
            self.from = from
            self.to = to
        }
    }

    /// Tasks that go on under a new id (renumbered), old id first.
    public var renumbered: [Rename] = []
    /// Tasks moved aside, with their history, because their id now names another task.
    public var movedAside: [Rename] = []
    /// New tasks: no stored task is the same.
    public var added: [TaskID] = []
    /// Stored tasks no longer in the spec, by their id after the plan (moved aside or not).
    public var removed: [TaskID] = []
    /// New tasks that continue a stored one (under the same id or a new one).
    public var kept: [TaskID] = []

    /// Every rename, renumbered ones and moved-aside ones, to be applied together.
    public var renames: [Rename] { movedAside + renumbered }

    public var isEmpty: Bool { renames.isEmpty && added.isEmpty && removed.isEmpty }

    public init() {}

    /// A title as compared: lowercased, runs of whitespace as one space, trimmed.
    public static func normalized(_ title: String) -> String {
        title.lowercased().split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// Matches `tasks` (the spec) with `stored` (the registry). `version` is the taskset's version
    /// after this import, used to name what is moved aside.
    public static func make(stored: [Stored], tasks: [TaskSpec], version: Int) -> ReimportPlan {
        var plan = ReimportPlan()
        let live = stored.filter { !$0.removed }
        let oldTitles = Dictionary(live.map { ($0.id, normalized($0.title)) }, uniquingKeysWith: { first, _ in first })
        let newTitles = Dictionary(tasks.map { ($0.id, normalized($0.title)) }, uniquingKeysWith: { first, _ in first })
        var oldCount: [String: Int] = [:]
        for task in live { oldCount[oldTitles[task.id]!, default: 0] += 1 }
        var newCount: [String: Int] = [:]
        for task in tasks { newCount[newTitles[task.id]!, default: 0] += 1 }

        // What each new task continues (an index into `live`), and which stored ones are taken.
        var continues = [Int?](repeating: nil, count: tasks.count)
        var taken = [Bool](repeating: false, count: live.count)
        var uniqueOld: [String: Int] = [:]
        for (i, task) in live.enumerated() where oldCount[oldTitles[task.id]!] == 1 { uniqueOld[oldTitles[task.id]!] = i }
        for (n, task) in tasks.enumerated() {
            let title = newTitles[task.id]!
            guard newCount[title] == 1, let i = uniqueOld[title] else { continue }
            continues[n] = i
            taken[i] = true
        }
        // Repeated titles: by the parent's title, then by the place among equals.
        func key(_ title: String, _ parentTitle: String?) -> String { (parentTitle ?? "") + "\u{1}" + title }
        var oldByKey: [String: [Int]] = [:]
        for (i, task) in live.enumerated() where !taken[i] {
            oldByKey[key(oldTitles[task.id]!, task.parent.flatMap { oldTitles[$0] }), default: []].append(i)
        }
        var used: [String: Int] = [:]
        for (n, task) in tasks.enumerated() where continues[n] == nil {
            let k = key(newTitles[task.id]!, task.parent.flatMap { newTitles[$0] })
            let place = used[k, default: 0]
            guard let candidates = oldByKey[k], place < candidates.count else { continue }
            used[k] = place + 1
            continues[n] = candidates[place]
            taken[candidates[place]] = true
        }

        // Renumbered tasks, and the ids they (or new tasks) take from stored tasks that stay.
        var moving = Set<TaskID>()
        var wanted = Set<TaskID>()
        for (n, task) in tasks.enumerated() {
            wanted.insert(task.id)
            if let i = continues[n] {
                plan.kept.append(task.id)
                if live[i].id != task.id {
                    plan.renumbered.append(Rename(from: live[i].id, to: task.id))
                    moving.insert(live[i].id)
                }
            } else {
                plan.added.append(task.id)
            }
        }
        let allIDs = Set(stored.map(\.id))
        let continuedInPlace = Set(live.indices.filter { taken[$0] }.map { live[$0].id }).subtracting(moving)
        var archiveIDs = Set<TaskID>()
        // An id the spec's tasks take, held by a stored task that none of them continues: that
        // task is moved aside, with its history.
        for task in stored where wanted.contains(task.id) && !moving.contains(task.id) && !continuedInPlace.contains(task.id) {
            var archive = TaskID("\(task.id.rawValue)@v\(version)")
            var n = 2
            while allIDs.contains(archive) || wanted.contains(archive) || archiveIDs.contains(archive) {
                archive = TaskID("\(task.id.rawValue)@v\(version)-\(n)")
                n += 1
            }
            archiveIDs.insert(archive)
            plan.movedAside.append(Rename(from: task.id, to: archive))
        }
        let aside = Dictionary(plan.movedAside.map { ($0.from, $0.to) }, uniquingKeysWith: { first, _ in first })
        for (i, task) in live.enumerated() where !taken[i] { plan.removed.append(aside[task.id] ?? task.id) }
        return plan
    }
}

/// What an import would do, shown before anything is written (`--dry-run`).
public struct ImportPreview: Sendable, Equatable {
    /// A task of the plan: its id (after the import) and title, and its id before if it changes.
    public struct Entry: Sendable, Equatable {
        public var id: TaskID
        public var title: String
        public var previousID: TaskID?

        public init(id: TaskID, title: String, previousID: TaskID? = nil) {
            self.id = id
            self.title = title
            self.previousID = previousID
        }
    }

    public var spec: String
    /// The taskset is new to the registry.
    public var creates: Bool
    /// Same task, same definition (renumbered ones name their previous id).
    public var kept: [Entry] = []
    /// Same task, new definition: it keeps its state and history.
    public var changed: [Entry] = []
    public var added: [Entry] = []
    /// Tasks no longer in the spec: cancelled, kept in history (under `id`).
    public var removed: [Entry] = []

    public init(spec: String, creates: Bool) {
        self.spec = spec
        self.creates = creates
    }
}
