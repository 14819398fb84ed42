/// Where each task of a parsed spec came from, so that problems found later can point at it.
///
/// Kept apart from `TaskSpec` so that the same tasks read from different formats compare equal.
public struct SpecOrigins: Sendable {
    /// Where one task, and each of its dependencies, was written.
    public struct Task: Sendable {
        /// The task's line, 0 when the format has none (JSON).
        public var line: Int32
        /// The task's field path (`tasks[2].subtasks[0]`), nil for markdown.
        public var field: String?
        /// The line of every declared dependency, when they share one (markdown's `_Depends:_`).
        public var dependencyLine: Int32
        /// One line per declared dependency, when they differ; empty otherwise.
        public var dependencyLines: [Int32]

        public init(line: Int32 = 0, field: String? = nil, dependencyLine: Int32 = 0, dependencyLines: [Int32] = []) {
            self.line = line
            self.field = field
            self.dependencyLine = dependencyLine
            self.dependencyLines = dependencyLines
        }

        /// Records the line of the next `count` dependencies, of `total` so far.
        public mutating func addDependencies(_ count: Int, atLine line: Int32, total: Int) {
            if dependencyLines.isEmpty && (dependencyLine == 0 || dependencyLine == line) {
                dependencyLine = line
                return
            }
            if dependencyLines.isEmpty {
                dependencyLines = Array(repeating: dependencyLine, count: total - count)
            }
            dependencyLines.append(contentsOf: repeatElement(line, count: count))
        }

        func lineOfDependency(_ index: Int) -> Int32 {
            if index < dependencyLines.count { return dependencyLines[index] }
            return dependencyLine > 0 ? dependencyLine : line
        }
    }

    public var file: String
    public var tasks: [Task]

    public init(file: String, tasks: [Task] = []) {
        self.file = file
        self.tasks = tasks
    }

    public func location(ofTask index: Int) -> SourceLocation {
        guard index < tasks.count else { return SourceLocation(file: file) }
        let task = tasks[index]
        return SourceLocation(file: file, line: task.line > 0 ? Int(task.line) : nil, field: task.field)
    }

    public func location(ofDependency dependency: Int, ofTask index: Int) -> SourceLocation {
        guard index < tasks.count else { return SourceLocation(file: file) }
        let task = tasks[index]
        let line = task.lineOfDependency(dependency)
        return SourceLocation(
            file: file,
            line: line > 0 ? Int(line) : nil,
            field: task.field.map { "\($0).dependencies[\(dependency)]" }
        )
    }
}
