/// A Kiro spec's `requirements.md`: numbered requirements, each with a user story and numbered
/// acceptance criteria. A task's `_Requirements: 1.2, 3_` cites criterion 2 of requirement 1 and
/// the whole of requirement 3.
public struct KiroRequirements: Hashable, Sendable {
    public struct Requirement: Hashable, Sendable {
        public var number: String
        public var title: String
        public var userStory: String
        /// The acceptance criteria, by number, in order.
        public var criteria: [Criterion]
    }

    public struct Criterion: Hashable, Sendable {
        public var number: Int
        public var text: String
    }

    public var requirements: [Requirement]

    public init(requirements: [Requirement]) { self.requirements = requirements }

    /// Reads the requirements, in whatever language Kiro wrote them: a heading `### Requirement 1`
    /// (`### Requirement 27A: Title`, `### 要件5: タイトル`, `### 1. Title`) opens one; its first line
    /// with a bold label (`**User Story:** …`, `**目的:** …`) is its story; the numbered items under
    /// it (under `#### Acceptance Criteria`, `#### 受入基準`…) its criteria, with their continuation
    /// lines. A heading as high as the requirement's, and not one, ends it.
    public init(markdown: String) {
        var requirements: [Requirement] = []
        var open = false
        var level = 0
        var storyOpen = false
        var inFence = false
        // Lines end with LF or CRLF (one Character in Swift).
        for raw in markdown.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let line = String(raw.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
            let trimmed = line.trimmingSpaces
            if trimmed.hasPrefix("```") || trimmed.hasPrefix("~~~") {
                inFence.toggle()
                continue
            }
            if inFence { continue }
            if trimmed.hasPrefix("#") {
                let depth = trimmed.prefix { $0 == "#" }.count
                let heading = String(trimmed.dropFirst(depth)).trimmingSpaces
                if depth >= 2, let (number, title) = Self.requirementHeading(heading) {
                    requirements.append(Requirement(number: number, title: title, userStory: "", criteria: []))
                    open = true
                    level = depth
                    storyOpen = false
                } else if depth <= level {
                    open = false
                }
                continue
            }
            guard open, !requirements.isEmpty else { continue }
            let last = requirements.count - 1
            if trimmed.isEmpty {
                storyOpen = false
                continue
            }
            if requirements[last].userStory.isEmpty && requirements[last].criteria.isEmpty, let story = Self.labelled(trimmed) {
                requirements[last].userStory = story
                storyOpen = true
                continue
            }
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            if let (number, text) = Self.numberedItem(trimmed), indent < 2 {
                requirements[last].criteria.append(Criterion(number: number, text: text))
                storyOpen = false
                continue
            }
            if !requirements[last].criteria.isEmpty {
                // A continuation of the criterion above, or a list nested in it.
                requirements[last].criteria[requirements[last].criteria.count - 1].text += "\n" + line
            } else if storyOpen && !trimmed.hasPrefix("**") {
                requirements[last].userStory += " " + trimmed
            }
        }
        self.requirements = requirements
    }

    /// `**User Story:** As a…`, `**目的:** …`, `**User Story**: …`: the text after the label.
    static func labelled(_ line: String) -> String? {
        guard line.hasPrefix("**") else { return nil }
        let rest = line.dropFirst(2)
        guard let close = rest.firstRange(of: "**"), rest.distance(from: rest.startIndex, to: close.lowerBound) <= 40 else { return nil }
        let label = rest[..<close.lowerBound]
        var after = rest[close.upperBound...]
        if label.hasSuffix(":") || label.hasSuffix("：") {
            // `**User Story:** text`
        } else if after.first == ":" || after.first == "：" {
            after = after.dropFirst()
        } else {
            return nil
        }
        let text = String(after).trimmingSpaces
        return text.isEmpty ? nil : text
    }

