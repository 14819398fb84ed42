public import Foundation
public import NecroCore

/// Reads JSON straight into `SpecNode`s, in one pass over the bytes: the line of every value (so
/// that problems found later point at it), keys in the order written, a repeated key refused as
/// YAML refuses it, and nesting bounded.
///
/// A generic decoder built a dictionary per object and then a node per value: a spec of a
/// hundred thousand tasks took twenty times as long as the same tasks in markdown.
struct JSONSpecParser {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    /// Deeper nesting than any spec needs is refused rather than followed (each level is a frame
    /// of the stack).
    static let maximumDepth = 256

    private let bytes: Bytes
    private let file: String
    private var i = 0
    private var line = 1
    private var lineStart = 0
    private var depth = 0

    private init(bytes: Bytes, file: String) {
        self.bytes = bytes
        self.file = file
    }

    static func parse(_ data: Data, file: String) -> Result<SpecNode, SpecIssue> {
        data.withUnsafeBytes { raw in
            var parser = JSONSpecParser(bytes: raw.bindMemory(to: UInt8.self), file: file)
            do throws {
                parser.skipSpace()
                guard parser.i < parser.bytes.count else { throw parser.error("the file is empty") }
                let root = try parser.parseValue()
                parser.skipSpace()
                guard parser.i == parser.bytes.count else { throw parser.error("unexpected text after the JSON value") }
                return .success(root)
            } catch let issue as SpecIssue {
                return .failure(issue)
            } catch {
                return .failure(SpecIssue(.malformed, at: SourceLocation(file: file), "malformed JSON: \(error)"))
            }
        }
    }

    private func error(_ message: String) -> SpecIssue {
        SpecIssue(.malformed, at: SourceLocation(file: file, line: line), "malformed JSON: \(message) at column \(i - lineStart + 1)")
    }

    private mutating func skipSpace() {
        while i < bytes.count {
            switch bytes[i] {
            case 32, 9, 13: i += 1
            case 10:
                i += 1
                line += 1
                lineStart = i
            default: return
            }
        }
    }

    private mutating func parseValue() throws -> SpecNode {
        let at = line
        switch bytes[i] {
        case 123: return SpecNode(value: try parseObject(), line: at)  // {
        case 91: return SpecNode(value: try parseArray(), line: at)  // [
        case 34: return SpecNode(value: .string(try parseString()), line: at)  // "
        case 116: return SpecNode(value: try literal("true", .bool(true)), line: at)
        case 102: return SpecNode(value: try literal("false", .bool(false)), line: at)
        case 110: return SpecNode(value: try literal("null", .null), line: at)
        case 45, 48...57: return SpecNode(value: try parseNumber(), line: at)
        default: throw error("expected a value")
        }
    }

    private mutating func nest() throws {
        depth += 1
        if depth > Self.maximumDepth { throw error("nested more than \(Self.maximumDepth) levels deep") }
    }

