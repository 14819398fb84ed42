/// The identifier of a task inside its taskset, such as `1.2` or `auth-3`.
///
/// Ordered naturally: numeric components compare as numbers, so `1.2 < 1.10`.
public struct TaskID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible,
    ExpressibleByStringLiteral
{
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// Why `text` cannot be a task id, or nil if it can: ids name branches, files and API paths,
    /// so no whitespace, control character or comma, and no leading `-` (read as an option).
    public static func problem(_ text: String) -> String? {
        if text.isEmpty { return "a task id must not be empty" }
        if text.hasPrefix("-") { return "a task id must not start with '-', found \"\(text)\"" }
        for scalar in text.unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7f || scalar == " " || scalar == "," {
            let shown = scalar == " " ? "a space" : scalar == "," ? "a comma" : "a control character (U+\(String(scalar.value, radix: 16, uppercase: true)))"
            return "a task id must not hold \(shown)"
        }
        return nil
    }

    /// The id of the enclosing group by naming convention (`2.1` → `2`), if the id is dotted.
    public var dottedParent: TaskID? {
        let bytes = rawValue.utf8
        var lastDot: String.Index?
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == 46 { lastDot = index }
            index = bytes.index(after: index)
        }
        guard let dot = lastDot, dot != rawValue.startIndex else { return nil }
        return TaskID(String(rawValue[..<dot]))
    }

    public static func < (lhs: TaskID, rhs: TaskID) -> Bool {
        var left = lhs.rawValue.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
            .makeIterator()
        var right = rhs.rawValue.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
            .makeIterator()
        while true {
            switch (left.next(), right.next()) {
            case (nil, nil): return false
            case (nil, _): return true
            case (_, nil): return false
            case let (l?, r?):
                if let a = Int(Substring(l)), let b = Int(Substring(r)) {
                    if a != b { return a < b }
                } else {
                    let a = String(Substring(l)), b = String(Substring(r))
                    if a != b { return a < b }
                }
            }
        }
    }
}
