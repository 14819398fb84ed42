/// Checks a parsed taskset as a whole: ids, references and cycles. Reports every problem at once.
public enum TaskSetValidator {
    /// A taskset that passed validation, with its graph.
    public struct Validated: Sendable {
        public var spec: TaskSetSpec
        public var graph: TaskGraph
        public var criticalPathLength: Int
        /// The most tasks that can run at once (see `TaskGraph.widestLevel`).
        public var widestLevel: Int
    }

    /// Validates `spec`; the problems come in file order, cycles last.
    public static func validate(_ spec: TaskSetSpec, origins: SpecOrigins) -> Result<Validated, SpecValidationError> {
        var issues: [SpecIssue] = []
        if spec.name.isEmpty {
            issues.append(SpecIssue(.missingField, at: SourceLocation(file: origins.file, field: "spec_name"), "the spec has no name"))
        }
        if spec.tasks.isEmpty {
            issues.append(
                SpecIssue(
                    .noTasks, at: SourceLocation(file: origins.file),
                    "the spec has no tasks (a tasks.md lists them as checkboxes: - [ ] 1. Set up the project)"))
        }
        let (graph, problems) = TaskGraph.build(spec.tasks)
        for problem in problems {
            switch problem {
            case let .duplicateID(index, first):
                let firstAt = origins.location(ofTask: first)
                issues.append(
                    SpecIssue(
                        .duplicateID, at: origins.location(ofTask: index),
                        "duplicate task id \(spec.tasks[index].id), first declared at \(firstAt.line.map { "line \($0)" } ?? firstAt.field ?? firstAt.file)"
                    ))
            case let .unknownDependency(index, dependency):
                let task = spec.tasks[index]
                issues.append(
                    SpecIssue(
                        .unknownDependency, at: origins.location(ofDependency: dependency, ofTask: index),
                        "task \(task.id) depends on \(task.dependencies[dependency]), which is not a task of this spec"))
            case let .selfDependency(index, dependency):
                issues.append(
                    SpecIssue(
                        .selfDependency, at: origins.location(ofDependency: dependency, ofTask: index),
                        "task \(spec.tasks[index].id) depends on itself"))
            case let .unknownParent(index):
                let task = spec.tasks[index]
                issues.append(
                    SpecIssue(
                        .unknownParent, at: origins.location(ofTask: index),
                        "task \(task.id) belongs to group \(task.parent?.rawValue ?? "?"), which is not a task of this spec"))
            }
        }
        // Kahn's sort is the cheap check; Tarjan's, which names the cycles, runs only when it fails.
        let order = graph.topologicalOrder()
        let cycles = order == nil ? graph.cycles() : []
        for cycle in cycles {
            let at = graph.index(of: cycle[0]) ?? 0
            issues.append(
                SpecIssue(
                    .dependencyCycle, at: origins.location(ofTask: at),
                    "dependency cycle: \(cycle.map(\.rawValue).joined(separator: " -> "))"))
        }
        guard issues.isEmpty, let order else {
            return .failure(SpecValidationError(issues: issues))
        }
        return .success(
            Validated(
                spec: spec, graph: graph, criticalPathLength: graph.criticalPathLength(order: order),
                widestLevel: graph.widestLevel(order: order)))
    }
}
