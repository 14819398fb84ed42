import NecroCore

/// Typed reads of a parsed YAML or JSON document: each reports a wrong type, with the field path and
/// line, and returns nil. Shared by the spec and the configuration decoders.
struct SpecNodeReader {
    let file: String
    private(set) var issues: [SpecIssue] = []

    init(file: String) { self.file = file }

    /// Paths are built only for a problem: a large spec has millions of fields that have none.
    mutating func fail(_ code: SpecIssue.Code, _ node: SpecNode, _ path: @autoclosure () -> String, _ message: String) {
        let path = path()
        issues.append(SpecIssue(code, at: SourceLocation(file: file, line: node.line, field: path.isEmpty ? nil : path), message))
    }

    mutating func string(_ node: SpecNode, _ path: @autoclosure () -> String) -> String? {
        switch node.value {
        case .string(let s): return s
        case .plain(let s) where !SpecNode.plainNull(s): return s
        default:
            fail(.wrongType, node, path(), "expected a string, found \(node.kindName)")
            return nil
        }
    }

    /// A task id: a string, or an integer (which cannot be misread); `1.10` as a number would be
    /// `1.1`, so other numbers must be quoted.
    mutating func identifier(_ node: SpecNode, _ path: @autoclosure () -> String) -> String? {
        switch node.value {
        case .int(let i): return String(i)
        case .double:
            fail(.wrongType, node, path(), "expected a task id as a string; quote ids such as \"1.10\" so they keep their digits")
            return nil
        default: return string(node, path())
        }
    }

    mutating func integer(_ node: SpecNode, _ path: @autoclosure () -> String) -> Int? {
        switch node.value {
        case .int(let i): return i
        case .plain(let s) where Int(s) != nil: return Int(s)
        default:
            fail(.wrongType, node, path(), "expected an integer, found \(node.kindName)")
            return nil
        }
    }

    /// A finite number: infinity and NaN (`.inf`, `1e400`) are refused where they are written.
    mutating func number(_ node: SpecNode, _ path: @autoclosure () -> String) -> Double? {
        let value: Double?
        switch node.value {
        case .int(let i): value = Double(i)
        case .double(let d): value = d
        case .plain(let s): value = Double(s)
        default: value = nil
        }
        guard let value else {
            fail(.wrongType, node, path(), "expected a number, found \(node.kindName)")
            return nil
        }
        guard value.isFinite else {
            fail(.invalidValue, node, path(), "expected a finite number, found \(value)")
            return nil
        }
        return value
    }

    mutating func boolean(_ node: SpecNode, _ path: @autoclosure () -> String) -> Bool? {
        switch node.value {
        case .bool(let b): return b
        case .plain(let s) where SpecNode.plainBool(s) != nil: return SpecNode.plainBool(s)
        default:
            fail(.wrongType, node, path(), "expected true or false, found \(node.kindName)")
            return nil
        }
    }

    mutating func list(_ node: SpecNode, _ path: @autoclosure () -> String) -> [SpecNode] {
        if case .array(let items) = node.value { return items }
        fail(.wrongType, node, path(), "expected a list, found \(node.kindName)")
        return []
    }

    /// Seconds, from a number or a duration such as `30m`, from 0 to ten years (a number out of
    /// range, infinite or not a number is a located error, never a trap).
    mutating func duration(_ node: SpecNode, _ path: @autoclosure () -> String) -> Duration? {
        let expected = "expected seconds (0 to \(DurationText.maximumSeconds)) or a duration such as 30s, 5m or 1h"
        func seconds(_ d: Double) -> Duration? {
            d.isFinite && d >= 0 && d <= Double(DurationText.maximumSeconds) ? .milliseconds(Int64(d * 1000)) : nil
        }
        switch node.value {
        case .int(let i) where i >= 0 && i <= DurationText.maximumSeconds: return .seconds(i)
        case .double(let d) where seconds(d) != nil: return seconds(d)
        case .int(let i):
            fail(.invalidValue, node, path(), "\(expected), found \(i)")
            return nil
        case .double(let d):
            fail(.invalidValue, node, path(), "\(expected), found \(d)")
            return nil
        case .plain(let text), .string(let text):
            if let d = Double(text), let duration = seconds(d) { return duration }
            if let whole = DurationText.seconds(text) { return .seconds(whole) }
            fail(.invalidValue, node, path(), "\(expected), found \"\(text)\"")
            return nil
        default:
            fail(.wrongType, node, path(), "\(expected), found \(node.kindName)")
            return nil
        }
    }

    /// The pairs of a mapping, or nil (reported) if the node is something else.
    mutating func mapping(_ node: SpecNode, _ path: @autoclosure () -> String) -> [(key: String, value: SpecNode)]? {
        if case .object(let fields) = node.value { return fields }
        fail(.wrongType, node, path(), "expected a mapping, found \(node.kindName)")
        return nil
    }
}
