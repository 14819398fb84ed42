/// Where in a spec file something was written: a line (markdown, YAML) and/or a field path
/// (YAML, JSON), such as `tasks.yaml:14 (tasks[3].dependencies[0])`.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var field: String?

    public init(file: String, line: Int? = nil, field: String? = nil) {
        self.file = file
        self.line = line
        self.field = field
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        if let field { text += line == nil ? ": \(field)" : " (\(field))" }
        return text
    }
}

/// One problem found in a spec or a configuration file.
public struct SpecIssue: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of problem: stable names for scripts and the API.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let duplicateID = Code(rawValue: "duplicate-id")
        public static let unknownDependency = Code(rawValue: "unknown-dependency")
        public static let selfDependency = Code(rawValue: "self-dependency")
        public static let dependencyCycle = Code(rawValue: "dependency-cycle")
        public static let unknownParent = Code(rawValue: "unknown-parent")
        public static let malformed = Code(rawValue: "malformed")
        public static let wrongType = Code(rawValue: "wrong-type")
        public static let missingField = Code(rawValue: "missing-field")
        public static let unknownField = Code(rawValue: "unknown-field")
        public static let invalidValue = Code(rawValue: "invalid-value")
        public static let unreadable = Code(rawValue: "unreadable")
        /// A file without a single task.
        public static let noTasks = Code(rawValue: "no-tasks")
        /// A line that could be read more than one way.
        public static let ambiguous = Code(rawValue: "ambiguous")
        /// A checklist outside the task list (under a heading such as "Notes"): not tasks.
        public static let ignoredChecklist = Code(rawValue: "ignored-checklist")
    }

    /// An error fails validation; a warning is reported the same way and does not.
    public enum Severity: String, Hashable, Sendable {
        case error, warning
    }

    public var code: Code
    public var location: SourceLocation
    public var message: String
    public var severity: Severity

    public init(_ code: Code, at location: SourceLocation, _ message: String, severity: Severity = .error) {
        self.code = code
        self.location = location
        self.message = message
        self.severity = severity
    }

    public static func warning(_ code: Code, at location: SourceLocation, _ message: String) -> SpecIssue {
        SpecIssue(code, at: location, message, severity: .warning)
    }

    public var isWarning: Bool { severity == .warning }

    public var description: String { "\(location): \(severity.rawValue): \(message) [\(code)]" }
}

/// Every problem of one file, reported together.
public struct SpecValidationError: Error, Sendable, CustomStringConvertible {
    public var issues: [SpecIssue]
    /// What would only have been warned about, had the spec been valid.
    public var warnings: [SpecIssue]

    public init(issues: [SpecIssue], warnings: [SpecIssue] = []) {
        self.issues = issues
        self.warnings = warnings
    }

    public var description: String {
        issues.map(\.description).joined(separator: "\n")
    }
}

extension SpecIssue {
    /// The issue as JSON: its file, line and field (null where unknown), code, message, and the
    /// line a compiler would print.
    public var json: JSONValue {
        .object([
            "file": .string(location.file), "line": location.line.map { JSONValue.int($0) } ?? .null,
            "field": location.field.map { JSONValue.string($0) } ?? .null, "code": .string(code.rawValue),
            "message": .string(message), "description": .string(description),
        ])
    }
}
