/// The dependency graph of one taskset, in compact form.
///
/// Nodes are task indexes (the order of `TaskSetSpec.tasks`); edges run from a task to what it
/// depends on. Besides the declared dependencies, groups add two kinds of edges: a group depends on
/// each of its subtasks (so it is done when they all are), and a subtask inherits its group's
/// declared dependencies (so a group that waits on something makes all of its tasks wait).
public struct TaskGraph: Sendable {
    /// A reference the graph could not turn into an edge.
    public enum Problem: Hashable, Sendable {
        /// Task `index` repeats the id of task `first`.
        case duplicateID(index: Int, first: Int)
        /// Dependency number `dependency` of task `index` names no task.
        case unknownDependency(index: Int, dependency: Int)
        /// Dependency number `dependency` of task `index` names the task itself.
        case selfDependency(index: Int, dependency: Int)
        /// Task `index` names a parent that does not exist.
        case unknownParent(index: Int)
    }

    public let ids: [TaskID]
    public let isGroup: [Bool]
    let indexByID: [TaskID: Int32]
    // Compressed sparse rows: the dependencies of node i are
    // dependencyTargets[dependencyOffsets[i] ..< dependencyOffsets[i + 1]]; likewise for dependents.
    let dependencyOffsets: [Int32]
    let dependencyTargets: [Int32]
    let dependentOffsets: [Int32]
    let dependentTargets: [Int32]

    public var count: Int { ids.count }
    public var edgeCount: Int { dependencyTargets.count }

    /// Builds the graph, dropping and reporting every reference that cannot be an edge.
    public static func build(_ tasks: [TaskSpec]) -> (graph: TaskGraph, problems: [Problem]) {
        var problems: [Problem] = []
        var indexByID: [TaskID: Int32] = [:]
        indexByID.reserveCapacity(tasks.count)
        for (i, task) in tasks.enumerated() {
            if let first = indexByID[task.id] {
                problems.append(.duplicateID(index: i, first: Int(first)))
            } else {
                indexByID[task.id] = Int32(i)
            }
        }

        // Resolve declared dependencies once; inherited ones are looked up through the parent.
        var declared = [[Int32]](repeating: [], count: tasks.count)
        var parentIndex = [Int32](repeating: -1, count: tasks.count)
        var childCount = [Int32](repeating: 0, count: tasks.count)
        for (i, task) in tasks.enumerated() {
            var resolved: [Int32] = []
            resolved.reserveCapacity(task.dependencies.count)
            for (j, dep) in task.dependencies.enumerated() {
                guard let target = indexByID[dep] else {
                    problems.append(.unknownDependency(index: i, dependency: j))
                    continue
                }
                if target == Int32(i) || dep == task.id {
                    problems.append(.selfDependency(index: i, dependency: j))
                    continue
                }
                resolved.append(target)
            }
            declared[i] = resolved
            if let parent = task.parent {
                if let p = indexByID[parent], p != Int32(i) {
                    parentIndex[i] = p
                    childCount[Int(p)] += 1
                } else {
                    problems.append(.unknownParent(index: i))
                }
            }
        }

        var offsets = [Int32](repeating: 0, count: tasks.count + 1)
        var targets: [Int32] = []
        targets.reserveCapacity(declared.reduce(0) { $0 + $1.count } + tasks.count)
        var children = [[Int32]](repeating: [], count: tasks.count)
        for i in tasks.indices where parentIndex[i] >= 0 { children[Int(parentIndex[i])].append(Int32(i)) }
        for i in tasks.indices {
            let start = targets.count
            targets.append(contentsOf: declared[i])
            targets.append(contentsOf: children[i])
            // Inherit the declared dependencies of every enclosing group.
            var ancestor = parentIndex[i]
            var hops = 0
            while ancestor >= 0, hops < tasks.count {
                for dep in declared[Int(ancestor)] where dep != Int32(i) { targets.append(dep) }
                ancestor = parentIndex[Int(ancestor)]
                hops += 1
            }
            if targets.count - start > 1 {
                // Keep each edge once: a task may name a dependency its group also names.
                var seen = Set<Int32>()
                var write = start
                for k in start..<targets.count where seen.insert(targets[k]).inserted {
                    targets[write] = targets[k]
                    write += 1
                }
                targets.removeSubrange(write...)
            }
            offsets[i + 1] = Int32(targets.count)
        }

        let graph = TaskGraph(
            ids: tasks.map(\.id),
            isGroup: tasks.indices.map { tasks[$0].isGroup || childCount[$0] > 0 },
            indexByID: indexByID,
            dependencyOffsets: offsets,
            dependencyTargets: targets
        )
        return (graph, problems)
    }

    init(ids: [TaskID], isGroup: [Bool], indexByID: [TaskID: Int32], dependencyOffsets: [Int32], dependencyTargets: [Int32])
    {
        self.ids = ids
        self.isGroup = isGroup
        self.indexByID = indexByID
        self.dependencyOffsets = dependencyOffsets
        self.dependencyTargets = dependencyTargets
        // Reverse the edges by counting sort: O(V + E).
        var reverseOffsets = [Int32](repeating: 0, count: ids.count + 1)
        for target in dependencyTargets { reverseOffsets[Int(target) + 1] += 1 }
        for i in 0..<ids.count { reverseOffsets[i + 1] += reverseOffsets[i] }
        var cursor = reverseOffsets
        var reverseTargets = [Int32](repeating: 0, count: dependencyTargets.count)
        for node in 0..<ids.count {
            for k in Int(dependencyOffsets[node])..<Int(dependencyOffsets[node + 1]) {
                let target = Int(dependencyTargets[k])
                reverseTargets[Int(cursor[target])] = Int32(node)
                cursor[target] += 1
            }
        }
        self.dependentOffsets = reverseOffsets
        self.dependentTargets = reverseTargets
    }

    /// The index of a task, if the graph has it.
    public func index(of id: TaskID) -> Int? { indexByID[id].map(Int.init) }

    /// What task `index` waits on, groups' implicit edges included.
    public func dependencies(of index: Int) -> ArraySlice<Int32> {
        dependencyTargets[Int(dependencyOffsets[index])..<Int(dependencyOffsets[index + 1])]
    }

    /// The tasks that wait on task `index`.
    public func dependents(of index: Int) -> ArraySlice<Int32> {
        dependentTargets[Int(dependentOffsets[index])..<Int(dependentOffsets[index + 1])]
    }

    /// Runnable tasks with nothing to wait on.
    public var roots: [Int] {
        (0..<count).filter { !isGroup[$0] && dependencyOffsets[$0] == dependencyOffsets[$0 + 1] }
    }

    /// Every task that waits on `index`, directly or not, in breadth-first order.
    public func transitiveDependents(of index: Int) -> [Int] {
        var seen = Set<Int32>([Int32(index)])
        var queue: [Int32] = [Int32(index)]
        var head = 0
        while head < queue.count {
            let node = queue[head]
            head += 1
            for next in dependents(of: Int(node)) where seen.insert(next).inserted { queue.append(next) }
        }
        return queue.dropFirst().map(Int.init)
    }
}
