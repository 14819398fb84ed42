/// Keeps the ready set of a task graph up to date as tasks finish.
///
/// Each task carries the number of its dependencies still unfinished; finishing a task decrements
/// its dependents' counts, so the work per completion is proportional to the task's out-degree.
/// Groups never run: when a group's last subtask finishes, the group finishes with it.
public struct ReadyTracker: Sendable {
    /// What finishing one task changed.
    public struct Completion: Hashable, Sendable {
        /// Runnable tasks that became ready.
        public var ready: [Int] = []
        /// Groups that finished because their last subtask did.
        public var groupsFinished: [Int] = []

        public init(ready: [Int] = [], groupsFinished: [Int] = []) {
            self.ready = ready
            self.groupsFinished = groupsFinished
        }
    }

    public let graph: TaskGraph
    private var unfinishedDependencies: [Int32]
    private var finished: [Bool]

    /// Starts tracking, with `finished` tasks already done.
    public init(graph: TaskGraph, finished: some Sequence<Int> = []) {
        self.graph = graph
        self.finished = [Bool](repeating: false, count: graph.count)
        self.unfinishedDependencies = (0..<graph.count).map {
            graph.dependencyOffsets[$0 + 1] - graph.dependencyOffsets[$0]
        }
        for index in finished where !self.finished[index] {
            self.finished[index] = true
            for dependent in graph.dependents(of: index) { unfinishedDependencies[Int(dependent)] -= 1 }
        }
    }

    public func isFinished(_ index: Int) -> Bool { finished[index] }

    /// Whether every dependency of the task is finished.
    public func isReady(_ index: Int) -> Bool { !finished[index] && unfinishedDependencies[index] == 0 }

    /// The unfinished runnable tasks whose dependencies are all finished.
    public var readyTasks: [Int] {
        (0..<graph.count).filter { !graph.isGroup[$0] && isReady($0) }
    }

    /// Unfinished groups whose subtasks are all finished (for example all marked done in the spec).
    public var groupsReadyToFinish: [Int] {
        (0..<graph.count).filter { graph.isGroup[$0] && isReady($0) }
    }

    /// The unfinished dependencies of a task.
    public func waitingOn(_ index: Int) -> [Int] {
        graph.dependencies(of: index).map(Int.init).filter { !finished[$0] }
    }

    /// Marks a task finished and returns what that made ready: O(out-degree), plus the same for
    /// each group it completes.
    @discardableResult
    public mutating func finish(_ index: Int) -> Completion {
        var completion = Completion()
        guard !finished[index] else { return completion }
        var pending = [index]
        while let node = pending.popLast() {
            finished[node] = true
            for dependent in graph.dependents(of: node) {
                let d = Int(dependent)
                unfinishedDependencies[d] -= 1
                guard unfinishedDependencies[d] == 0, !finished[d] else { continue }
                if graph.isGroup[d] {
                    completion.groupsFinished.append(d)
                    pending.append(d)
                } else {
                    completion.ready.append(d)
                }
            }
        }
        return completion
    }
}
