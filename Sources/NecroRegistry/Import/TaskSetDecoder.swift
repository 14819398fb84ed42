import NecroCore

/// Turns a YAML or JSON document into a taskset, collecting every type error with its field path.
struct TaskSetDecoder {
    let file: String
    private var reader: SpecNodeReader
    var issues: [SpecIssue] { reader.issues }
    private(set) var tasks: [TaskSpec] = []
    private(set) var origins: [SpecOrigins.Task] = []
    private(set) var layout = SpecLayout()

    init(file: String) {
        self.file = file
        reader = SpecNodeReader(file: file)
    }

    static let taskSetKeys: Set<String> = ["spec_name", "weight", "description", "order", "tasks"]
    static let taskKeys: Set<String> = [
        "id", "title", "description", "dependencies", "required_skill", "priority", "optional", "done", "resources",
        "timeout_seconds", "max_attempts", "gates", "metadata", "steps", "subtasks", "agent",
    ]

    mutating func decode(_ root: SpecNode, defaultName: String) -> (TaskSetSpec, SpecOrigins) {
        var name = defaultName
        var weight = 1.0
        guard case .object(let fields) = root.value else {
            reader.fail(.wrongType, root, "", "expected a mapping with spec_name and tasks, found \(root.kindName)")
            return (TaskSetSpec(name: name, tasks: []), SpecOrigins(file: file))
        }
        var sawTasks = false
        for (key, node) in fields {
            switch key {
            case "spec_name":
                if let text = reader.string(node, key) { name = text }
            case "weight":
                if let w = reader.number(node, key) {
                    if w > 0 { weight = w } else { reader.fail(.invalidValue, node, key, "weight must be positive") }
                }
            case "description":
                _ = reader.string(node, key)
            case "order":
                if let text = reader.string(node, key) {
                    if let mode = SpecOrder.Mode(rawValue: text) {
                        layout.order = mode
                    } else {
                        reader.fail(.invalidValue, node, key, "order must be written or declared, found \"\(text)\"")
                    }
                }
            case "tasks":
                sawTasks = true
                guard case .array(let items) = node.value else {
                    reader.fail(.wrongType, node, key, "expected a list of tasks, found \(node.kindName)")
                    continue
                }
                // Room for the top-level tasks at once: regrowing arrays of a million tasks moves them all.
                tasks.reserveCapacity(items.count)
                origins.reserveCapacity(items.count)
                for (i, item) in items.enumerated() { decodeTask(item, path: "tasks[\(i)]", parent: nil) }
            default:
                reader.fail(.unknownField, node, key, "unknown field \(key) (expected one of \(Self.taskSetKeys.sorted().joined(separator: ", ")))")
            }
        }
        if !sawTasks { reader.fail(.missingField, root, "tasks", "the spec has no tasks list") }
        return (TaskSetSpec(name: name, weight: weight, tasks: tasks), SpecOrigins(file: file, tasks: origins))
    }

