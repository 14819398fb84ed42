import Foundation
import NecroCore

/// Reads a Kiro `tasks.md` as people write it.
///
/// - A checkbox line with a number (`- [ ] 2.1 Title`) is a task; nested by indentation, or by its
///   dotted id when written flush under its group. `- [ ]*` (or `- [ ]\\*`) marks it optional;
///   `[x]` done; `[-]` and `[~]` (Kiro's in progress and queued) are not done, and counted.
/// - Indented lines under a task are its description; underscored lines its attributes, written
///   `_Depends: 1.1_` or `_Depends:_ 1.1`.
/// - An unnumbered checkbox under a task is one of its steps.
/// - A heading numbered like a task (`### 1. Set up X`, `## Task 3: Y`) with checkboxes under it is
///   a task: plain checkboxes are its steps (it is done when they all are), numbered ones whose id
///   extends its own (`1.1` under `1.`) its subtasks. Any other heading is only a section.
/// - A file whose checkboxes are all unnumbered is a list of tasks in order, numbered 1, 2, 3…;
///   in a file with numbered tasks, an unnumbered checklist outside any task (under "Notes") is
///   ignored with a warning.
/// - A fenced JSON block with `"waves"` (Kiro's task dependency graph) is kept as the spec's waves.
///
/// Works on bytes, one pass, without regular expressions or character decoding on the hot path:
/// a million-task file parses in well under a second.
struct KiroTasksParser {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    let file: String
    private(set) var issues: [SpecIssue] = []
    private(set) var tasks: [TaskSpec] = []
    private(set) var origins: [SpecOrigins.Task] = []
    private(set) var layout = SpecLayout()
    private var descriptions: [[String]] = []
    private var indents: [Int] = []
    private var parents: [Int] = []
    /// Per task: 0 a numbered checkbox task, 1 a heading task, 2 an unnumbered checkbox outside any
    /// task (a task only if the file has no numbered one).
    private var kinds: [UInt8] = []
    /// Open tasks, innermost last, for nesting by indentation (a heading task at indentation -1).
    private var open: [Int] = []
    /// Ids to indexes, built only once a task needs its group found by id (`2.1` under `2`).
    private var indexByID: [TaskID: Int]?
    /// The heading task whose section this is, until the next heading.
    private var headingTask: Int?
    /// Whether a heading came after the last numbered task.
    private var headingSinceTask = true
    /// A fenced code block being read: its first line, and its lines when it may be a waves block.
    private var fenceLine = 0
    private var fenceText: [String]?
    private var inFence = false
    /// The task a fenced block belongs to (its lines are its description), or -1.
    private var fenceOwner = -1

    private static let numbered: UInt8 = 0
    private static let heading: UInt8 = 1
    private static let loose: UInt8 = 2

    init(file: String) { self.file = file }

