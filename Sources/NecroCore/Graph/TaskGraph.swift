/// The dependency graph of one taskset, in compact form.
///
/// Nodes are task indexes (the order of `TaskSetSpec.tasks`); edges run from a task to what it
/// depends on. Besides the declared dependencies, groups add two kinds of edges: a group depends on
/// each of its subtasks (so it is done when they all are), and a subtask inherits its group's
/// declared dependencies (so a group that waits on something makes all of its tasks wait). A parent
/// that runs work of its own is no group: its subtasks wait on it, and what waits on it waits on
/// them too.
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
    let table: TaskIDTable
    // Compressed sparse rows: the dependencies of node i are
    // dependencyTargets[dependencyOffsets[i] ..< dependencyOffsets[i + 1]]; likewise for dependents.
    let dependencyOffsets: [Int32]
    let dependencyTargets: [Int32]
    let dependentOffsets: [Int32]
    let dependentTargets: [Int32]

    public var count: Int { ids.count }
    public var edgeCount: Int { dependencyTargets.count }

    /// Builds the graph, dropping and reporting every reference that cannot be an edge.
    ///
    /// O(V + E), in flat arrays: no allocation per task.
    public static func build(_ tasks: [TaskSpec]) -> (graph: TaskGraph, problems: [Problem]) {
        let n = tasks.count
        var problems: [Problem] = []
        var ids: [TaskID] = []
        ids.reserveCapacity(n)
        for i in 0..<n { ids.append(tasks[i].id) }
        var table = TaskIDTable(capacity: n)
        for i in 0..<n {
            if let first = table.insert(Int32(i), in: ids) {
                problems.append(.duplicateID(index: i, first: Int(first)))  // the first declaration keeps the id
            }
        }

        // Declared dependencies, resolved, in compressed rows; and each task's group.
        var declaredOffsets = [Int32](repeating: 0, count: n + 1)
        var declared: [Int32] = []
        declared.reserveCapacity(tasks.reduce(0) { $0 + $1.dependencies.count })
        var parentIndex = [Int32](repeating: -1, count: n)
        var childCount = [Int32](repeating: 0, count: n + 1)
        for i in 0..<n {
            let dependencies = tasks[i].dependencies
            for j in dependencies.indices {
                guard let target = table.index(of: dependencies[j], in: ids) else {
                    problems.append(.unknownDependency(index: i, dependency: j))
                    continue
                }
                if target == Int32(i) || dependencies[j] == ids[i] {
                    problems.append(.selfDependency(index: i, dependency: j))
                    continue
                }
                declared.append(target)
            }
            declaredOffsets[i + 1] = Int32(declared.count)
            if let parent = tasks[i].parent {
                if let p = table.index(of: parent, in: ids), p != Int32(i) {
                    parentIndex[i] = p
                    childCount[Int(p) + 1] += 1
                } else {
                    problems.append(.unknownParent(index: i))
                }
            }
        }
        // Children in compressed rows, by counting sort.
        for i in 0..<n { childCount[i + 1] += childCount[i] }
        var childCursor = childCount
        var children = [Int32](repeating: 0, count: Int(childCount[n]))
        for i in 0..<n where parentIndex[i] >= 0 {
            let p = Int(parentIndex[i])
            children[Int(childCursor[p])] = Int32(i)
            childCursor[p] += 1
        }

        // A parent with work of its own runs (its subtasks wait on it) instead of waiting on its
        // subtasks; what waits on it waits on its subtasks too.
        func runsOwnWork(_ node: Int) -> Bool { tasks[node].runsOwnWork && childCount[node + 1] > childCount[node] }
        func isAncestor(_ node: Int32, of task: Int) -> Bool {
            var ancestor = parentIndex[task]
            var hops = 0
            while ancestor >= 0, hops < n {
                if ancestor == node { return true }
                ancestor = parentIndex[Int(ancestor)]
                hops += 1
            }
            return false
        }
        var offsets = [Int32](repeating: 0, count: n + 1)
        var targets: [Int32] = []
        targets.reserveCapacity(declared.count + children.count)
        var expand: [Int32] = []
        func appendDependency(_ target: Int32, of task: Int) {
            targets.append(target)
            guard runsOwnWork(Int(target)), !isAncestor(target, of: task) else { return }
            expand.append(target)
            while let parent = expand.popLast() {
                for child in children[Int(childCount[Int(parent)])..<Int(childCount[Int(parent) + 1])] where child != Int32(task) {
                    targets.append(child)
                    if runsOwnWork(Int(child)) { expand.append(child) }
                }
            }
        }
        for i in 0..<n {
            let start = targets.count
            for k in Int(declaredOffsets[i])..<Int(declaredOffsets[i + 1]) { appendDependency(declared[k], of: i) }
            // A group waits on its subtasks; a parent with work of its own is waited on by them.
            if !runsOwnWork(i) { targets.append(contentsOf: children[Int(childCount[i])..<Int(childCount[i + 1])]) }
            // Inherit the declared dependencies of every enclosing group, and wait on every
            // enclosing parent that has work of its own.
            var ancestor = parentIndex[i]
            var hops = 0
            while ancestor >= 0, hops < n {
                let a = Int(ancestor)
                if runsOwnWork(a) { targets.append(ancestor) }
                for k in Int(declaredOffsets[a])..<Int(declaredOffsets[a + 1]) where declared[k] != Int32(i) {
                    appendDependency(declared[k], of: i)
                }
                ancestor = parentIndex[a]
                hops += 1
            }
            if targets.count - start > 1 {
                // Keep each edge once: a task may name a dependency twice, or one its group names.
                // Few edges per task is the rule: a linear scan beats allocating a set.
                let many = targets.count - start > 32
                var seen = many ? Set<Int32>(minimumCapacity: targets.count - start) : []
                var write = start
                for k in start..<targets.count {
                    let target = targets[k]
                    let duplicate =
                        many ? !seen.insert(target).inserted : targets[start..<write].contains(target)
                    if !duplicate {
                        targets[write] = target
                        write += 1
                    }
                }
                targets.removeSubrange(write...)
            }
            offsets[i + 1] = Int32(targets.count)
        }

        let graph = TaskGraph(
            ids: ids,
            isGroup: (0..<n).map { (tasks[$0].isGroup || childCount[$0 + 1] > childCount[$0]) && !runsOwnWork($0) },
            table: table,
            dependencyOffsets: offsets,
            dependencyTargets: targets
        )
        return (graph, problems)
    }

    init(ids: [TaskID], isGroup: [Bool], table: TaskIDTable, dependencyOffsets: [Int32], dependencyTargets: [Int32]) {
        self.ids = ids
        self.isGroup = isGroup
        self.table = table
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
    public func index(of id: TaskID) -> Int? { table.index(of: id, in: ids).map(Int.init) }

    /// What task `index` waits on, groups' implicit edges included.
    public func dependencies(of index: Int) -> ArraySlice<Int32> {
        dependencyTargets[Int(dependencyOffsets[index])..<Int(dependencyOffsets[index + 1])]
    }

    /// What task `index` waits on, each group replaced by the tasks in it (recursively), in the
    /// order declared, each once.
    public func taskDependencies(of index: Int) -> [Int] {
        var seen = Set<Int32>([Int32(index)])
        var result: [Int] = []
        var stack = Array(dependencies(of: index).reversed())
        while let node = stack.popLast() {
            guard seen.insert(node).inserted else { continue }
            if isGroup[Int(node)] {
                stack += dependencies(of: Int(node)).reversed()
            } else {
                result.append(Int(node))
            }
        }
        return result
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
