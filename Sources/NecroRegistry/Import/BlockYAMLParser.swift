import NecroCore

/// Reads the plain block YAML that specs are written in — mappings and sequences by indentation,
/// plain and quoted scalars, one-line flow collections — straight into `SpecNode`s, in one pass over
/// the lines. Anything else (anchors, tags, block scalars, multi-line scalars or flows, documents
/// markers past the first, tabs in indentation, anything it cannot read) makes it give up with
/// nil, and the full YAML library reads the file instead: the two agree on everything this reads
/// (a test compares them).
///
/// The library took nineteen times as long as markdown on the same tasks.
struct BlockYAMLParser {
    private struct Line {
        var indent: Int
        /// The content: from after the indentation to the end, without a trailing `\r`.
        var start: Int
        var end: Int
        var number: Int
    }

    /// Gives up: the library reads the file.
    private struct Unsupported: Error {}

    private let bytes: [UInt8]
    private let file: String
    private var lines: [Line] = []
    private var k = 0
    /// How many blocks the one being read is inside.
    private var nesting = 0

    private init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    /// The document, a problem the library would report the same way (a repeated key), or nil when
    /// the file is not in the subset this reads.
    static func parse(_ text: String, file: String) -> Result<SpecNode, SpecIssue>? {
        var parser = BlockYAMLParser(bytes: Array(text.utf8), file: file)
        do {
            guard try parser.splitLines(), !parser.lines.isEmpty else { return nil }
            let root = try parser.block(indent: parser.lines[0].indent)
            guard parser.k == parser.lines.count else { return nil }
            return .success(root)
        } catch let issue as SpecIssue {
            return .failure(issue)
        } catch {
            return nil
        }
    }

    // MARK: Lines