    /// Parses a whole file. Big files are cut at top-level task lines and the pieces parsed on
    /// all cores, then joined.
    /// - Parameter pieces: how many pieces to cut the file into; by default one per core for files
    ///   over 4 MB, one otherwise.
    static func parse(_ bytes: [UInt8], name: String, file: String, pieces: Int? = nil) -> (
        TaskSetSpec, SpecOrigins, SpecLayout, [SpecIssue]
    ) {
        let pieces = pieces ?? (bytes.count > 4 << 20 ? ProcessInfo.processInfo.activeProcessorCount : 1)
        if let nul = bytes.prefix(8192).firstIndex(of: 0) {
            return (
                TaskSetSpec(name: name, tasks: []), SpecOrigins(file: file), SpecLayout(),
                [SpecIssue(.unreadable, at: SourceLocation(file: file), "not a text file (a NUL byte at offset \(nul)): a tasks.md is markdown text")]
            )
        }
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
            return (
                TaskSetSpec(name: name, tasks: whole.tasks), SpecOrigins(file: file, tasks: whole.origins), whole.layout,
                whole.issues
            )
        }
    }

    /// Where to cut: the first line after each share of the file that is a top-level numbered task
    /// with an undotted id (`- [ ] 12. …`): such a line ends every open task and heading section.
    static func chunkStarts(_ buffer: Bytes, pieces: Int) -> [Int] {
        var starts = [0]
        guard pieces > 1 else { return starts }
        func isCut(_ i: Int) -> Bool {
            // "\n- [?]" then an optional "*", a space, digits and a space or a dot and a space.
            guard i + 7 < buffer.count, buffer[i] == 10, buffer[i + 1] == 45, buffer[i + 2] == 32, buffer[i + 3] == 91,
                buffer[i + 5] == 93
            else { return false }
            var j = i + 6
            if buffer[j] == 42 { j += 1 }
            guard j < buffer.count, buffer[j] == 32 else { return false }
            j += 1
            let digits = j
            while j < buffer.count, buffer[j] >= 48, buffer[j] <= 57 { j += 1 }
            guard j > digits, j < buffer.count else { return false }
            if buffer[j] == 46 { j += 1 }
            return j < buffer.count && (buffer[j] == 32 || buffer[j] == 9)
        }
        for piece in 1..<pieces {
            var i = max(buffer.count * piece / pieces, (starts.last ?? 0) + 1)
            while i + 7 < buffer.count, !isCut(i) { i += 1 }
            guard i + 7 < buffer.count else { break }
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
        closeHeadingSection()
        if inFence {
            issues.append(SpecIssue(.malformed, at: SourceLocation(file: file, line: fenceLine), "a code block (```) is never closed"))
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
        layout.shift(linesBy: lines)
    }

    private mutating func append(_ piece: KiroTasksParser) {
        tasks += piece.tasks
        origins += piece.origins
        descriptions += piece.descriptions
        indents += piece.indents
        parents += piece.parents
        kinds += piece.kinds
        issues += piece.issues
        unresolvedParents += piece.unresolvedParents
        layout.append(piece.layout)
        indexByID = nil
    }

    private mutating func finish() {
        for (task, group) in unresolvedParents {
            if let parent = lookUp(group), parent < task {
                parents[task] = parent
                tasks[task].parent = group
            }
        }
        dropOrNumberLooseCheckboxes()
        var hasChildren = [Bool](repeating: false, count: tasks.count)
        for i in tasks.indices where parents[i] >= 0 { hasChildren[parents[i]] = true }
        for i in tasks.indices {
            if !descriptions[i].isEmpty { tasks[i].description = descriptions[i].joined(separator: "\n") }
            if kinds[i] == Self.heading, !tasks[i].steps.isEmpty {
                tasks[i].markedDone = tasks[i].steps.allSatisfy(\.done)
            }
            guard hasChildren[i] else { continue }
            // A parent with work of its own (its own description, requirements or steps) runs it;
            // a heading's prose is not work.
            let ownWork =
                !tasks[i].steps.isEmpty
                || (kinds[i] != Self.heading && (!descriptions[i].isEmpty || tasks[i].metadata["requirements"] != nil))
            if ownWork { tasks[i].runsOwnWork = true } else { tasks[i].isGroup = true }
        }
    }

    /// Unnumbered checkboxes outside any task are the tasks of a file that has no numbered task,
    /// numbered in order; in a file that has, they are ignored with a warning.
    private mutating func dropOrNumberLooseCheckboxes() {
        guard kinds.contains(Self.loose) else { return }
        if !kinds.contains(where: { $0 != Self.loose }) {
            var number = 0
            for i in tasks.indices {
                number += 1
                tasks[i].id = TaskID(String(number))
                kinds[i] = Self.numbered
            }
            layout.numberedInOrder = true
            return
        }
        var newIndex = [Int](repeating: -1, count: tasks.count)
        var kept = 0
        for i in tasks.indices {
            if kinds[i] == Self.loose {
                issues.append(
                    .warning(
                        .ignoredChecklist, at: SourceLocation(file: file, line: Int(origins[i].line)),
                        "an unnumbered checkbox outside the task list\(layout.sectionNote(forLine: Int(origins[i].line))) is not a task and is ignored; give it a number of its own (- [ ] N. …) to make it one, or indent it under a task to make it a step"
                    ))
            } else {
                newIndex[i] = kept
                kept += 1
            }
        }
        func compact<T>(_ array: inout [T]) {
            var write = 0
            for i in array.indices where newIndex[i] >= 0 {
                if write != i { array.swapAt(write, i) }
                write += 1
            }
            array.removeSubrange(write...)
        }
        for i in parents.indices where parents[i] >= 0 { parents[i] = newIndex[parents[i]] }
        compact(&tasks)
        compact(&origins)
        compact(&descriptions)
        compact(&indents)
        compact(&parents)
        compact(&kinds)
        indexByID = nil
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
        kinds.reserveCapacity(count)
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

    private static func startsWithFence(_ text: Bytes) -> Bool {
        text.count >= 3 && ((text[0] == 96 && text[1] == 96 && text[2] == 96) || (text[0] == 126 && text[1] == 126 && text[2] == 126))
    }

    private mutating func parseLine(_ line: Bytes, line number: Int) {
        var indent = 0
        var i = 0
        while i < line.count, line[i] == 32 || line[i] == 9 {
            indent += line[i] == 9 ? 4 : 1
            i += 1
        }
        let text = Self.trimmed(line, i, line.count)
        if inFence {
            if Self.startsWithFence(text) {
                inFence = false
                if let lines = fenceText { readWaves(lines.joined(separator: "\n"), line: fenceLine) }
                fenceText = nil
            } else {
                fenceText?.append(Self.string(text))
                if fenceOwner >= 0, !text.isEmpty { descriptions[fenceOwner].append(Self.string(text)) }
            }
            return
        }
        guard !text.isEmpty else { return }  // blank lines end nothing
        if Self.startsWithFence(text) {
            inFence = true
            fenceLine = number
            fenceOwner = owner(at: indent) ?? -1
            // A block that may hold Kiro's waves: json, or no language at all.
            let language = Self.string(Self.trimmed(text, 3, text.count)).lowercased()
            fenceText = language.isEmpty || language == "json" ? [] : nil
            return
        }
        if indent < 4, text[0] == 35 {  // "#"
            parseHeading(text, line: number)
            return
        }
        let isBullet = (text[0] == 45 || text[0] == 42 || text[0] == 43) && text.count > 1 && text[1] == 32
        if isBullet, text.count >= 5, text[2] == 91, text[4] == 93 {  // "- [?]"
            parseCheckbox(text, mark: text[3], indent: indent, line: number)
            return
        }
        // Not a task: it belongs to the innermost open task indented less than it, if any.
        guard let owner = owner(at: indent) else { return }
        let body = isBullet ? Self.trimmed(text, 2, text.count) : text
        if body.count >= 3, body[0] == 95, let colon = body.firstIndex(of: 58) {
            // "_Key: value_", or "_Key:_ value"
            if colon + 1 < body.count, body[colon + 1] == 95 {
                let key = Self.string(Self.trimmed(body, 1, colon)).lowercased()
                attribute(key, Self.trimmed(body, colon + 2, body.count), task: owner, line: number)
                return
            }
            if body[body.count - 1] == 95 {
                let key = Self.string(Self.trimmed(body, 1, colon)).lowercased()
                attribute(key, Self.trimmed(body, colon + 1, body.count - 1), task: owner, line: number)
                return
            }
        }
        descriptions[owner].append(Self.string(body))
    }

    /// The innermost open task a line indented by `indent` belongs to, closing those it is not in.
    private mutating func owner(at indent: Int) -> Int? {
        while let last = open.last, indents[last] >= indent { open.removeLast() }
        return open.last
    }

    /// A heading ends the tasks and the heading section before it; one numbered like a task starts
    /// a heading task, kept only if checkboxes follow (steps or subtasks).
    private mutating func parseHeading(_ text: Bytes, line number: Int) {
        closeHeadingSection()
        open.removeAll()
        var level = 0
        while level < text.count, text[level] == 35 { level += 1 }
        var rest = Self.trimmed(text, level, text.count)
        headingSinceTask = true
        layout.sections.append(SpecLayout.Section(line: number, title: Self.string(rest)))
        // "**1. Title**": bold around the whole heading.
        if rest.count > 4, rest[0] == 42, rest[1] == 42 {
            var end = rest.count
            if rest[end - 1] == 42, rest[end - 2] == 42 { end -= 2 }
            rest = Self.trimmed(rest, 2, end)
        }
        var i = 0
        // "Task 3: Title" and its translations.
        if i < rest.count, !(rest[0] >= 48 && rest[0] <= 57) {
            while i < rest.count, rest[i] != 32, !(rest[i] >= 48 && rest[i] <= 57) { i += 1 }
            let word = Self.string(Self.trimmed(rest, 0, i)).lowercased()
            guard Self.taskWords.contains(word) else { return }
            while i < rest.count, rest[i] == 32 { i += 1 }
        }
        let idStart = i
        while i < rest.count, (rest[i] >= 48 && rest[i] <= 57) || rest[i] == 46 { i += 1 }
        var idEnd = i
        while idEnd > idStart, rest[idEnd - 1] == 46 { idEnd -= 1 }
        guard idEnd > idStart, i == rest.count || Self.isSeparator(rest[i]) else { return }
        // Separators between the number and the title: ". ", ": ", ") ", " - ", " — ".
        while i < rest.count, Self.isSeparator(rest[i]) { i += 1 }
        if i + 2 < rest.count, rest[i] == 0xE2, rest[i + 1] == 0x80, rest[i + 2] == 0x94 || rest[i + 2] == 0x93 {  // — –
            i += 3
            while i < rest.count, Self.isSeparator(rest[i]) { i += 1 }
        }
        let title = Self.string(Self.trimmed(rest, i, rest.count))
        guard !title.isEmpty else { return }
        let index = addTask(
            TaskID(Self.string(Bytes(rebasing: rest[idStart..<idEnd]))), title: title, optional: false, done: false,
            indent: -1, parent: -1, kind: Self.heading, line: number)
        headingTask = index
    }

    private static func isSeparator(_ byte: UInt8) -> Bool { byte == 32 || byte == 46 || byte == 58 || byte == 41 || byte == 45 }

    /// Words that may stand before a heading's task number (`## Task 3: …`), lowercased.
    private static let taskWords: Set<String> = [
        "task", "tarea", "tarefa", "tâche", "tache", "aufgabe", "compito", "taak", "zadanie", "задача", "タスク", "任务", "任務", "태스크",
        "작업",
    ]

    /// Ends the section of a heading task: one without steps or subtasks was a section heading, and
    /// is taken back.
    private mutating func closeHeadingSection() {
        guard let index = headingTask else { return }
        headingTask = nil
        guard index == tasks.count - 1, tasks[index].steps.isEmpty else { return }
        if indexByID?[tasks[index].id] == index { indexByID![tasks[index].id] = nil }
        tasks.removeLast()
        origins.removeLast()
        descriptions.removeLast()
        indents.removeLast()
        parents.removeLast()
        kinds.removeLast()
        open.removeAll { $0 == index }
    }

    private mutating func parseCheckbox(_ text: Bytes, mark: UInt8, indent: Int, line number: Int) {
        var i = 5
        var optional = false
        if i + 1 < text.count, text[i] == 92, text[i + 1] == 42 { i += 1 }  // "\*": an escaped star
        if i < text.count, text[i] == 42 {  // "*" right after the checkbox
            optional = true
            i += 1
        }
        if mark == 45 || mark == 126 { layout.inProgressMarks += 1 }  // "[-]", "[~]"
        let done = mark == 120 || mark == 88
        while i < text.count, text[i] == 32 || text[i] == 9 { i += 1 }
        let idStart = i
        while i < text.count, text[i] != 32, text[i] != 9 { i += 1 }
        var idEnd = i
        if idEnd > idStart, text[idEnd - 1] == 46 { idEnd -= 1 }  // "1." → "1"
        let location = SourceLocation(file: file, line: number)
        guard idEnd > idStart, text[idStart] >= 48, text[idStart] <= 57 else {
            unnumberedCheckbox(Self.string(Self.trimmed(text, idStart, text.count)), done: done, optional: optional, indent: indent, at: location)
            return
        }
        let id = TaskID(Self.string(Bytes(rebasing: text[idStart..<idEnd])))
        if let problem = TaskID.problem(id.rawValue) { issues.append(SpecIssue(.invalidValue, at: location, problem)) }
        let title = Self.string(Self.trimmed(text, i, text.count))
        if title.isEmpty { issues.append(SpecIssue(.missingField, at: location, "task \(id) has no title")) }
        // A task line closes the tasks it is not nested in, even when it cannot be read: its
        // attribute lines must not land on the task before it. Unnumbered checkboxes outside the
        // task list never hold numbered tasks.
        var parent = owner(at: indent) ?? -1
        while parent >= 0, kinds[parent] == Self.loose {
            open.removeLast()
            parent = open.last ?? -1
        }
        if let heading = headingTask, parent == heading {
            // Under a heading task: its subtask if the id extends the heading's, else the heading
            // was only a section.
            if id.dottedParent != tasks[heading].id {
                closeHeadingSection()
                open.removeAll()
                parent = -1
            }
        }
        if parent < 0, let dotted = id.dottedParent {
            parent = lookUp(dotted) ?? -1  // "- [ ] 2.1" written flush under "- [ ] 2."
            if parent < 0 { unresolvedParents.append((tasks.count, dotted)) }  // maybe in an earlier piece
        }
        headingSinceTask = false
        addTask(id, title: title, optional: optional, done: done, indent: indent, parent: parent, kind: Self.numbered, line: number)
    }

    /// A checkbox without a number: a step of the task it is under, or of the heading task whose
    /// section this is; else a checkbox outside any task (a task only if no task is numbered).
    private mutating func unnumberedCheckbox(_ title: String, done: Bool, optional: Bool, indent: Int, at location: SourceLocation) {
        if title.isEmpty {
            issues.append(SpecIssue(.missingField, at: location, "a checkbox without a title"))
            return
        }
        if let owner = owner(at: indent) {
            tasks[owner].steps.append(TaskStep(title, done: done))
            return
        }
        if let last = tasks.indices.last, kinds[last] == Self.numbered, !headingSinceTask {
            issues.append(
                SpecIssue(
                    .ambiguous, at: location,
                    "an unnumbered checkbox right after task \(tasks[last].id): give it a number of its own (- [ ] N. \(title)) to make it a task, or indent it under task \(tasks[last].id) to make it a step"
                ))
            return
        }
        addTask(TaskID(""), title: title, optional: optional, done: done, indent: indent, parent: -1, kind: Self.loose, line: location.line ?? 0)
    }

    @discardableResult
    private mutating func addTask(
        _ id: TaskID, title: String, optional: Bool, done: Bool, indent: Int, parent: Int, kind: UInt8, line: Int
    ) -> Int {
        let index = tasks.count
        tasks.append(
            TaskSpec(id: id, title: title, optional: optional, parent: parent >= 0 ? tasks[parent].id : nil, markedDone: done))
        if kind != Self.loose, indexByID != nil, indexByID![id] == nil { indexByID![id] = index }
        origins.append(SpecOrigins.Task(line: Int32(line)))
        descriptions.append([])
        indents.append(indent)
        parents.append(parent)
        kinds.append(kind)
        open.append(index)
        return index
    }

    /// Reads a fenced block that may be Kiro's task dependency graph:
    /// `{"waves": [{"id": 0, "tasks": ["1.1", "4.1"]}, …]}`.
    private mutating func readWaves(_ text: String, line: Int) {
        guard text.contains("\"waves\"") else { return }
        let location = SourceLocation(file: file, line: line)
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let waves = object["waves"] as? [Any]
        else {
            issues.append(
                SpecIssue(
                    .malformed, at: location,
                    "the waves block is not valid JSON of the form {\"waves\": [{\"id\": 0, \"tasks\": [\"1.1\", \"1.2\"]}, …]}"))
            return
        }
        var result: [[TaskID]] = []
        for (n, wave) in waves.enumerated() {
            guard let tasks = (wave as? [String: Any])?["tasks"] as? [Any] else {
                issues.append(SpecIssue(.malformed, at: location, "wave \(n) of the waves block has no \"tasks\" list"))
                return
            }
            var ids: [TaskID] = []
            for task in tasks {
                if let text = task as? String {
                    ids.append(TaskID(text))
                } else if let number = task as? NSNumber {
                    ids.append(TaskID(number.stringValue))
                } else {
                    issues.append(SpecIssue(.wrongType, at: location, "wave \(n) of the waves block: task ids must be strings such as \"1.1\""))
                    return
                }
            }
            result.append(ids)
        }
        if layout.waves != nil {
            issues.append(SpecIssue(.duplicateID, at: location, "a second waves block (the first is at line \(layout.wavesLine))"))
            return
        }
        layout.waves = result
        layout.wavesLine = line
    }

    /// The first task with an id, building the index on first use.
    private mutating func lookUp(_ id: TaskID) -> Int? {
        if indexByID == nil {
            var index: [TaskID: Int] = [:]
            for (i, task) in tasks.enumerated() where index[task.id] == nil && kinds[i] != Self.loose { index[task.id] = i }
            indexByID = index
        }
        return indexByID![id]
    }

    private mutating func attribute(_ key: String, _ value: Bytes, task index: Int, line number: Int) {
        let location = SourceLocation(file: file, line: number)
        switch key {
        case _ where Self.requirementKeys.contains(key):
            // References to requirements, kept as metadata: they are not dependencies.
            tasks[index].metadata["requirements"] = .array(Self.list(value).map { .string($0) })
        case "depends", "depends on", "dependencies", "dependency":
            layout.dependencyDeclarations += 1
            let before = tasks[index].dependencies.count
            Self.forEachItem(value) { item in
                let text = Self.string(item)
                if !Self.noDependency.contains(text.lowercased()) { tasks[index].dependencies.append(TaskID(text)) }
            }
            let total = tasks[index].dependencies.count
            origins[index].addDependencies(total - before, atLine: Int32(number), total: total)
        default:
            otherAttribute(key, Self.string(value), task: index, at: location)
        }
    }

    /// The requirements line, as written in the languages seen in real specs.
    static let requirementKeys: Set<String> = [
        "requirements", "requirement", "requisitos", "requisito", "requisiti", "anforderungen", "anforderung", "exigences",
        "exigence", "vereisten", "требования", "需求", "要件", "要求", "요구사항",
    ]

    /// What a task that depends on nothing says: `_Depends:_ none`.
    static let noDependency: Set<String> = ["none", "-", "—", "n/a", "nothing"]

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
                // Real specs write "_Priority: Critical_" as a note: kept, with a warning.
                tasks[index].metadata["priority"] = .string(value)
                issues.append(
                    .warning(
                        .wrongType, at: location,
                        "task \(id): a priority is an integer (higher runs first); \"\(value)\" is kept as a note and the priority stays 0"))
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
        case "agent":
            if let argv = Self.argv(value), !argv.isEmpty {
                tasks[index].metadata["agent"] = .array(argv.map(JSONValue.string))
            } else {
                issues.append(SpecIssue(.invalidValue, at: location, "task \(id): _Agent:_ needs a command, with its quotes closed"))
            }
        case "gate":
            if Self.isShellCommand(value) {
                // `npm run build && npm test` means what a shell makes of it: so it is run.
                tasks[index].gates.append(["sh", "-c", value])
            } else if let argv = Self.argv(value), !argv.isEmpty {
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
                if let cpu = Double(pieces[1]), cpu > 0, cpu.isFinite {
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
    /// Whether a command line needs a shell: it joins or redirects commands, or substitutes one
    /// (outside quotes or not: a gate is one line a person wrote).
    static func isShellCommand(_ text: String) -> Bool {
        let words = text.split(separator: " ")
        if words.contains(where: { ["&&", "||", "|", ";", ">", ">>", "<", "2>&1"].contains($0) }) { return true }
        return text.contains("$(") || text.contains("`") || words.contains { $0.hasSuffix(";") }
    }

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
