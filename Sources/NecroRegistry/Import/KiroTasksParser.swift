import Foundation
import NecroCore

/// Reads a Kiro `tasks.md`: checkbox lines are tasks, indented bullets under a task its description,
/// and underscored lines (`_Depends: 1.1_`) its attributes.
///
/// Works on bytes, one pass, without regular expressions or character decoding on the hot path:
/// a million-task file parses in well under a second.
struct KiroTasksParser {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    let file: String
    private(set) var issues: [SpecIssue] = []
    private(set) var tasks: [TaskSpec] = []
    private(set) var origins: [SpecOrigins.Task] = []
    private var descriptions: [[String]] = []
    private var indents: [Int] = []
    private var parents: [Int] = []
    /// Open tasks, innermost last, for nesting by indentation.
    private var open: [Int] = []
    /// Ids to indexes, built only once a task needs its group found by id (`2.1` under `2`).
    private var indexByID: [TaskID: Int]?

    init(file: String) { self.file = file }

    /// Parses a whole file. Big files are cut at top-level task lines and the pieces parsed on
    /// all cores, then joined.
    /// - Parameter pieces: how many pieces to cut the file into; by default one per core for files
    ///   over 4 MB, one otherwise.
    static func parse(_ bytes: [UInt8], name: String, file: String, pieces: Int? = nil) -> (
        TaskSetSpec, SpecOrigins, [SpecIssue]
    ) {
        let pieces = pieces ?? (bytes.count > 4 << 20 ? ProcessInfo.processInfo.activeProcessorCount : 1)
        return bytes.withUnsafeBufferPointer { buffer in
            let cuts = chunkStarts(buffer, pieces: pieces)
            nonisolated(unsafe) let buffer = buffer
            @Sendable func piece(_ index: Int) -> Bytes {
                Bytes(rebasing: buffer[cuts[index]..<(index + 1 < cuts.count ? cuts[index + 1] : buffer.count)])
            }
            // First count the tasks of every piece, so that the first piece can make room for all:
            // joining then never moves what it holds.
            var counts = [Int](repeating: 0, count: cuts.count)
            counts.withUnsafeMutableBufferPointer { counts in
                nonisolated(unsafe) let counts = counts
                DispatchQueue.concurrentPerform(iterations: cuts.count) { counts[$0] = checkboxCount(piece($0)) }
            }
            var parsers = cuts.indices.map { _ in KiroTasksParser(file: file) }
            parsers[0].reserve(upTo: counts.reduce(0, +))
            for index in parsers.indices.dropFirst() { parsers[index].reserve(upTo: counts[index]) }
            parsers.withUnsafeMutableBufferPointer { slots in
                nonisolated(unsafe) let slots = slots
                DispatchQueue.concurrentPerform(iterations: cuts.count) { slots[$0].parseLines(piece($0)) }
            }
            // Move the pieces out (swap, not copy): a copy would duplicate every task on the next write.
            var whole = KiroTasksParser(file: file)
            swap(&whole, &parsers[0])
            var lines = whole.lineCount
            for index in parsers.indices.dropFirst() {
                var piece = KiroTasksParser(file: file)
                swap(&piece, &parsers[index])
                piece.shift(tasksBy: whole.tasks.count, linesBy: lines)
                lines += piece.lineCount
                whole.append(piece)
            }
            whole.finish()
            return (TaskSetSpec(name: name, tasks: whole.tasks), SpecOrigins(file: file, tasks: whole.origins), whole.issues)
        }
    }

    /// Where to cut: the first top-level task line after each share of the file.
    static func chunkStarts(_ buffer: Bytes, pieces: Int) -> [Int] {
        var starts = [0]
        guard pieces > 1 else { return starts }
        for piece in 1..<pieces {
            var i = max(buffer.count * piece / pieces, (starts.last ?? 0) + 1)
            // Find "\n- [" : a task line at indentation 0 closes every open task.
            while i + 4 < buffer.count, !(buffer[i] == 10 && buffer[i + 1] == 45 && buffer[i + 2] == 32 && buffer[i + 3] == 91) {
                i += 1
            }
            guard i + 4 < buffer.count else { break }
            starts.append(i + 1)
        }
        return starts
    }

    private var lineCount = 0
    /// Flush subtasks whose group was not found in this piece: (task, group id).
    private var unresolvedParents: [(task: Int, group: TaskID)] = []

