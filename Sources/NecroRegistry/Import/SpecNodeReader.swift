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

    mutating func number(_ node: SpecNode, _ path: @autoclosure () -> String) -> Double? {
        switch node.value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .plain(let s) where Double(s) != nil: return Double(s)
        default:
            fail(.wrongType, node, path(), "expected a number, found \(node.kindName)")
            return nil
        }
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

    /// Seconds, from a number or a duration such as `30m`.
    mutating func duration(_ node: SpecNode, _ path: @autoclosure () -> String) -> Duration? {
        switch node.value {
        case .int(let i) where i >= 0: return .seconds(i)
        case .double(let d) where d >= 0: return .milliseconds(Int64(d * 1000))
        case .plain(let text), .string(let text):
            if let d = Double(text), d >= 0 { return .milliseconds(Int64(d * 1000)) }
            if let seconds = DurationText.seconds(text) { return .seconds(seconds) }
            fail(.invalidValue, node, path(), "expected seconds or a duration such as 30s, 5m or 1h, found \"\(text)\"")
            return nil
        default:
            fail(.wrongType, node, path(), "expected seconds or a duration such as 30s, 5m or 1h, found \(node.kindName)")
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