    /// `Requirement 1`, `Requirement 27A: Title`, `要件5: Title`, `Requisito 2 - Title`, `1. Title`:
    /// its number and title. A word or two before the number names it in the spec's language; with
    /// none, the number is followed by `.` or `:`.
    static func requirementHeading(_ heading: String) -> (String, String)? {
        let characters = Array(heading)
        guard let start = characters.firstIndex(where: { $0.isASCII && $0.isNumber }) else { return nil }
        let prefix = String(characters[..<start]).trimmingSpaces
        if prefix.contains(where: { $0.isNumber }) || prefix.count > 24 || prefix.split(separator: " ").count > 2 { return nil }
        var end = start
        while end < characters.count && characters[end].isASCII && characters[end].isNumber { end += 1 }
        if end < characters.count && characters[end].isASCII && characters[end].isLetter
            && (end + 1 == characters.count || !(characters[end + 1].isLetter)) { end += 1 }
        let number = String(characters[start..<end])
        let next = end < characters.count ? characters[end] : " "
        let separators: Set<Character> = [":", "：", ".", " ", "-", "—", "–", "　"]
        guard separators.contains(next) else { return nil }
        if prefix.isEmpty && !(next == "." || next == ":" || next == "：") { return nil }
        let title = characters[end...].drop { separators.contains($0) }
        return (number, String(title).trimmingSpaces)
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
        var prose: [String] = []
        for reference in references where Self.expand(reference).isEmpty && !reference.trimmingSpaces.isEmpty {
            prose.append(reference.trimmingSpaces)
        }
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
        return order.map { number -> JSONValue in
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
        } + prose.map { text in
            .object(["citation": .string(text), "missing": .string("“\(text)” names no requirement by number: see requirements.md")])
        }
    }

    /// `Requirement 1.2` → `1.2`; `1.1-1.3` → `1.1`, `1.2`, `1.3`; `1-3` → `1`, `2`, `3`;
    /// `17（事前定義ロール）` → `17`; `27A.1` as it is. Prose (`All requirements`) gives nothing.
    public static func expand(_ reference: String) -> [String] {
        var text = Substring(reference)
        // A note after the citation, in parentheses of either width.
        if let note = text.firstIndex(where: { $0 == "(" || $0 == "（" }) { text = text[..<note] }
        text = text.drop { !($0.isASCII && $0.isNumber) }
        let trimmed = String(text).trimmingSpaces
        func id(_ part: Substring) -> (requirement: String, criterion: Int?)? {
            let pieces = part.split(separator: ".", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let first = pieces.first, let lead = first.first, lead.isASCII, lead.isNumber,
                first.allSatisfy({ $0.isASCII && ($0.isNumber || $0.isLetter) }), first.count <= 8
            else { return nil }
            if pieces.count == 2 {
                guard let criterion = Int(pieces[1]), criterion >= 0 else { return nil }
                return (String(first), criterion)
            }
            return (String(first), nil)
        }
        let bounds = trimmed.split(whereSeparator: { $0 == "-" || $0 == "–" || $0 == "~" || $0 == "〜" }).map { $0.trimmingPrefix(" ") }
        if bounds.count == 2, let from = id(bounds[0].prefix { $0 != " " }), let to = id(bounds[1].prefix { $0 != " " }) {
            switch (from.criterion, to.criterion) {
            case (let a?, let b?) where from.requirement == to.requirement && a <= b && b - a < 100:
                return (a...b).map { "\(from.requirement).\($0)" }
            case (let a?, nil) where a <= Int(to.requirement) ?? -1 && (Int(to.requirement) ?? 0) - a < 100:
                return (a...(Int(to.requirement) ?? a)).map { "\(from.requirement).\($0)" }
            case (nil, nil):
                if let a = Int(from.requirement), let b = Int(to.requirement), a <= b, b - a < 100 { return (a...b).map(String.init) }
            default:
                break
            }
        }
        guard let single = id(trimmed.prefix { $0 != " " }) else { return [] }
        return [single.criterion.map { "\(single.requirement).\($0)" } ?? single.requirement]
    }
}
