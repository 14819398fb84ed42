/// The order a spec's tasks run in, and the edges that order adds to the declared ones.
///
/// - **Written**: each task after the one written before it (top-level tasks one after another,
///   the subtasks of a group one after another), plus any declared edges.
/// - **Declared**: only what the spec declares (`_Depends:_`, `dependencies:`) and its waves
///   block: each task of a wave after every task of the wave before; tasks no wave lists run after
///   all listed ones, in the order written.
/// - In both, a barrier task (its title starts with "Checkpoint" or "Final checkpoint") waits for
///   every task written before it, and every task written after it waits for it.
///
/// A markdown spec with no dependency annotation and no waves is read as written; otherwise, and
/// for YAML and JSON, as declared. `--order` (or `order:` in the file) overrides the choice.
public struct SpecOrder: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        case written, declared
    }

    public var mode: Mode
    /// Why this mode, for `validate`: "no task declares a dependency".
    public var reason: String
    /// The barrier (checkpoint) tasks, in the order written.
    public var barriers: [TaskID]
    /// Edges as the spec declares them, and those the order added.
    public var declaredEdges: Int
    public var addedEdges: Int
    /// How many waves the waves block has (0 without one).
    public var waves: Int

    /// Whether a title makes its task a barrier: after optional bold markers, "Checkpoint" or
    /// "Final checkpoint" in any case, followed by the end or something other than a letter or digit
    /// ("Implement CheckpointManager" and "Checkpointing" are not barriers).
    public static func isBarrierTitle(_ title: String) -> Bool {
        var bytes = Substring(title).utf8[...]
        while let first = bytes.first, first == 42 || first == 32 || first == 95 { bytes = bytes.dropFirst() }  // "**", "_"
        func dropWord(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count >= count else { return false }
            let pointer = word.utf8Start
            var index = bytes.startIndex
            for k in 0..<count {
                var byte = bytes[index]
                if byte >= 65, byte <= 90 { byte += 32 }
                guard byte == pointer[k] else { return false }
                index = bytes.index(after: index)
            }
            bytes = bytes[index...]
            return true
        }
        if dropWord("final") {
            guard let space = bytes.first, space == 32 || space == 45 || space == 95 else { return false }
            bytes = bytes.dropFirst()
        }
        guard dropWord("checkpoint") else { return false }
        guard let next = bytes.first else { return true }
        let isWordByte = (next >= 48 && next <= 57) || (next >= 65 && next <= 90) || (next >= 97 && next <= 122) || next >= 128
        return !isWordByte
    }

    /// Chooses the order of `spec` and adds the edges it implies to its tasks' dependencies.
    ///
    /// - Parameters:
    ///   - requested: the order asked for on the command line or in the API, if any.
    ///   - structured: the spec is YAML or JSON (read as declared unless it says otherwise).
    /// - Returns: the order, and warnings (a waves block naming tasks the spec does not have).
    public static func apply(
        to spec: inout TaskSetSpec, layout: SpecLayout, requested: Mode?, structured: Bool, file: String
    ) -> (SpecOrder, [SpecIssue]) {
        let declaredEdges = spec.tasks.reduce(0) { $0 + $1.dependencies.count }
        let mode: Mode
        let reason: String
        if let requested {
            mode = requested
            reason = "asked for (--order \(requested.rawValue))"
        } else if let order = layout.order {
            mode = order
            reason = "the spec's order: field"
        } else if structured {
            mode = .declared
            reason = "YAML and JSON specs run as declared (order: written runs them in the order written)"
        } else if layout.dependencyDeclarations > 0 {
            mode = .declared
            let n = layout.dependencyDeclarations
            reason = "\(n) task\(n == 1 ? " declares its" : "s declare their") dependencies (_Depends:_)"
        } else if let waves = layout.waves {
            mode = .declared
            reason = "the waves block\(layout.wavesLine > 0 ? " at line \(layout.wavesLine)" : "") orders the tasks in \(waves.count) wave\(waves.count == 1 ? "" : "s")"
        } else {
            mode = .written
            reason = "no task declares a dependency"
        }
        var barriers: [Int] = []
        for i in spec.tasks.indices where isBarrierTitle(spec.tasks[i].title) { barriers.append(i) }
        var order = SpecOrder(
            mode: mode, reason: reason, barriers: barriers.map { spec.tasks[$0].id }, declaredEdges: declaredEdges,
            addedEdges: 0, waves: layout.waves?.count ?? 0)
        guard mode == .written || !barriers.isEmpty || layout.waves != nil else { return (order, []) }

        var builder = OrderBuilder(spec.tasks)
        var issues: [SpecIssue] = []
        if mode == .written { builder.chainSiblings() }
        if let waves = layout.waves {
            var resolved: [[Int]] = []
            for (n, wave) in waves.enumerated() {
                var indexes: [Int] = []
                for id in wave {
                    if let index = builder.index[id] {
                        indexes.append(index)
                    } else {
                        issues.append(
                            .warning(
                                .unknownDependency, at: SourceLocation(file: file, line: layout.wavesLine > 0 ? layout.wavesLine : nil),
                                "wave \(n) of the waves block lists \(id), which is not a task of this spec: left out"))
                    }
                }
                if !indexes.isEmpty { resolved.append(indexes) }
            }
            builder.orderWaves(resolved, barriers: barriers)
        }
        builder.addBarriers(barriers)
        order.addedEdges = builder.added
        spec.tasks = builder.tasks
        return (order, issues)
    }
}

