/// A runner command: an argv whose elements may hold placeholders such as `{task.id}`.
///
/// Values are substituted inside single argv elements and never pass through a shell, so a task
/// title such as `x; rm -rf /` stays one harmless argument.
public struct CommandTemplate: Hashable, Sendable {
    public static let placeholders: Set<String> = ["task.id", "task.title", "spec", "slot.path", "runner.id"]

    public var argv: [String]

    public init(_ argv: [String]) { self.argv = argv }

    /// The placeholders used that are not known, in order of appearance.
    public var unknownPlaceholders: [String] {
        placeholderNames.filter { !Self.placeholders.contains($0) }
    }

    /// Every placeholder used, known or not, in order of appearance.
    public var placeholderNames: [String] { argv.flatMap(Self.names(in:)) }

    /// The argv with every known placeholder replaced by its value.
    public func render(_ values: [String: String]) -> [String] {
        argv.map { element in
            var result = ""
            var rest = Substring(element)
            while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
                let name = String(rest[rest.index(after: open)..<close])
                result += rest[..<open]
                if let value = values[name] { result += value } else { result += rest[open...close] }
                rest = rest[rest.index(after: close)...]
            }
            return result + rest
        }
    }

    private static func names(in element: String) -> [String] {
        var names: [String] = []
        var rest = Substring(element)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            names.append(String(rest[rest.index(after: open)..<close]))
            rest = rest[rest.index(after: close)...]
        }
        return names
    }
}