    private mutating func parseLines(_ buffer: Bytes) {
        var start = 0
        while start < buffer.count {
            var end = start
            while end < buffer.count, buffer[end] != 10 { end += 1 }
            lineCount += 1
            parseLine(Bytes(rebasing: buffer[start..<end]), line: lineCount)
            start = end + 1
        }
    }

    /// Renumbers a piece that follows `tasks` tasks and `lines` lines.
    private mutating func shift(tasksBy tasks: Int, linesBy lines: Int) {
        for i in parents.indices where parents[i] >= 0 { parents[i] += tasks }
        for i in origins.indices {
            origins[i].line += Int32(lines)
            if origins[i].dependencyLine > 0 { origins[i].dependencyLine += Int32(lines) }
            for j in origins[i].dependencyLines.indices { origins[i].dependencyLines[j] += Int32(lines) }
        }
        for i in issues.indices { issues[i].location.line = issues[i].location.line.map { $0 + lines } }
        for i in unresolvedParents.indices { unresolvedParents[i].task += tasks }
    }

    private mutating func append(_ piece: KiroTasksParser) {
        tasks += piece.tasks
        origins += piece.origins
        descriptions += piece.descriptions
        indents += piece.indents
        parents += piece.parents
        issues += piece.issues
        unresolvedParents += piece.unresolvedParents
        indexByID = nil
    }

    private mutating func finish() {
        for (task, group) in unresolvedParents {
            if let parent = lookUp(group), parent < task {
                parents[task] = parent
                tasks[task].parent = group
            }
        }
        for i in tasks.indices {
            if !descriptions[i].isEmpty { tasks[i].description = descriptions[i].joined(separator: "\n") }
            if parents[i] >= 0 { tasks[parents[i]].isGroup = true }
        }
    }

    /// An upper bound of the number of tasks: the "[" that follow "- ". One fast pass saves
    /// regrowing arrays of a million tasks.
    private static func checkboxCount(_ buffer: Bytes) -> Int {
        var count = 0
        var i = 2
        while i < buffer.count {
            if buffer[i] == 91, buffer[i - 1] == 32 { count += 1 }
            i += 1
        }
        return count
    }

    private mutating func reserve(upTo count: Int) {
        tasks.reserveCapacity(count)
        origins.reserveCapacity(count)
        descriptions.reserveCapacity(count)
        indents.reserveCapacity(count)
        parents.reserveCapacity(count)
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 || byte == 13 }

    /// The bytes between `from` and `to` without surrounding spaces.
    private static func trimmed(_ line: Bytes, _ from: Int, _ to: Int) -> Bytes {
        var start = from
        var end = to
        while start < end, isSpace(line[start]) { start += 1 }
        while end > start, isSpace(line[end - 1]) { end -= 1 }
        return Bytes(rebasing: line[start..<end])
    }

    private static func string(_ bytes: Bytes) -> String { String(decoding: bytes, as: UTF8.self) }

    private mutating func parseLine(_ line: Bytes, line number: Int) {
        var indent = 0
        var i = 0
        while i < line.count, line[i] == 32 || line[i] == 9 {
            indent += line[i] == 9 ? 4 : 1
            i += 1
        }
        let text = Self.trimmed(line, i, line.count)
        guard !text.isEmpty else { return }  // blank lines end nothing
        let isBullet = (text[0] == 45 || text[0] == 42 || text[0] == 43) && text.count > 1 && text[1] == 32
        if isBullet, text.count >= 5, text[2] == 91, text[4] == 93 {  // "- [?]"
            parseTask(text, mark: text[3], indent: indent, line: number)
            return
        }
        // Not a task: it belongs to the innermost open task indented less than it, if any.
        while let last = open.last, indents[last] >= indent { open.removeLast() }
        guard let owner = open.last else { return }
        let body = isBullet ? Self.trimmed(text, 2, text.count) : text
        if body.count >= 3, body[0] == 95, body[body.count - 1] == 95,  // "_Key: value_"
            let colon = body.firstIndex(of: 58)
        {
            let key = Self.string(Self.trimmed(body, 1, colon)).lowercased()
            attribute(key, Self.trimmed(body, colon + 1, body.count - 1), task: owner, line: number)
        } else {
            descriptions[owner].append(Self.string(body))
        }
    }