    private mutating func parseObject() throws -> SpecNode.Value {
        try nest()
        defer { depth -= 1 }
        i += 1
        var pairs: [(key: String, value: SpecNode)] = []
        var names: [String] = []
        var keys: Set<String>?
        skipSpace()
        if i < bytes.count, bytes[i] == 125 {
            i += 1
            return .object(pairs)
        }
        while true {
            skipSpace()
            guard i < bytes.count, bytes[i] == 34 else { throw error("expected a key in double quotes") }
            let keyLine = line
            let key = try parseString()
            // A few keys are the rule: a scan of them beats a set until there are many.
            // (The keys are kept apart: reading them back from `pairs` here trips the compiler.)
            let repeated: Bool
            if names.count < 16 {
                repeated = names.contains(key)
            } else {
                if keys == nil { keys = Set(names) }
                repeated = !keys!.insert(key).inserted
            }
            names.append(key)
            if repeated {
                throw SpecIssue(.malformed, at: SourceLocation(file: file, line: keyLine), "malformed JSON: duplicate key \(key)")
            }
            skipSpace()
            guard i < bytes.count, bytes[i] == 58 else { throw error("expected ':' after the key") }
            i += 1
            skipSpace()
            guard i < bytes.count else { throw error("expected a value") }
            let child = try parseValue()
            pairs.append((key: key, value: child))
            skipSpace()
            guard i < bytes.count else { throw error("expected ',' or '}'") }
            if bytes[i] == 44 {
                i += 1
            } else if bytes[i] == 125 {
                i += 1
                return .object(pairs)
            } else {
                throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray() throws -> SpecNode.Value {
        try nest()
        defer { depth -= 1 }
        i += 1
        var items: [SpecNode] = []
        skipSpace()
        if i < bytes.count, bytes[i] == 93 {
            i += 1
            return .array(items)
        }
        while true {
            skipSpace()
            guard i < bytes.count else { throw error("expected a value") }
            items.append(try parseValue())
            skipSpace()
            guard i < bytes.count else { throw error("expected ',' or ']'") }
            if bytes[i] == 44 {
                i += 1
            } else if bytes[i] == 93 {
                i += 1
                return .array(items)
            } else {
                throw error("expected ',' or ']'")
            }
        }
    }

    private mutating func literal(_ word: StaticString, _ value: SpecNode.Value) throws -> SpecNode.Value {
        let count = word.utf8CodeUnitCount
        guard i + count <= bytes.count, memcmp(bytes.baseAddress! + i, word.utf8Start, count) == 0 else {
            throw error("expected a value")
        }
        i += count
        return value
    }

    private mutating func parseNumber() throws -> SpecNode.Value {
        let start = i
        if bytes[i] == 45 { i += 1 }
        let digits = i
        while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 { i += 1 }
        guard i > digits, !(bytes[digits] == 48 && i - digits > 1) else { throw error("malformed number") }
        var integral = true
        if i < bytes.count, bytes[i] == 46 {
            integral = false
            i += 1
            let fraction = i
            while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 { i += 1 }
            guard i > fraction else { throw error("malformed number") }
        }
        if i < bytes.count, bytes[i] == 101 || bytes[i] == 69 {
            integral = false
            i += 1
            if i < bytes.count, bytes[i] == 43 || bytes[i] == 45 { i += 1 }
            let exponent = i
            while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 { i += 1 }
            guard i > exponent else { throw error("malformed number") }
        }
        let text = String(decoding: Bytes(rebasing: bytes[start..<i]), as: UTF8.self)
        if integral, let int = Int(text) { return .int(int) }
        guard let double = Double(text) else { throw error("malformed number") }
        return .double(double)
    }

    private mutating func parseString() throws -> String {
        i += 1
        let start = i
        // Most strings have no escape: taken as they are.
        while i < bytes.count, bytes[i] != 34, bytes[i] != 92, bytes[i] >= 32 { i += 1 }
        guard i < bytes.count else { throw error("a string is never closed") }
        if bytes[i] == 34 {
            i += 1
            return String(decoding: Bytes(rebasing: bytes[start..<i - 1]), as: UTF8.self)
        }
        var scalars = [UInt8](Bytes(rebasing: bytes[start..<i]))
        while true {
            guard i < bytes.count else { throw error("a string is never closed") }
            let byte = bytes[i]
            if byte == 34 {
                i += 1
                return String(decoding: scalars, as: UTF8.self)
            }
            if byte < 32 { throw error("a control character in a string (write it as an escape such as \\n)") }
            if byte != 92 {
                scalars.append(byte)
                i += 1
                continue
            }
            i += 1
            guard i < bytes.count else { throw error("a string is never closed") }
            let escape = bytes[i]
            i += 1
            if let byte = Self.escaped(escape) {
                scalars.append(byte)
                continue
            }
            switch escape {
            case 117:
                var code = try hex4()
                if code >= 0xD800, code < 0xDC00 {
                    guard i + 1 < bytes.count, bytes[i] == 92, bytes[i + 1] == 117 else { throw error("a lone surrogate in a \\u escape") }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00, low < 0xE000 else { throw error("a lone surrogate in a \\u escape") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if code >= 0xDC00, code < 0xE000 {
                    throw error("a lone surrogate in a \\u escape")
                }
                scalars.append(contentsOf: String(Character(Unicode.Scalar(code)!)).utf8)
            default:
                throw error("an unknown escape \\\(String(UnicodeScalar(escape)))")
            }
        }
    }

    /// The byte a one-character escape stands for (`\n` → 10): those JSON and YAML share.
    static func escaped(_ escape: UInt8) -> UInt8? {
        switch escape {
        case 34, 92, 47: return escape
        case 98: return 8
        case 102: return 12
        case 110: return 10
        case 114: return 13
        case 116: return 9
        default: return nil
        }
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw error("a \\u escape needs four hex digits") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[i]
            let digit: UInt32
            switch byte {
            case 48...57: digit = UInt32(byte - 48)
            case 97...102: digit = UInt32(byte - 87)
            case 65...70: digit = UInt32(byte - 55)
            default: throw error("a \\u escape needs four hex digits")
            }
            code = code << 4 | digit
            i += 1
        }
        return code
    }
}

/// JSON as the API takes it: what a generic decoder lets through and a spec would not (a key
/// given twice, nesting past the bound) is refused, with its line.
public enum StrictJSON {
    /// The first problem of `data` as JSON, nil if it has none.
    public static func problem(in data: Data, named name: String) -> SpecIssue? {
        if case .failure(let issue) = JSONSpecParser.parse(data, file: name) { return issue }
        return nil
    }
}

/// A JSON text read into a `JSONValue` with this package's own parser (no Foundation decoder: what
/// `necro runner` reads its context with, at each start).
public enum JSONDocument {
    /// The value, or why the text is not JSON.
    public static func parse(_ text: String) -> Result<JSONValue, SpecIssue> {
        JSONSpecParser.parse(Data(text.utf8), file: "JSON").map(\.json)
    }
}
