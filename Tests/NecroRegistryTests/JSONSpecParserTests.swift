import Foundation
import NecroCore
import Testing

@testable import NecroRegistry

private func parse(_ text: String) -> Result<SpecNode, SpecIssue> { JSONSpecParser.parse(Data(text.utf8), file: "t.json") }

private func failure(_ text: String) -> SpecIssue? {
    if case .failure(let issue) = parse(text) { return issue }
    return nil
}

@Suite struct JSONSpecParserTests {
    @Test func valuesKeepTheirLinesTheirOrderAndTheirEscapes() throws {
        let root = try parse("{\n  \"b\": [1, -2.5e1, true, null],\n  \"a\": \"x\\\"\\n\\u00e9\\ud83d\\ude00\"\n}").get()
        guard case .object(let pairs) = root.value else { Issue.record("an object"); return }
        #expect(pairs.map(\.key) == ["b", "a"], "in the order written")
        #expect(pairs.map(\.value.line) == [2, 3])
        guard case .string(let text) = pairs[1].value.value, case .array(let items) = pairs[0].value.value else { Issue.record("shapes"); return }
        #expect(text == "x\"\né😀")
        #expect(items.map(\.json) == [.int(1), .double(-25), .bool(true), .null])
    }

    @Test func aRepeatedKeyIsRefusedWithItsLine() {
        let issue = failure("{\"spec_name\": \"a\",\n \"spec_name\": \"b\"}")
        #expect(issue?.location.line == 2)
        #expect(issue?.message == "malformed JSON: duplicate key spec_name")
        var many = (0..<40).map { "\"k\($0)\": \($0)" }
        many.append("\"k7\": 0")
        #expect(failure("{" + many.joined(separator: ", ") + "}")?.message == "malformed JSON: duplicate key k7", "also past the small-object scan")
    }

    @Test func malformedInputIsLocatedAndNeverFollowedTooDeep() {
        #expect(failure("{\"a\": 01}")?.message.contains("malformed number") == true)
        #expect(failure("{\"a\": \"x}")?.message.contains("never closed") == true)
        #expect(failure("[1, 2] 3")?.message.contains("unexpected text after the JSON value at column 8") == true)
        #expect(failure("")?.message.contains("empty") == true)
        #expect(failure("{\"a\": \"\\q\"}")?.message.contains("unknown escape") == true)
        #expect(failure("{\"a\": \"\\ud800\"}")?.message.contains("surrogate") == true)
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(failure(deep)?.message.contains("nested more than 256 levels") == true, "refused, not a stack overflow")
        #expect(failure("{\"a\": tru}")?.location.line == 1)
    }
}
