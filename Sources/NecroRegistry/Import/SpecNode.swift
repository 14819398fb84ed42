import Foundation
import NecroCore
import Yams

/// A parsed YAML or JSON document, with the line of each value where the format gives one.
struct SpecNode {
    enum Value {
        /// A YAML plain (unquoted) scalar, kept as written: `1.10` stays `1.10` when read as an id.
        case plain(String)
        case string(String)
        case int(Int)
        case double(Double)
        case bool(Bool)
        case null
        case array([SpecNode])
        case object([(key: String, value: SpecNode)])
    }

    var value: Value
    var line: Int?

    init(value: Value, line: Int?) {
        self.value = value
        self.line = line
    }

    /// What the value is, in the words of an error message.
    var kindName: String {
        switch value {
        case .plain(let s):
            if Self.plainNull(s) { return "null" }
            if Self.plainBool(s) != nil { return "a boolean" }
            if Int(s) != nil || Double(s) != nil { return "a number" }
            return "a string"
        case .string: return "a string"
        case .int, .double: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        case .array: return "a list"
        case .object: return "a mapping"
        }
    }

    static func plainNull(_ s: String) -> Bool { s.isEmpty || s == "~" || s == "null" || s == "Null" || s == "NULL" }

    static func plainBool(_ s: String) -> Bool? {
        switch s {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return nil
        }
    }

    var isNull: Bool {
        switch value {
        case .null: return true
        case .plain(let s): return Self.plainNull(s)
        default: return false
        }
    }

    /// The value as a JSON value, for free-form metadata.
    var json: JSONValue {
        switch value {
        case .plain(let s):
            if Self.plainNull(s) { return .null }
            if let b = Self.plainBool(s) { return .bool(b) }
            if let i = Int(s) { return .int(i) }
            if let d = Double(s) { return .double(d) }
            return .string(s)
        case .string(let s): return .string(s)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .bool(let b): return .bool(b)
        case .null: return .null
        case .array(let a): return .array(a.map(\.json))
        case .object(let o): return .object(Dictionary(o.map { ($0.key, $0.value.json) }, uniquingKeysWith: { _, b in b }))
        }
    }
}

extension SpecNode {
    /// Reads a YAML document; a syntax error comes back as one issue with its line.
    static func parseYAML(_ text: String, file: String) -> Result<SpecNode, SpecIssue> {
        if let read = BlockYAMLParser.parse(text, file: file) { return read }
        return parseYAMLWithLibrary(text, file: file)
    }

    /// Reads a YAML document with the YAML library (Yams), whatever it holds.
    static func parseYAMLWithLibrary(_ text: String, file: String) -> Result<SpecNode, SpecIssue> {
        if let (line, depth) = Self.deepestFlow(text), depth > Self.maximumDepth {
            // The library would follow it until the stack runs out.
            return .failure(SpecIssue(.malformed, at: SourceLocation(file: file, line: line), "malformed YAML: nested more than \(Self.maximumDepth) levels deep"))
        }
        do {
            guard let root = try Yams.compose(yaml: text) else {
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file, line: 1), "the file is empty"))
            }
            // Aliases repeat what they name: a few lines may stand for billions of values ("billion
            // laughs"). No document holds more values than it has bytes, unless aliases multiply them.
            var budget = text.utf8.count + 64
            return .success(try SpecNode(yaml: root, file: file, budget: &budget))
        } catch let error as YamlError {
            switch error {
            case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
                let .composer(context, problem, mark, _):
                let detail = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " ")
                return .failure(
                    SpecIssue(.malformed, at: SourceLocation(file: file, line: mark.line), "malformed YAML: \(detail)"))
            case let .reader(problem, offset, _, _):
                // The offset is in bytes of the text: its line is the newlines before it, plus one.
                let line = offset.map { offset in text.utf8.prefix(offset).reduce(1) { $1 == 10 ? $0 + 1 : $0 } }
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file, line: line ?? 1), "malformed YAML: \(problem)"))
            case let .duplicatedKeysInMapping(duplicates, context):
                return .failure(
                    SpecIssue(
                        .malformed, at: SourceLocation(file: file, line: context.mark.line),
                        "duplicate key \(duplicates.joined(separator: ", ")) in the mapping that starts here"))
            default:
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file), "malformed YAML: \(error)"))
            }
        } catch let issue as SpecIssue {
            return .failure(issue)
        } catch {
            return .failure(SpecIssue(.malformed, at: SourceLocation(file: file), "malformed YAML: \(error)"))
        }
    }

    /// Deeper nesting than any spec needs is refused rather than followed.
    static let maximumDepth = 256

    /// The deepest nesting of flow brackets (`[`, `{`) in a YAML text, and its line; quoted text
    /// and comments skipped. Nil for none.
    static func deepestFlow(_ text: String) -> (line: Int, depth: Int)? {
        var depth = 0
        var deepest: (line: Int, depth: Int)?
        var line = 1
        var quote: UInt8 = 0
        var comment = false
        var previous: UInt8 = 10
        for byte in text.utf8 {
            defer { previous = byte }
            if byte == 10 {
                line += 1
                comment = false
                continue
            }
            if comment { continue }
            if quote != 0 {
                if byte == quote { quote = 0 }
                continue
            }
            switch byte {
            case 34, 39: quote = byte
            case 35 where previous == 32 || previous == 10 || previous == 9: comment = true
            case 91, 123:
                depth += 1
                if depth > (deepest?.depth ?? 0) { deepest = (line, depth) }
            case 93, 125: depth = max(0, depth - 1)
            default: break
            }
        }
        return deepest
    }

    private init(yaml node: Node, file: String, budget: inout Int) throws {
        line = node.mark?.line
        budget -= 1
        guard budget >= 0 else {
            throw SpecIssue(
                .malformed, at: SourceLocation(file: file, line: node.mark?.line),
                "the document stands for more values than it has bytes: its YAML aliases multiply what they name, which specs and configurations never need")
        }
        switch node {
        case .scalar(let scalar):
            value = scalar.style == .plain ? .plain(scalar.string) : .string(scalar.string)
        case .sequence(let sequence):
            var items: [SpecNode] = []
            for child in sequence { items.append(try SpecNode(yaml: child, file: file, budget: &budget)) }
            value = .array(items)
        case .mapping(let mapping):
            var pairs: [(key: String, value: SpecNode)] = []
            var seen: Set<String> = []
            for (key, child) in mapping {
                guard case .scalar(let keyScalar) = key else {
                    throw SpecIssue(.malformed, at: SourceLocation(file: file, line: key.mark?.line), "mapping keys must be plain text")
                }
                guard seen.insert(keyScalar.string).inserted else {
                    throw SpecIssue(.malformed, at: SourceLocation(file: file, line: key.mark?.line), "duplicate key \(keyScalar.string)")
                }
                pairs.append((keyScalar.string, try SpecNode(yaml: child, file: file, budget: &budget)))
            }
            value = .object(pairs)
        case .alias:
            throw SpecIssue(.malformed, at: SourceLocation(file: file, line: node.mark?.line), "YAML aliases are not supported in specs")
        }
    }

    /// Reads a JSON document; a syntax error comes back as one issue with its line and column.
    static func parseJSON(_ data: Data, file: String) -> Result<SpecNode, SpecIssue> {
        JSONSpecParser.parse(data, file: file)
    }

}
