extension TaskGraph {
    /// One dependency cycle per strongly connected component that has one, each as a path that
    /// ends where it starts (`[1.2, 2.1, 1.2]` reads "1.2 depends on 2.1, which depends on 1.2").
    ///
    /// Tarjan's algorithm, iterative so that a chain of a million tasks cannot overflow the stack:
    /// O(V + E).
    public func cycles() -> [[TaskID]] {
        let n = count
        var order = [Int32](repeating: -1, count: n)  // discovery index
        var low = [Int32](repeating: 0, count: n)
        var onStack = [Bool](repeating: false, count: n)
        var stack: [Int32] = []
        var frames: [(node: Int32, edge: Int32)] = []
        var counter: Int32 = 0
        var components: [[Int32]] = []

        for start in 0..<n where order[start] < 0 {
            frames.append((Int32(start), dependencyOffsets[start]))
            order[start] = counter
            low[start] = counter
            counter += 1
            stack.append(Int32(start))
            onStack[start] = true
            while let frame = frames.last {
                let v = Int(frame.node)
                let end = dependencyOffsets[v + 1]
                if frame.edge < end {
                    frames[frames.count - 1].edge += 1
                    let w = Int(dependencyTargets[Int(frame.edge)])
                    if order[w] < 0 {
                        order[w] = counter
                        low[w] = counter
                        counter += 1
                        stack.append(Int32(w))
                        onStack[w] = true
                        frames.append((Int32(w), dependencyOffsets[w]))
                    } else if onStack[w] {
                        low[v] = min(low[v], order[w])
                    }
                    continue
                }
                frames.removeLast()
                if let parent = frames.last {
                    low[Int(parent.node)] = min(low[Int(parent.node)], low[v])
                }
                if low[v] == order[v] {
                    var component: [Int32] = []
                    while let w = stack.popLast() {
                        onStack[Int(w)] = false
                        component.append(w)
                        if w == Int32(v) { break }
                    }
                    if component.count > 1 { components.append(component) }
                }
            }
        }
        return components.map(cyclePath(in:)).sorted { $0[0] < $1[0] }
    }

    /// A shortest cycle through the first-declared task of a strongly connected component.
    private func cyclePath(in component: [Int32]) -> [TaskID] {
        let members = Set(component)
        let start = component.min()!
        var previous: [Int32: Int32] = [:]
        var queue: [Int32] = [start]
        var head = 0
        search: while head < queue.count {
            let v = queue[head]
            head += 1
            for w in dependencies(of: Int(v)) where members.contains(w) {
                if w == start {
                    previous[start] = v
                    break search
                }
                if previous[w] == nil {
                    previous[w] = v
                    queue.append(w)
                }
            }
        }
        var path: [Int32] = [start]
        var node = previous[start]!
        while node != start {
            path.append(node)
            node = previous[node]!
        }
        path.append(start)
        // `path` walks backwards along "depends on" edges; reverse it to read forwards.
        return path.reversed().map { ids[Int($0)] }
    }

    /// A topological order (dependencies first), or nil if the graph has a cycle.
    public func topologicalOrder() -> [Int]? {
        var remaining = (0..<count).map { dependencyOffsets[$0 + 1] - dependencyOffsets[$0] }
        var order: [Int] = []
        order.reserveCapacity(count)
        for i in 0..<count where remaining[i] == 0 { order.append(i) }
        var head = 0
        while head < order.count {
            let v = order[head]
            head += 1
            for w in dependents(of: v) {
                remaining[Int(w)] -= 1
                if remaining[Int(w)] == 0 { order.append(Int(w)) }
            }
        }
        return order.count == count ? order : nil
    }

    /// The number of runnable tasks on the longest dependency chain (groups count for nothing),
    /// or nil if the graph has a cycle.
    public func criticalPathLength() -> Int? {
        topologicalOrder().map(criticalPathLength(order:))
    }

    /// The critical path length, given a topological order of this graph.
    public func criticalPathLength(order: [Int]) -> Int {
        Int(levels(order: order).max() ?? 0)
    }

    /// The most tasks that can run at once when every task takes as long as the others: the
    /// number of tasks on the widest level (tasks whose longest chain of dependencies is as long).
    public func widestLevel(order: [Int]) -> Int {
        let levels = levels(order: order)
        var width = [Int32](repeating: 0, count: count + 1)
        for v in 0..<count where !isGroup[v] { width[Int(levels[v])] += 1 }
        return Int(width.max() ?? 0)
    }

    /// Each task's level: how many tasks the longest chain to it holds, itself included (groups
    /// add none), given a topological order of this graph.
    func levels(order: [Int]) -> [Int32] {
        var length = [Int32](repeating: 0, count: count)
        for v in order {
            var longest: Int32 = 0
            for d in dependencies(of: v) { longest = max(longest, length[Int(d)]) }
            length[v] = longest + (isGroup[v] ? 0 : 1)
        }
        return length
    }
}
