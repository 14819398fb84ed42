/// What a spec file says about its tasks as a whole, beside the tasks themselves: the order it
/// asks for, Kiro's waves, and what the reader noticed along the way.
public struct SpecLayout: Sendable, Equatable {
    /// A heading of a markdown spec.
    public struct Section: Sendable, Equatable {
        public var line: Int
        public var title: String

        public init(line: Int, title: String) {
            self.line = line
            self.title = title
        }
    }

    /// The order the file itself asks for (`order:` in YAML or JSON), if any.
    public var order: SpecOrder.Mode?
    /// Kiro's task dependency graph: the tasks of each wave, wave by wave.
    public var waves: [[TaskID]]?
    /// The line of the waves block (markdown) or 0.
    public var wavesLine = 0
    /// How many dependency annotations the file has (`_Depends:_`, an explicit `none` included).
    public var dependencyDeclarations = 0
    /// How many checkboxes were `[-]` or `[~]` (in progress, queued): read as not done.
    public var inProgressMarks = 0
    /// The file's checkboxes were all unnumbered: its tasks were numbered 1, 2, 3… in order.
    public var numberedInOrder = false
    /// The headings of a markdown file, in order.
    public var sections: [Section] = []

    public init() {}

    /// Moves every line by `lines`, for a piece of a file read apart from what precedes it.
    public mutating func shift(linesBy lines: Int) {
        if wavesLine > 0 { wavesLine += lines }
        for i in sections.indices { sections[i].line += lines }
    }

    /// Adds what a later piece of the same file found.
    public mutating func append(_ other: SpecLayout) {
        if waves == nil, let more = other.waves {
            waves = more
            wavesLine = other.wavesLine
        }
        dependencyDeclarations += other.dependencyDeclarations
        inProgressMarks += other.inProgressMarks
        sections += other.sections
    }

    /// " (under "Notes", line 40)" for the heading above `line`, or "" if there is none.
    public func sectionNote(forLine line: Int) -> String {
        var low = 0
        var high = sections.count
        while low < high {
            let mid = (low + high) / 2
            if sections[mid].line < line { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return "" }
        let section = sections[low - 1]
        return " (under \"\(section.title)\", line \(section.line))"
    }
}