/// Adds order edges to a list of tasks, by index.
private struct OrderBuilder {
    var tasks: [TaskSpec]
    var index: [TaskID: Int] = [:]
    var parent: [Int]
    /// Each task's subtasks, and the top-level tasks at `count`, in the order written.
    var children: [[Int]]
    /// Where each task stands among its siblings.
    var position: [Int]
    /// The last task of each task's subtree, in the order written.
    var end: [Int]
    var added = 0

    init(_ tasks: [TaskSpec]) {
        self.tasks = tasks
        let n = tasks.count
        index.reserveCapacity(n)
        for i in 0..<n where index[tasks[i].id] == nil { index[tasks[i].id] = i }
        var parent = [Int](repeating: -1, count: n)
        var children = [[Int]](repeating: [], count: n + 1)
        var position = [Int](repeating: 0, count: n)
        for i in 0..<n {
            if let id = tasks[i].parent, let p = index[id], p != i { parent[i] = p }
            let list = parent[i] >= 0 ? parent[i] : n
            position[i] = children[list].count
            children[list].append(i)
        }
        var end = Array(0..<n)
        for i in stride(from: n - 1, through: 0, by: -1) where parent[i] >= 0 {
            end[parent[i]] = max(end[parent[i]], end[i])
        }
        self.parent = parent
        self.children = children
        self.position = position
        self.end = end
    }

    /// Makes task `task` wait on task `on`, once.
    mutating func add(_ task: Int, waitsOn on: Int) {
        let id = tasks[on].id
        guard task != on, !tasks[task].dependencies.contains(id) else { return }
        tasks[task].dependencies.append(id)
        added += 1
    }

    /// A group: it has subtasks and no work of its own.
    func isGroup(_ i: Int) -> Bool { !children[i].isEmpty && !tasks[i].runsOwnWork }

    /// Each task after the sibling written before it.
    mutating func chainSiblings() {
        for list in children {
            for k in list.indices.dropFirst() { add(list[k], waitsOn: list[k - 1]) }
        }
    }

    /// Each task of a wave after every task of the wave before; the tasks no wave lists (and no
    /// wave lists a group of) after the last wave, one after another in the order written. Barriers
    /// are left to their own rule: Kiro leaves checkpoints out of its waves.
    mutating func orderWaves(_ waves: [[Int]], barriers: [Int]) {
        for k in waves.indices.dropFirst() {
            for task in waves[k] { for before in waves[k - 1] { add(task, waitsOn: before) } }
        }
        guard let last = waves.last else { return }
        var listed = [Bool](repeating: false, count: tasks.count)
        for wave in waves { for task in wave { listed[task] = true } }
        for barrier in barriers { listed[barrier] = true }
        var previous: Int?
        for i in tasks.indices where !isGroup(i) {
            var ancestor = i
            var covered = false
            while ancestor >= 0 {
                if listed[ancestor] {
                    covered = true
                    break
                }
                ancestor = parent[ancestor]
            }
            if covered { continue }
            if let previous {
                add(i, waitsOn: previous)
            } else {
                for before in last { add(i, waitsOn: before) }
            }
            previous = i
        }
    }

    /// Each barrier waits for what is written before it (back to the barrier before), and what is
    /// written after it (up to the next barrier) waits for it: groups stand for their tasks.
    mutating func addBarriers(_ barriers: [Int]) {
        let top = tasks.count
        for (k, barrier) in barriers.enumerated() {
            let previous = k > 0 ? barriers[k - 1] : -1
            let next = k + 1 < barriers.count ? barriers[k + 1] : top
            var node = barrier
            while true {
                let list = children[parent[node] >= 0 ? parent[node] : top]
                let at = position[node]
                var j = at - 1
                while j >= 0 {
                    let sibling = list[j]
                    if previous >= 0, end[sibling] < previous { break }
                    add(barrier, waitsOn: sibling)
                    j -= 1
                }
                j = at + 1
                while j < list.count, list[j] < next {
                    add(list[j], waitsOn: barrier)
                    j += 1
                }
                guard parent[node] >= 0 else { break }
                node = parent[node]
            }
        }
    }
}