    private mutating func decodeTask(_ node: SpecNode, path: String, parent: TaskID?) {
        guard case .object(let fields) = node.value else {
            reader.fail(.wrongType, node, path, "expected a task (a mapping), found \(node.kindName)")
            return
        }
        var task = TaskSpec(id: "", title: "", parent: parent)
        var dependencyLines: [Int32] = []
        var subtasks: [(SpecNode, String)] = []
        var hasID = false
        var hasTitle = false
        for (key, value) in fields {
            func at() -> String { "\(path).\(key)" }
            switch key {
            case "id":
                hasID = true
                if let id = reader.identifier(value, at()) {
                    if let problem = TaskID.problem(id) {
                        reader.fail(.invalidValue, value, at(), problem)
                    } else {
                        task.id = TaskID(id)
                    }
                }
            case "title":
                if let title = reader.string(value, at()) {
                    task.title = title
                    hasTitle = !title.isEmpty
                }
            case "description":
                task.description = reader.string(value, at()) ?? ""
            case "dependencies":
                for (j, item) in reader.list(value, at()).enumerated() {
                    if let dep = reader.identifier(item, "\(at())[\(j)]") {
                        task.dependencies.append(TaskID(dep))
                        dependencyLines.append(Int32(item.line ?? 0))
                    }
                }
            case "required_skill":
                task.requiredSkill = value.isNull ? nil : reader.string(value, at())
            case "priority":
                task.priority = reader.integer(value, at()) ?? 0
            case "optional":
                task.optional = reader.boolean(value, at()) ?? false
            case "done":
                task.markedDone = reader.boolean(value, at()) ?? false
            case "resources":
                task.resources = resources(value, at())
            case "timeout_seconds":
                if case .string(let text) = value.value {
                    if let seconds = DurationText.seconds(text), seconds > 0 {
                        task.timeoutSeconds = seconds
                    } else {
                        reader.fail(
                            .invalidValue, value, at(),
                            "expected seconds (1 to \(DurationText.maximumSeconds)) or a duration such as 30m, found \"\(text)\"")
                    }
                } else if let seconds = reader.integer(value, at()) {
                    if seconds > 0, seconds <= DurationText.maximumSeconds {
                        task.timeoutSeconds = seconds
                    } else {
                        reader.fail(.invalidValue, value, at(), "must be from 1 to \(DurationText.maximumSeconds) seconds, found \(seconds)")
                    }
                }
            case "max_attempts":
                if let attempts = reader.integer(value, at()) {
                    if attempts >= 1 { task.maxAttempts = attempts } else { reader.fail(.invalidValue, value, at(), "must be at least 1") }
                }
            case "gates":
                for (j, gate) in reader.list(value, at()).enumerated() {
                    let argv = reader.list(gate, "\(at())[\(j)]").enumerated().compactMap { reader.string($0.element, "\(at())[\(j)][\($0.offset)]") }
                    if argv.isEmpty {
                        reader.fail(.invalidValue, gate, "\(at())[\(j)]", "a gate is a non-empty argv list such as [swift, test]")
                    } else {
                        task.gates.append(argv)
                    }
                }
            case "agent":
                // The agent `necro runner` runs for this task: an argv list, kept in its metadata.
                let argv = reader.list(value, at()).enumerated().compactMap { reader.string($0.element, "\(at())[\($0.offset)]") }
                if argv.isEmpty {
                    reader.fail(.invalidValue, value, at(), "agent is a non-empty argv list such as [claude, -p]")
                } else {
                    task.metadata["agent"] = .array(argv.map(JSONValue.string))
                }
            case "metadata":
                if case .object = value.value, case .object(let metadata) = value.json {
                    task.metadata.merge(metadata) { kept, _ in kept }
                } else {
                    reader.fail(.wrongType, value, at(), "expected a mapping, found \(value.kindName)")
                }
            case "steps":
                for (j, item) in reader.list(value, at()).enumerated() {
                    if let step = self.step(item, "\(at())[\(j)]") { task.steps.append(step) }
                }
            case "subtasks":
                guard case .array(let items) = value.value else {
                    reader.fail(.wrongType, value, at(), "expected a list of tasks, found \(value.kindName)")
                    continue
                }
                subtasks = items.enumerated().map { ($0.element, "\(at())[\($0.offset)]") }
            default:
                reader.fail(.unknownField, value, at(), "unknown field \(key) (expected one of \(Self.taskKeys.sorted().joined(separator: ", ")))")
            }
        }
        if !hasID { reader.fail(.missingField, node, "\(path).id", "the task has no id") }
        if !hasTitle { reader.fail(.missingField, node, "\(path).title", "task \(task.id.rawValue.isEmpty ? path : task.id.rawValue) has no title") }
        task.isGroup = !subtasks.isEmpty
        tasks.append(task)
        origins.append(SpecOrigins.Task(line: Int32(node.line ?? 0), field: path, dependencyLines: dependencyLines))
        for (child, childPath) in subtasks { decodeTask(child, path: childPath, parent: task.id) }
    }

    /// A step: its title, or a mapping with `title` and `done`.
    private mutating func step(_ node: SpecNode, _ path: @autoclosure () -> String) -> TaskStep? {
        if case .object(let fields) = node.value {
            var step = TaskStep("")
            for (key, value) in fields {
                switch key {
                case "title": step.title = reader.string(value, "\(path()).title") ?? ""
                case "done": step.done = reader.boolean(value, "\(path()).done") ?? false
                default: reader.fail(.unknownField, value, "\(path()).\(key)", "unknown field \(key) (expected title, done)")
                }
            }
            if step.title.isEmpty { reader.fail(.missingField, node, "\(path()).title", "a step needs a title") }
            return step.title.isEmpty ? nil : step
        }
        return reader.string(node, path()).map { TaskStep($0) }
    }

    private mutating func resources(_ node: SpecNode, _ path: @autoclosure () -> String) -> TaskResources {
        guard case .object(let fields) = node.value else {
            reader.fail(.wrongType, node, path(), "expected a mapping with cpu and memory_mb, found \(node.kindName)")
            return .unspecified
        }
        var resources = TaskResources()
        for (key, value) in fields {
            switch key {
            case "cpu":
                if let cpu = reader.number(value, "\(path()).cpu") {
                    if cpu > 0 { resources.cpu = cpu } else { reader.fail(.invalidValue, value, "\(path()).cpu", "must be positive") }
                }
            case "memory_mb":
                if let memory = reader.integer(value, "\(path()).memory_mb") {
                    if memory > 0 { resources.memoryMB = memory } else { reader.fail(.invalidValue, value, "\(path()).memory_mb", "must be positive") }
                }
            default:
                reader.fail(.unknownField, value, "\(path()).\(key)", "unknown field \(key) (expected cpu, memory_mb)")
            }
        }
        return resources
    }
}