    /// The lines with content, comments and blank lines left out. False if the file has what this
    /// does not read at the level of lines.
    private mutating func splitLines() throws -> Bool {
        var start = 0
        var number = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != 10 { end += 1 }
            number += 1
            var lineEnd = end
            if lineEnd > start, bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
            var i = start
            while i < lineEnd, bytes[i] == 32 { i += 1 }
            if i < lineEnd, bytes[i] == 9 { return false }  // a tab in the indentation
            var contentEnd = lineEnd
            while contentEnd > i, bytes[contentEnd - 1] == 32 || bytes[contentEnd - 1] == 9 { contentEnd -= 1 }
            if i < contentEnd, bytes[i] != 35 {  // not blank, not a comment
                if i == start, contentEnd - i >= 3, bytes[i] == 45 || bytes[i] == 46, bytes[i + 1] == bytes[i], bytes[i + 2] == bytes[i],
                    contentEnd - i == 3 || bytes[i + 3] == 32
                {
                    // "---" may open the first document; anything more is for the library.
                    guard bytes[i] == 45, lines.isEmpty, contentEnd - i == 3 else { return false }
                } else if i == start, bytes[i] == 37 {  // a directive
                    return false
                } else {
                    lines.append(Line(indent: i - start, start: i, end: contentEnd, number: number))
                }
            }
            start = end + 1
        }
        return true
    }

    private func isDash(_ line: Line) -> Bool {
        bytes[line.start] == 45 && (line.end == line.start + 1 || bytes[line.start + 1] == 32)
    }

    // MARK: Block

    private mutating func block(indent: Int) throws -> SpecNode {
        guard k < lines.count, lines[k].indent == indent else { throw Unsupported() }
        nesting += 1
        defer { nesting -= 1 }
        if nesting > SpecNode.maximumDepth {
            throw SpecIssue(
                .malformed, at: SourceLocation(file: file, line: lines[k].number), "malformed YAML: nested more than \(SpecNode.maximumDepth) levels deep")
        }
        return isDash(lines[k]) ? try sequence(indent: indent) : try mapping(indent: indent)
    }

    private mutating func sequence(indent: Int) throws -> SpecNode {
        let first = lines[k].number
        var items: [SpecNode] = []
        while k < lines.count, lines[k].indent == indent, isDash(lines[k]) {
            var content = lines[k].start + 1
            while content < lines[k].end, bytes[content] == 32 { content += 1 }
            if content == lines[k].end {
                // "-" alone: the item is on the lines below, or null.
                let line = lines[k].number
                k += 1
                if k < lines.count, lines[k].indent > indent {
                    items.append(try block(indent: lines[k].indent))
                } else {
                    items.append(SpecNode(value: .plain(""), line: line))
                }
                continue
            }
            // The rest of the line is a node of its own, indented where it starts.
            lines[k] = Line(indent: content - lines[k].start + lines[k].indent, start: content, end: lines[k].end, number: lines[k].number)
            if isDash(lines[k]) || keyEnd(lines[k]) != nil {
                items.append(try block(indent: lines[k].indent))
            } else {
                items.append(try inlineValue(lines[k], from: content))
                k += 1
                if k < lines.count, lines[k].indent > indent { throw Unsupported() }  // a scalar going on below
            }
        }
        if k < lines.count, lines[k].indent > indent { throw Unsupported() }
        return SpecNode(value: .array(items), line: first)
    }

    /// Where a line's key ends (the `:` that ends it), if the line is `key: …` or `key:`.
    private func keyEnd(_ line: Line) -> Int? {
        var i = line.start
        let first = bytes[i]
        if first == 34 || first == 39 {  // a quoted key
            guard let close = closingQuote(from: i, to: line.end) else { return nil }
            i = close + 1
            while i < line.end, bytes[i] == 32 { i += 1 }
            return i < line.end && bytes[i] == 58 && (i + 1 == line.end || bytes[i + 1] == 32) ? i : nil
        }
        guard !Self.startsSpecially(first) else { return nil }
        while i < line.end {
            if bytes[i] == 58, i + 1 == line.end || bytes[i + 1] == 32 { return i }
            if bytes[i] == 35, i > line.start, bytes[i - 1] == 32 { return nil }  // a comment before any ':'
            i += 1
        }
        return nil
    }

    /// Characters that make a plain key or scalar something else in YAML.
    private static func startsSpecially(_ byte: UInt8) -> Bool {
        switch byte {
        case 63, 38, 42, 33, 124, 62, 37, 64, 96, 91, 93, 123, 125, 44, 35: return true  // ? & * ! | > % @ ` [ ] { } , #
        default: return false
        }
    }

    private mutating func mapping(indent: Int) throws -> SpecNode {
        let first = lines[k].number
        var pairs: [(key: String, value: SpecNode)] = []
        var names: Set<String> = []
        while k < lines.count, lines[k].indent == indent, !isDash(lines[k]) {
            let line = lines[k]
            guard let colon = keyEnd(line) else { throw Unsupported() }
            let key: String
            if bytes[line.start] == 34 || bytes[line.start] == 39 {
                guard let close = closingQuote(from: line.start, to: line.end) else { throw Unsupported() }
                key = try quoted(from: line.start, close: close)
            } else {
                var end = colon
                while end > line.start, bytes[end - 1] == 32 { end -= 1 }
                key = String(decoding: bytes[line.start..<end], as: UTF8.self)
            }
            guard names.insert(key).inserted else {
                throw SpecIssue(.malformed, at: SourceLocation(file: file, line: line.number), "duplicate key \(key)")
            }
            var value = colon + 1
            while value < line.end, bytes[value] == 32 { value += 1 }
            let node: SpecNode
            if value == line.end || bytes[value] == 35 {
                k += 1
                if k < lines.count, lines[k].indent > indent {
                    node = try block(indent: lines[k].indent)
                } else if k < lines.count, lines[k].indent == indent, isDash(lines[k]) {
                    node = try sequence(indent: indent)  // "key:" over "- item" at the key's indentation
                } else {
                    node = SpecNode(value: .plain(""), line: line.number)
                }
            } else {
                node = try inlineValue(line, from: value)
                k += 1
                if k < lines.count, lines[k].indent > indent { throw Unsupported() }  // a scalar going on below
            }
            pairs.append((key, node))
        }
        if k < lines.count, lines[k].indent > indent { throw Unsupported() }
        return SpecNode(value: .object(pairs), line: first)
    }

    // MARK: Values on one line

    /// A scalar or a flow collection that ends on this line (a comment may follow).
    private func inlineValue(_ line: Line, from start: Int) throws -> SpecNode {
        var i = start
        let node = try flowNode(&i, end: line.end, line: line.number, inFlow: false)
        while i < line.end, bytes[i] == 32 { i += 1 }
        guard i == line.end || (bytes[i] == 35 && bytes[i - 1] == 32) else { throw Unsupported() }
        return node
    }

    private func flowNode(_ i: inout Int, end: Int, line: Int, inFlow: Bool, depth: Int = 0) throws -> SpecNode {
        guard i < end else { throw Unsupported() }
        if depth > SpecNode.maximumDepth {
            throw SpecIssue(.malformed, at: SourceLocation(file: file, line: line), "malformed YAML: nested more than \(SpecNode.maximumDepth) levels deep")
        }
        switch bytes[i] {
        case 34, 39:
            guard let close = closingQuote(from: i, to: end) else { throw Unsupported() }
            let text = try quoted(from: i, close: close)
            i = close + 1
            return SpecNode(value: .string(text), line: line)
        case 91:  // [
            i += 1
            var items: [SpecNode] = []
            skipSpaces(&i, end)
            if i < end, bytes[i] == 93 {
                i += 1
                return SpecNode(value: .array(items), line: line)
            }
            while true {
                items.append(try flowNode(&i, end: end, line: line, inFlow: true, depth: depth + 1))
                skipSpaces(&i, end)
                guard i < end else { throw Unsupported() }
                if bytes[i] == 93 {
                    i += 1
                    return SpecNode(value: .array(items), line: line)
                }
                guard bytes[i] == 44 else { throw Unsupported() }
                i += 1
                skipSpaces(&i, end)
            }
        case 123:  // {
            i += 1
            var pairs: [(key: String, value: SpecNode)] = []
            var names: Set<String> = []
            skipSpaces(&i, end)
            if i < end, bytes[i] == 125 {
                i += 1
                return SpecNode(value: .object(pairs), line: line)
            }
            while true {
                let keyNode = try flowNode(&i, end: end, line: line, inFlow: true, depth: depth + 1)
                let key: String
                switch keyNode.value {
                case .plain(let text), .string(let text): key = text
                default: throw Unsupported()
                }
                skipSpaces(&i, end)
                guard i < end, bytes[i] == 58 else { throw Unsupported() }
                i += 1
                skipSpaces(&i, end)
                guard names.insert(key).inserted else {
                    throw SpecIssue(.malformed, at: SourceLocation(file: file, line: line), "duplicate key \(key)")
                }
                pairs.append((key, try flowNode(&i, end: end, line: line, inFlow: true, depth: depth + 1)))
                skipSpaces(&i, end)
                guard i < end else { throw Unsupported() }
                if bytes[i] == 125 {
                    i += 1
                    return SpecNode(value: .object(pairs), line: line)
                }
                guard bytes[i] == 44 else { throw Unsupported() }
                i += 1
                skipSpaces(&i, end)
            }
        default:
            guard !Self.startsSpecially(bytes[i]), !(bytes[i] == 45 && i + 1 < end && bytes[i + 1] == 32) else { throw Unsupported() }
            let start = i
            while i < end {
                let byte = bytes[i]
                if byte == 35, bytes[i - 1] == 32 { break }  // a comment
                if byte == 58, i + 1 == end || bytes[i + 1] == 32 || (inFlow && (bytes[i + 1] == 44 || bytes[i + 1] == 93 || bytes[i + 1] == 125)) {
                    if inFlow { break }  // a flow mapping's key
                    throw Unsupported()  // "a: b: c": for the library to judge
                }
                if inFlow, byte == 44 || byte == 93 || byte == 125 || byte == 91 || byte == 123 { break }
                i += 1
            }
            var last = i
            while last > start, bytes[last - 1] == 32 { last -= 1 }
            guard last > start else { throw Unsupported() }
            return SpecNode(value: .plain(String(decoding: bytes[start..<last], as: UTF8.self)), line: line)
        }
    }

    private func skipSpaces(_ i: inout Int, _ end: Int) {
        while i < end, bytes[i] == 32 { i += 1 }
    }

    /// The closing quote of a quoted scalar opening at `start`, on the same line.
    private func closingQuote(from start: Int, to end: Int) -> Int? {
        let quote = bytes[start]
        var i = start + 1
        while i < end {
            if quote == 34, bytes[i] == 92 {
                i += 2
                continue
            }
            if bytes[i] == quote {
                if quote == 39, i + 1 < end, bytes[i + 1] == 39 {  // '' inside single quotes
                    i += 2
                    continue
                }
                return i
            }
            i += 1
        }
        return nil
    }

    /// The text of a quoted scalar: `''` in single quotes, the common escapes in double quotes.
    private func quoted(from start: Int, close: Int) throws -> String {
        let quote = bytes[start]
        var out: [UInt8] = []
        out.reserveCapacity(close - start)
        var i = start + 1
        while i < close {
            let byte = bytes[i]
            if quote == 39 {
                out.append(byte)
                i += byte == 39 ? 2 : 1
                continue
            }
            guard byte == 92 else {
                out.append(byte)
                i += 1
                continue
            }
            let escape = bytes[i + 1]
            i += 2
            if let byte = JSONSpecParser.escaped(escape) {
                out.append(byte)
                continue
            }
            switch escape {
            case 48: out.append(0)
            case 117:
                guard i + 4 <= close, let code = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16),
                    let scalar = Unicode.Scalar(code)
                else { throw Unsupported() }
                out.append(contentsOf: String(Character(scalar)).utf8)
                i += 4
            default: throw Unsupported()
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
