import NecroCore

/// Reads a Kiro `tasks.md`: checkbox lines are tasks, indented bullets under a task its description,
/// and underscored lines (`_Depends: 1.1_`) its attributes.
///
/// Works on bytes, one pass, without regular expressions: a million-task file parses in well under
/// a second.
struct KiroTasksParser {
    let file: String
    private(set) var issues: [SpecIssue] = []
    private(set) var tasks: [TaskSpec] = []
    private(set) var origins: [SpecOrigins.Task] = []
    private var descriptions: [[String]] = []
    private var indents: [Int] = []
    /// Open tasks, innermost last, for nesting by indentation.
    private var open: [Int] = []
    private var indexByID: [TaskID: Int] = [:]

    init(file: String) { self.file = file }

    mutating func parse(_ bytes: [UInt8], name: String) -> (TaskSetSpec, SpecOrigins) {
        var lineNumber = 0
        var start = 0
        let count = bytes.count
        bytes.withUnsafeBufferPointer { buffer in
            while start < count {
                var end = start
                while end < count, buffer[end] != 10 { end += 1 }
                lineNumber += 1
                var trimmedEnd = end
                if trimmedEnd > start, buffer[trimmedEnd - 1] == 13 { trimmedEnd -= 1 }
                parseLine(UnsafeBufferPointer(rebasing: buffer[start..<trimmedEnd]), line: lineNumber)
                start = end + 1
            }
        }
        for i in tasks.indices {
            if !descriptions[i].isEmpty { tasks[i].description = descriptions[i].joined(separator: "\n") }
            if let parent = tasks[i].parent, let p = indexByID[parent] { tasks[p].isGroup = true }
        }
        return (TaskSetSpec(name: name, tasks: tasks), SpecOrigins(file: file, tasks: origins))
    }

    private mutating func parseLine(_ line: UnsafeBufferPointer<UInt8>, line number: Int) {
        var indent = 0
        var i = 0
        while i < line.count, line[i] == 32 || line[i] == 9 {
            indent += line[i] == 9 ? 4 : 1
            i += 1
        }
        guard i < line.count else { return }  // blank lines end nothing
        let isBullet = (line[i] == 45 || line[i] == 42 || line[i] == 43) && i + 1 < line.count && line[i + 1] == 32
        if isBullet, i + 5 <= line.count, line[i + 2] == 91, line[i + 4] == 93 {  // "- [?]"
            parseTask(line, from: i + 5, mark: line[i + 3], indent: indent, line: number)
            return
        }
        // Not a task: it belongs to the innermost open task indented less than it, if any.
        while let last = open.last, indents[last] >= indent { open.removeLast() }
        guard let owner = open.last else { return }
        var textStart = isBullet ? i + 2 : i
        while textStart < line.count, line[textStart] == 32 { textStart += 1 }
        let text = String(decoding: UnsafeBufferPointer(rebasing: line[textStart...]), as: UTF8.self)
        if text.count >= 3, text.first == "_", text.last == "_", let colon = text.firstIndex(of: ":") {
            let key = text[text.index(after: text.startIndex)..<colon].trimmingSpaces
            let value = text[text.index(after: colon)..<text.index(before: text.endIndex)].trimmingSpaces
            attribute(key, value, task: owner, line: number)
        } else {
            descriptions[owner].append(text.trimmingSpaces)
        }
    }

    private mutating func parseTask(_ line: UnsafeBufferPointer<UInt8>, from: Int, mark: UInt8, indent: Int, line number: Int) {
        var i = from
        var optional = false
        if i < line.count, line[i] == 42 {  // "*" right after the checkbox
            optional = true
            i += 1
        }
        while i < line.count, line[i] == 32 { i += 1 }
        let idStart = i
        while i < line.count, line[i] != 32, line[i] != 9 { i += 1 }
        var idEnd = i
        if idEnd > idStart, line[idEnd - 1] == 46 { idEnd -= 1 }  // "1." → "1"
        while i < line.count, line[i] == 32 || line[i] == 9 { i += 1 }
        let location = SourceLocation(file: file, line: number)
        // A task line closes the tasks it is not nested in, even when it cannot be read: its
        // attribute lines must not land on the task before it.
        while let last = open.last, indents[last] >= indent { open.removeLast() }
        guard idEnd > idStart, line[idStart] >= 48, line[idStart] <= 57 else {
            issues.append(SpecIssue(.invalidValue, at: location, "expected a task id such as 1.2 after the checkbox"))
            return
        }
        let id = TaskID(String(decoding: UnsafeBufferPointer(rebasing: line[idStart..<idEnd]), as: UTF8.self))
        let title = String(decoding: UnsafeBufferPointer(rebasing: line[i...]), as: UTF8.self).trimmingSpaces
        if title.isEmpty { issues.append(SpecIssue(.missingField, at: location, "task \(id) has no title")) }

        var parent: TaskID?
        if let enclosing = open.last {
            parent = tasks[enclosing].id
        } else if let dotted = id.dottedParent, indexByID[dotted] != nil {
            parent = dotted  // "- [ ] 2.1" written flush under "- [ ] 2."
        }
        let index = tasks.count
        if indexByID[id] == nil { indexByID[id] = index }
        tasks.append(
            TaskSpec(id: id, title: title, optional: optional, parent: parent, markedDone: mark == 120 || mark == 88))
        origins.append(SpecOrigins.Task(line: Int32(number)))
        descriptions.append([])
        indents.append(indent)
        open.append(index)
    }

