/// The prompt `necro runner` gives an agent, rendered from `TASK_CONTEXT` by a template.
///
/// A template is text with `{{name}}` for a value and `{{#name}}…{{/name}}` for a part kept only
/// when the value is not empty. Names: `spec`, `attempt`, `task.id`, `task.title`,
/// `task.description`, `notes` (the task's other lines, such as Kiro's `_Details: …_`), `steps`,
/// `step` (the step this run is for, with `steps: each`),
/// `requirements`, `design`, `design.path`, `dependencies`, `checkpoint`, `previous_failure`,
/// `gates`.
public struct PromptTemplate: Hashable, Sendable {
    public static let names: Set<String> = [
        "spec", "attempt", "task.id", "task.title", "task.description", "notes", "steps", "step", "requirements", "design", "design.path",
        "dependencies", "checkpoint", "previous_failure", "gates",
    ]

    public static let defaultText = """
        You are working on task {{task.id}} of the spec "{{spec}}": {{task.title}}
        {{#task.description}}

        {{task.description}}
        {{/task.description}}
        {{#step}}

        ## This run
        {{step}}
        {{/step}}
        {{#notes}}

        {{notes}}
        {{/notes}}
        {{#steps}}

        ## Steps
        {{steps}}
        {{/steps}}
        {{#requirements}}

        ## Requirements this task must meet
        {{requirements}}
        {{/requirements}}
        {{#design}}

        ## Design
        The spec's design ({{design.path}}), for reference:

        {{design}}
        {{/design}}
        {{#dependencies}}

        ## The tasks it depends on
        {{dependencies}}
        {{/dependencies}}
        {{#checkpoint}}

        ## Where this attempt starts
        {{checkpoint}}
        {{/checkpoint}}
        {{#previous_failure}}

        ## What went wrong last time
        {{previous_failure}}
        {{/previous_failure}}

        ## Done means
        Work in the current folder only. {{#gates}}The task counts as done when these checks pass there: {{gates}}. {{/gates}}Report each step as you finish it with `necro step done N` if that command is available.
        """

    /// A part of a template: text, a value, or a part kept when a value is not empty.
    indirect enum Part: Hashable, Sendable {
        case text(String)
        case value(String)
        case section(String, [Part])
    }

    let parts: [Part]

