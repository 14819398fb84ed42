/// A Kiro spec's `requirements.md`: numbered requirements, each with a user story and numbered
/// acceptance criteria. A task's `_Requirements: 1.2, 3_` cites criterion 2 of requirement 1 and
/// the whole of requirement 3.
public struct KiroRequirements: Hashable, Sendable {
    public struct Requirement: Hashable, Sendable {
        public var number: String
        public var title: String
        public var userStory: String
        /// The acceptance criteria, by number, in order.
        public var criteria: [(number: Int, text: String)]

        public static func == (a: Requirement, b: Requirement) -> Bool {
            a.number == b.number && a.title == b.title && a.userStory == b.userStory && a.criteria.map(\.number) == b.criteria.map(\.number)
                && a.criteria.map(\.text) == b.criteria.map(\.text)
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(number)
            hasher.combine(title)
        }
    }

    public var requirements: [Requirement]

    public init(requirements: [Requirement]) { self.requirements = requirements }

    /// Reads the requirements: a heading `### Requirement 1` (or `### Requirement 1: Title`, or
    /// `### 1. Title`) opens one; `**User Story:** …` is its story; the numbered items after it
    /// (under `#### Acceptance Criteria`) its criteria, with their continuation lines.
    public init(markdown: String) {
        var requirements: [Requirement] = []
        var inCriteria = false
        var inFence = false
        for raw in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
            let trimmed = line.trimmingSpaces
            if trimmed.hasPrefix("```") || trimmed.hasPrefix("~~~") {
                inFence.toggle()
                continue
            }
            if inFence { continue }
            if trimmed.hasPrefix("#") {
                let level = trimmed.prefix { $0 == "#" }.count
                let heading = String(trimmed.dropFirst(level)).trimmingSpaces
                if let (number, title) = Self.requirementHeading(heading) {
                    requirements.append(Requirement(number: number, title: title, userStory: "", criteria: []))
                    inCriteria = false
                } else if !requirements.isEmpty {
                    let lower = heading.lowercased()
                    if lower.contains("acceptance criteria") { inCriteria = true } else if level <= 3 { inCriteria = false }
                }
                continue
            }
            guard !requirements.isEmpty else { continue }
            let last = requirements.count - 1
            let plain = trimmed.replacing("**", with: "").replacing("__", with: "")
            if plain.lowercased().hasPrefix("user story:") {
                requirements[last].userStory = String(plain.dropFirst("user story:".count)).trimmingSpaces
                continue
            }
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            if let (number, text) = Self.numberedItem(trimmed), indent < 2, inCriteria || !requirements[last].userStory.isEmpty {
                requirements[last].criteria.append((number, text))
                inCriteria = true
                continue
            }
            if trimmed.isEmpty { continue }
            if inCriteria, !requirements[last].criteria.isEmpty {
                // A continuation of the criterion above, or a list nested in it.
                requirements[last].criteria[requirements[last].criteria.count - 1].text += "\n" + line
            } else if !requirements[last].userStory.isEmpty && requirements[last].criteria.isEmpty && !inCriteria {
                requirements[last].userStory += " " + trimmed
            }
        }
        self.requirements = requirements
    }

    /// `Requirement 1`, `Requirement 1: Title`, `Requirement 1 - Title`, `1. Title`.
    static func requirementHeading(_ heading: String) -> (String, String)? {
        var rest = Substring(heading)
        let lower = heading.lowercased()
        if lower.hasPrefix("requirement ") {
            rest = rest.dropFirst("requirement ".count)
        } else if !(rest.first?.isNumber ?? false) {
            return nil
        }
        let number = rest.prefix { $0.isNumber || $0 == "." }
        let clean = String(number.reversed().drop { $0 == "." }.reversed())
        guard !clean.isEmpty, clean.first!.isNumber else { return nil }
        if !lower.hasPrefix("requirement") && !number.hasSuffix(".") { return nil }
        let title = rest.dropFirst(number.count).drop { $0 == " " || $0 == ":" || $0 == "-" || $0 == "—" || $0 == "–" }
        return (clean, String(title).trimmingSpaces)
    }

    /// `1. WHEN …`, `2) IF …`: its number and text.
    static func numberedItem(_ line: String) -> (Int, String)? {
        let digits = line.prefix { $0.isNumber }
        guard !digits.isEmpty, digits.count < 5, let number = Int(digits) else { return nil }
        let rest = line.dropFirst(digits.count)
        guard let mark = rest.first, mark == "." || mark == ")", rest.dropFirst().first == " " else { return nil }
        return (number, String(rest.dropFirst(2)).trimmingSpaces)
    }

    /// What a task cites (`1.2`, `3`, `Requirement 2.1`, `1.1-1.3`), as `TASK_CONTEXT.requirements`
    /// has it: per requirement, its title, story and the criteria cited (all, if it is cited
    /// whole); a citation not found says so.
    public func cited(_ references: [String]) -> [JSONValue] {
        var order: [String] = []
        var wanted: [String: Set<Int>?] = [:]
        for reference in references.flatMap(Self.expand) {
            let parts = reference.split(separator: ".", maxSplits: 1).map(String.init)
            let requirement = parts[0]
            if wanted[requirement] == nil { order.append(requirement) }
            if parts.count == 2, let criterion = Int(parts[1]) {
                if case .some(.some(var set)) = wanted[requirement] {
                    set.insert(criterion)
                    wanted[requirement] = .some(set)
                } else if wanted[requirement] == nil {
                    wanted[requirement] = .some([criterion])
                }
            } else {
                wanted[requirement] = .some(nil)
            }
        }
        return order.map { number in
            let criteria = wanted[number] ?? nil
            guard let requirement = requirements.first(where: { $0.number == number }) else {
                return .object(["requirement": .string(number), "missing": .string("requirement \(number) is not in requirements.md")])
            }
            var fields: [String: JSONValue] = [
                "requirement": .string(number), "title": .string(requirement.title), "user_story": .string(requirement.userStory),
            ]
            let chosen = requirement.criteria.filter { criteria?.contains($0.number) ?? true }
            fields["criteria"] = .array(chosen.map { .object(["number": .int($0.number), "text": .string($0.text)]) })
            if let criteria {
                let absent = criteria.subtracting(chosen.map(\.number)).sorted()
                if !absent.isEmpty {
                    fields["missing"] = .string("acceptance criteria \(absent.map { "\(number).\($0)" }.joined(separator: ", ")) are not in requirements.md")
                }
            }
            return .object(fields)
        }
    }

    /// `Requirement 1.2` → `1.2`; `1.1-1.3` → `1.1`, `1.2`, `1.3`.
    static func expand(_ reference: String) -> [String] {
        var text = reference.trimmingSpaces
        for prefix in ["requirements ", "requirement ", "req. ", "req "] where text.lowercased().hasPrefix(prefix) {
            text = String(text.dropFirst(prefix.count)).trimmingSpaces
        }
        let bounds = text.split(whereSeparator: { $0 == "-" || $0 == "–" }).map { String($0).trimmingSpaces }
        if bounds.count == 2 {
            let a = bounds[0].split(separator: "."), b = bounds[1].split(separator: ".")
            if a.count == 2, let from = Int(a[1]), let to = Int(b.count == 2 ? b[1] : b[0]), b.count == 1 || a[0] == b[0], from <= to, to - from < 100 {
                return (from...to).map { "\(a[0]).\($0)" }
            }
        }
        let valid = !text.isEmpty && text.allSatisfy { $0.isNumber || $0 == "." } && text.first!.isNumber
        return valid ? [text] : []
    }
}