    private mutating func attribute(_ key: String, _ value: String, task index: Int, line number: Int) {
        let location = SourceLocation(file: file, line: number)
        let id = tasks[index].id
        switch key.lowercased() {
        case "requirements", "requirement":
            // References to requirements, kept as metadata: they are not dependencies.
            tasks[index].metadata["requirements"] = .array(Self.list(value).map { .string($0) })
        case "depends", "depends on", "dependencies", "dependency":
            for dep in Self.list(value) {
                tasks[index].dependencies.append(TaskID(dep))
                origins[index].dependencyLines.append(Int32(number))
            }
        case "skill", "required skill", "required_skill":
            if value.isEmpty {
                issues.append(SpecIssue(.invalidValue, at: location, "task \(id): _Skill:_ needs a skill name"))
            } else {
                tasks[index].requiredSkill = value
            }
        case "priority":
            if let priority = Int(value) {
                tasks[index].priority = priority
            } else {
                issues.append(SpecIssue(.wrongType, at: location, "task \(id): priority must be an integer, found \"\(value)\""))
            }
        case "timeout":
            if let seconds = DurationText.seconds(value), seconds > 0 {
                tasks[index].timeoutSeconds = seconds
            } else {
                issues.append(
                    SpecIssue(.invalidValue, at: location, "task \(id): timeout must be a duration such as 90s, 30m or 1h, found \"\(value)\""))
            }
        case "attempts", "max attempts", "max_attempts":
            if let attempts = Int(value), attempts >= 1 {
                tasks[index].maxAttempts = attempts
            } else {
                issues.append(SpecIssue(.invalidValue, at: location, "task \(id): attempts must be an integer of at least 1, found \"\(value)\""))
            }
        case "resources":
            parseResources(value, task: index, at: location)
        case "gate":
            if let argv = Self.argv(value), !argv.isEmpty {
                tasks[index].gates.append(argv)
            } else {
                issues.append(
                    SpecIssue(.invalidValue, at: location, "task \(id): _Gate:_ needs a command, with its quotes closed"))
            }
        default:
            tasks[index].metadata[key.lowercased().replacingSpaces(with: "_")] = .string(value)
        }
    }

    private mutating func parseResources(_ value: String, task index: Int, at location: SourceLocation) {
        for part in Self.list(value) {
            let pieces = part.split(whereSeparator: { $0 == "=" || $0 == ":" || $0 == " " }).map(String.init)
            guard pieces.count == 2 else {
                issues.append(SpecIssue(.invalidValue, at: location, "resources: expected cpu=N, memory_mb=N, found \"\(part)\""))
                continue
            }
            switch pieces[0].lowercased() {
            case "cpu":
                if let cpu = Double(pieces[1]), cpu > 0 {
                    tasks[index].resources.cpu = cpu
                } else {
                    issues.append(SpecIssue(.invalidValue, at: location, "resources: cpu must be a positive number, found \"\(pieces[1])\""))
                }
            case "memory", "memory_mb", "mem":
                if let memory = Int(pieces[1]), memory > 0 {
                    tasks[index].resources.memoryMB = memory
                } else {
                    issues.append(
                        SpecIssue(.invalidValue, at: location, "resources: memory_mb must be a positive integer, found \"\(pieces[1])\""))
                }
            default:
                issues.append(SpecIssue(.invalidValue, at: location, "resources: unknown resource \(pieces[0]) (expected cpu, memory_mb)"))
            }
        }
    }

    /// "1.1, 2.3" → ["1.1", "2.3"].
    static func list(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingSpaces }.filter { !$0.isEmpty }
    }

    /// Splits a command into argv: whitespace separates, single or double quotes group. No shell.
    /// Nil if a quote is left open.
    static func argv(_ text: String) -> [String]? {
        var result: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        for character in text {
            if let q = quote {
                if character == q { quote = nil } else { current.append(character) }
            } else if character == "'" || character == "\"" {
                quote = character
                inWord = true
            } else if character == " " || character == "\t" {
                if inWord { result.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(character)
                inWord = true
            }
        }
        if quote != nil { return nil }
        if inWord { result.append(current) }
        return result
    }
}

extension String {
    fileprivate func replacingSpaces(with replacement: String) -> String {
        split(separator: " ").joined(separator: replacement)
    }
}