    private mutating func parseTask(_ text: Bytes, mark: UInt8, indent: Int, line number: Int) {
        var i = 5
        var optional = false
        if i < text.count, text[i] == 42 {  // "*" right after the checkbox
            optional = true
            i += 1
        }
        while i < text.count, text[i] == 32 || text[i] == 9 { i += 1 }
        let idStart = i
        while i < text.count, text[i] != 32, text[i] != 9 { i += 1 }
        var idEnd = i
        if idEnd > idStart, text[idEnd - 1] == 46 { idEnd -= 1 }  // "1." → "1"
        let location = SourceLocation(file: file, line: number)
        // A task line closes the tasks it is not nested in, even when it cannot be read: its
        // attribute lines must not land on the task before it.
        while let last = open.last, indents[last] >= indent { open.removeLast() }
        guard idEnd > idStart, text[idStart] >= 48, text[idStart] <= 57 else {
            issues.append(SpecIssue(.invalidValue, at: location, "expected a task id such as 1.2 after the checkbox"))
            return
        }
        let id = TaskID(Self.string(Bytes(rebasing: text[idStart..<idEnd])))
        let title = Self.string(Self.trimmed(text, i, text.count))
        if title.isEmpty { issues.append(SpecIssue(.missingField, at: location, "task \(id) has no title")) }

        var parent = open.last ?? -1
        let index = tasks.count
        if parent < 0, let dotted = id.dottedParent {
            parent = lookUp(dotted) ?? -1  // "- [ ] 2.1" written flush under "- [ ] 2."
            if parent < 0 { unresolvedParents.append((index, dotted)) }  // maybe in an earlier piece
        }
        tasks.append(
            TaskSpec(
                id: id, title: title, optional: optional, parent: parent >= 0 ? tasks[parent].id : nil,
                markedDone: mark == 120 || mark == 88))
        if indexByID != nil, indexByID![id] == nil { indexByID![id] = index }
        origins.append(SpecOrigins.Task(line: Int32(number)))
        descriptions.append([])
        indents.append(indent)
        parents.append(parent)
        open.append(index)
    }

    /// The first task with an id, building the index on first use.
    private mutating func lookUp(_ id: TaskID) -> Int? {
        if indexByID == nil {
            var index: [TaskID: Int] = [:]
            for (i, task) in tasks.enumerated() where index[task.id] == nil { index[task.id] = i }
            indexByID = index
        }
        return indexByID![id]
    }

    private mutating func attribute(_ key: String, _ value: Bytes, task index: Int, line number: Int) {
        let location = SourceLocation(file: file, line: number)
        switch key {
        case "requirements", "requirement":
            // References to requirements, kept as metadata: they are not dependencies.
            tasks[index].metadata["requirements"] = .array(Self.list(value).map { .string($0) })
        case "depends", "depends on", "dependencies", "dependency":
            let before = tasks[index].dependencies.count
            Self.forEachItem(value) { tasks[index].dependencies.append(TaskID(Self.string($0))) }
            let total = tasks[index].dependencies.count
            origins[index].addDependencies(total - before, atLine: Int32(number), total: total)
        default:
            otherAttribute(key, Self.string(value), task: index, at: location)
        }
    }

    private mutating func otherAttribute(_ key: String, _ value: String, task index: Int, at location: SourceLocation) {
        let id = tasks[index].id
        switch key {
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
            tasks[index].metadata[key.split(separator: " ").joined(separator: "_")] = .string(value)
        }
    }

    private mutating func parseResources(_ value: String, task index: Int, at location: SourceLocation) {
        for part in value.split(separator: ",").map(\.trimmingSpaces).filter({ !$0.isEmpty }) {
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

    /// "1.1, 2.3" → ["1.1", "2.3"], straight from the bytes.
    static func list(_ value: Bytes) -> [String] {
        var items: [String] = []
        forEachItem(value) { items.append(string($0)) }
        return items
    }

    /// Calls `body` with each non-empty, trimmed item of a comma-separated list.
    static func forEachItem(_ value: Bytes, _ body: (Bytes) -> Void) {
        var start = 0
        for end in 0...value.count where end == value.count || value[end] == 44 {
            let item = trimmed(value, start, end)
            if !item.isEmpty { body(item) }
            start = end + 1
        }
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
