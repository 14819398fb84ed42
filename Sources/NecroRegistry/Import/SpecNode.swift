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
        do {
            guard let root = try Yams.compose(yaml: text) else {
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file, line: 1), "the file is empty"))
            }
            return .success(try SpecNode(yaml: root, file: file))
        } catch let error as YamlError {
            switch error {
            case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _):
                let detail = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " ")
                return .failure(
                    SpecIssue(.malformed, at: SourceLocation(file: file, line: mark.line), "malformed YAML: \(detail)"))
            default:
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file), "malformed YAML: \(error)"))
            }
        } catch let issue as SpecIssue {
            return .failure(issue)
        } catch {
            return .failure(SpecIssue(.malformed, at: SourceLocation(file: file), "malformed YAML: \(error)"))
        }
    }

    private init(yaml node: Node, file: String) throws {
        line = node.mark?.line
        switch node {
        case .scalar(let scalar):
            value = scalar.style == .plain ? .plain(scalar.string) : .string(scalar.string)
        case .sequence(let sequence):
            value = .array(try sequence.map { try SpecNode(yaml: $0, file: file) })
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
                pairs.append((keyScalar.string, try SpecNode(yaml: child, file: file)))
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