    /// What is wrong with a template: where, and what.
    public struct Invalid: Error, Hashable, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }

        public init(line: Int, message: String) {
            self.line = line
            self.message = message
        }
    }

    public init(_ text: String) throws(Invalid) {
        var parser = Parser(text: Array(text))
        parts = try parser.parts(until: nil)
    }

    public static let standard: PromptTemplate = try! PromptTemplate(defaultText)

    /// The prompt for a runner's `TASK_CONTEXT`, for step `step` (1-based) if it runs one step.
    public func render(context: [String: JSONValue], step: Int? = nil) -> String {
        let values = Self.values(context, step: step)
        var out = ""
        Self.write(parts, values, to: &out)
        // Parts left out take their lines with them; the end is one newline.
        while out.last?.isWhitespace == true { out.removeLast() }
        return out + "\n"
    }
    private static func write(_ parts: [Part], _ values: [String: String], to out: inout String) {
        for part in parts {
            switch part {
            case .text(let text): out += text
            case .value(let name): out += values[name] ?? ""
            case .section(let name, let inner): if !(values[name] ?? "").isEmpty { write(inner, values, to: &out) }
            }
        }
    }

    // MARK: Values

    static func values(_ context: [String: JSONValue], step: Int?) -> [String: String] {
        let task = context["task"]?.objectValue ?? [:]
        var values: [String: String] = [
            "spec": context["spec"]?.stringValue ?? "",
            "attempt": context["attempt"]?.intValue.map(String.init) ?? "1",
            "task.id": task["id"]?.stringValue ?? "",
            "task.title": task["title"]?.stringValue ?? "",
            "task.description": (task["description"]?.stringValue ?? "").trimmingBlankLines,
        ]
        // The task's other lines (`_Details: …_`, `_Leverage: …_`), as written; not what necro reads itself.
        let notes = (task["metadata"]?.objectValue ?? [:]).filter { !Self.readByNecro.contains($0.key) }.sorted { $0.key < $1.key }
        values["notes"] = notes.compactMap { key, value -> String? in
            guard let text = value.stringValue?.trimmingBlankLines, !text.isEmpty else { return nil }
            let name = key.replacing("_", with: " ")
            return "\(name.prefix(1).uppercased())\(name.dropFirst()): \(text)"
        }.joined(separator: "\n")
        let steps = (task["steps"]?.arrayValue ?? []).compactMap { $0.objectValue }
        values["steps"] = steps.enumerated().map { index, item in
            let done = item["done"] == true
            return "\(index + 1). [\(done ? "x" : " ")] \(item["title"]?.stringValue ?? "")"
        }.joined(separator: "\n")
        if let step, steps.indices.contains(step - 1) {
            values["step"] = "Do step \(step) only: \(steps[step - 1]["title"]?.stringValue ?? "")"
        }
        values["requirements"] = requirements(context["requirements"]?.arrayValue ?? [])
        if let design = context["design"]?.objectValue {
            values["design"] = demoted((design["text"]?.stringValue ?? "").trimmingBlankLines)
            values["design.path"] = design["path"]?.stringValue ?? "design.md"
        }
        let branches = (context["dependency_branches"]?.arrayValue ?? []).compactMap { $0.objectValue }
        values["dependencies"] = (context["dependencies"]?.arrayValue ?? []).compactMap(\.stringValue).map { id in
            let branch = branches.first { $0["task"]?.stringValue == id }?["branch"]?.stringValue
            return "- task \(id)" + (branch.map { " (branch \($0), merged into this folder)" } ?? "")
        }.joined(separator: "\n")
        if let checkpoint = context["checkpoint"]?.objectValue {
            let done = (checkpoint["work_items_done"]?.arrayValue ?? []).compactMap(\.stringValue)
            var text = "An earlier attempt left off at checkpoint \(checkpoint["sequence_number"]?.intValue ?? 0): the files here are as they were then."
            if !done.isEmpty {
                let numbers = done.compactMap { $0.hasPrefix("step_") ? String($0.dropFirst(5)) : nil }
                text += " Done already: step\(numbers.count == 1 ? "" : "s") \(numbers.joined(separator: ", ")). Go on with the rest."
            }
            if checkpoint["agent_session"]?.stringValue != nil { text += " Your conversation of then goes on." }
            values["checkpoint"] = text
        }
        if let failure = context["previous_failure"]?.objectValue {
            var text = "Attempt \(failure["attempt"]?.intValue.map(String.init) ?? "?") failed: \(failure["reason"]?.stringValue ?? "unknown reason")."
            if let gate = failure["gate"]?.stringValue { text += " The check `\(gate)` did not pass." }
            if let tail = failure["output_tail"]?.stringValue, !tail.isEmpty {
                text += " The end of its output:\n\n```\n\(tail.trimmingBlankLines)\n```"
            }
            values["previous_failure"] = text
        }
        let gates = (task["gates"]?.arrayValue ?? []).compactMap { $0.arrayValue?.compactMap(\.stringValue) }.filter { !$0.isEmpty }
        values["gates"] = gates.map { "`" + $0.joined(separator: " ") + "`" }.joined(separator: ", ")
        return values
    }

    /// Metadata necro reads itself, not notes for the agent.
    static let readByNecro: Set<String> = ["requirements", "agent", "depends", "dependencies"]

    /// A document set under a heading of the prompt: its own headings two levels down (not in
    /// code blocks), so that they do not read as the prompt's.
    public static func demoted(_ text: String) -> String {
        var inFence = false
        return text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map { line -> String in
            let trimmed = line.drop { $0 == " " }
            if trimmed.hasPrefix("```") || trimmed.hasPrefix("~~~") { inFence.toggle() }
            return !inFence && line.hasPrefix("#") ? "##" + line : String(line)
        }.joined(separator: "\n")
    }

    /// The cited requirements, each with its user story and the criteria cited.
    static func requirements(_ items: [JSONValue]) -> String {
        var blocks: [String] = []
        for case .object(let item) in items {
            if item["requirement"] == nil, let missing = item["missing"]?.stringValue {
                blocks.append("(\(missing))")
                continue
            }
            var block = "### Requirement \(item["requirement"]?.stringValue ?? "?")"
            if let title = item["title"]?.stringValue, !title.isEmpty { block += ": \(title)" }
            if let story = item["user_story"]?.stringValue, !story.isEmpty { block += "\n\nUser story: \(story)" }
            let criteria = (item["criteria"]?.arrayValue ?? []).compactMap { $0.objectValue }
            if !criteria.isEmpty {
                block += "\n\nAcceptance criteria:\n" + criteria.map { "\($0["number"]?.intValue.map(String.init) ?? "-"). \($0["text"]?.stringValue ?? "")" }.joined(separator: "\n")
            }
            if let missing = item["missing"]?.stringValue { block += "\n\n(\(missing))" }
            blocks.append(block)
        }
        return blocks.joined(separator: "\n\n")
    }

    // MARK: Parsing

    struct Parser {
        var text: [Character]
        var index = 0
        var line = 1
        var depth = 0

        mutating func parts(until closing: String?) throws(Invalid) -> [Part] {
            var parts: [Part] = []
            var literal = ""
            while index < text.count {
                if text[index] == "{" && index + 1 < text.count && text[index + 1] == "{" {
                    let start = line
                    let tagStart = index
                    guard let end = closingBraces(from: index + 2) else {
                        throw Invalid(line: start, message: "{{ is not closed by }}")
                    }
                    let tag = String(text[(index + 2)..<end]).trimmingSpaces
                    index = end + 2
                    // A section's tag alone on its line takes its line with it.
                    let isSection = tag.hasPrefix("#") || tag.hasPrefix("/")
                    if isSection && alone(from: tagStart, to: index) {
                        while literal.last == " " || literal.last == "\t" { literal.removeLast() }
                        if index < text.count {
                            index += 1
                            line += 1
                        }
                    }
                    if !literal.isEmpty { parts.append(.text(literal)) }
                    literal = ""
                    if tag.hasPrefix("#") {
                        let name = String(tag.dropFirst()).trimmingSpaces
                        try known(name, start)
                        guard depth < 16 else { throw Invalid(line: start, message: "{{#\(name)}} is more than 16 parts deep") }
                        depth += 1
                        parts.append(.section(name, try self.parts(until: name)))
                        depth -= 1
                    } else if tag.hasPrefix("/") {
                        let name = String(tag.dropFirst()).trimmingSpaces
                        guard name == closing else {
                            throw Invalid(line: start, message: closing.map { "{{/\(name)}} closes nothing here: {{#\($0)}} is open" } ?? "{{/\(name)}} closes nothing")
                        }
                        return parts
                    } else {
                        try known(tag, start)
                        parts.append(.value(tag))
                    }
                    continue
                }
                if text[index].isNewline { line += 1 }
                literal.append(text[index])
                index += 1
            }
            if let closing { throw Invalid(line: line, message: "{{#\(closing)}} is not closed by {{/\(closing)}}") }
            if !literal.isEmpty { parts.append(.text(literal)) }
            return parts
        }

        /// Whether only spaces stand between the line's start and `start`, and between `end` and
        /// the line's end.
        private func alone(from start: Int, to end: Int) -> Bool {
            var before = start - 1
            while before >= 0 && (text[before] == " " || text[before] == "\t") { before -= 1 }
            guard before < 0 || text[before].isNewline else { return false }
            var after = end
            while after < text.count && (text[after] == " " || text[after] == "\t") { after += 1 }
            return after == text.count || text[after].isNewline
        }

        private func closingBraces(from start: Int) -> Int? {
            var at = start
            while at + 1 < text.count {
                if text[at].isNewline { return nil }
                if text[at] == "}" && text[at + 1] == "}" { return at }
                at += 1
            }
            return nil
        }

        private func known(_ name: String, _ line: Int) throws(Invalid) {
            guard PromptTemplate.names.contains(name) else {
                throw Invalid(line: line, message: "unknown name {{\(name)}} (known: \(PromptTemplate.names.sorted().joined(separator: ", ")))")
            }
        }
    }
}

extension String {
    /// The longest start of the text that is at most `limit` bytes in UTF-8, cut between characters.
    public func utf8Prefix(_ limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var bytes = 0
        var end = startIndex
        for index in indices {
            let width = self[index].utf8.count
            if bytes + width > limit { break }
            bytes += width
            end = self.index(after: index)
        }
        return String(self[..<end])
    }

    /// Without blank lines (or spaces) before and after.
    var trimmingBlankLines: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
