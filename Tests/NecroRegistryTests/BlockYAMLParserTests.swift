import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

/// A node as text, lines included, to compare two readings.
private func dump(_ node: SpecNode) -> String {
    let line = node.line.map(String.init) ?? "-"
    switch node.value {
    case .plain(let s): return "\(line):plain(\(s))"
    case .string(let s): return "\(line):string(\(s))"
    case .int(let i): return "\(line):int(\(i))"
    case .double(let d): return "\(line):double(\(d))"
    case .bool(let b): return "\(line):bool(\(b))"
    case .null: return "\(line):null"
    case .array(let items): return "\(line):[" + items.map(dump).joined(separator: ", ") + "]"
    case .object(let pairs): return "\(line):{" + pairs.map { "\($0.key)=\(dump($0.value))" }.joined(separator: ", ") + "}"
    }
}

private func dump(_ result: Result<SpecNode, SpecIssue>) -> String {
    switch result {
    case .success(let node): return dump(node)
    case .failure(let issue): return "issue \(issue)"
    }
}

/// Texts in the subset the fast reader takes, and texts it must leave to the library.
private let readHere = [
    "spec_name: s\ntasks:\n  - id: \"1\"\n    title: One\n    dependencies: [\"2\", 3, four]\n  - id: 2\n    title: 'It''s two'\n",
    "# comment\n---\na: 1   # trailing comment\nb:\n  c: true\n  d: ~\ne:\n- x\n- y\nf:\ng: \"q\\\"uote\\n\\u00e9\"\n",
    "tasks:\n  - {id: a, title: A, metadata: {requirements: [\"1.1\", x]}}\n  -\n    id: b\n    title: B\n  - - nested\n    - seq\n",
    "dispatcher:\n  scheduling_policy: priority\n  heartbeat_timeout: 30s\nagent_pools:\n  local:\n    config:\n      command: [/bin/sh, -c, 'echo \"$1\"', sh, \"{task.id}\"]\n      env: {ROOT: \"/tmp/x y\"}\n",
    "a: http://example.com/x\nb: C# and F#\n",
    "url: x:y\nlist: []\nmap: {}\nempty_str: ''\nnum: -1.5e3\n",
]

private let leftToTheLibrary = [
    "a: |\n  block\n  scalar\n",
    "a: &x 1\nb: *x\n",
    "a: !tag 1\n",
    "a: plain\n  continued\n",
    "a: [1,\n  2]\n",
    "a: b: c\n",
    "%YAML 1.2\n---\na: 1\n",
    "a: 1\n---\nb: 2\n",
    "\ta: 1\n",
    "? complex\n: key\n",
    "",
    "just a scalar\n",
    "a: \"\\x41\"\n",
    "c: - not a list\n",
]

@Suite struct BlockYAMLParserTests {
    @Test(arguments: readHere)
    func whatItReadsItReadsAsTheLibraryDoes(_ text: String) throws {
        let fast = try #require(BlockYAMLParser.parse(text, file: "t.yaml"), "read without the library")
        #expect(dump(fast) == dump(SpecNode.parseYAMLWithLibrary(text, file: "t.yaml")))
    }

    @Test(arguments: leftToTheLibrary)
    func whatItDoesNotReadItLeavesToTheLibrary(_ text: String) {
        #expect(BlockYAMLParser.parse(text, file: "t.yaml") == nil)
    }

    @Test func aRepeatedKeyIsRefusedEitherWayAndHereWithItsLine() {
        for (text, line) in [("a: 1\nb: 2\na: 3\n", 3), ("t:\n  - {k: 1, k: 2}\n", 2)] {
            guard case .failure(let issue) = BlockYAMLParser.parse(text, file: "t.yaml") else {
                Issue.record("refused: \(text)")
                continue
            }
            #expect(issue.location.line == line && issue.message.hasPrefix("duplicate key"))
            if case .success = SpecNode.parseYAMLWithLibrary(text, file: "t.yaml") { Issue.record("the library refuses it too") }
        }
    }

    @Test func theBundledExamplesAndConfigurationsReadTheSameEitherWay() throws {
        let folder = "\(repositoryRoot)/Examples/chat-app"
        for file in ["tasks.yaml", "necro.yaml"] {
            let text = try String(contentsOfFile: "\(folder)/\(file)", encoding: .utf8)
            if let fast = BlockYAMLParser.parse(text, file: file) {
                #expect(dump(fast) == dump(SpecNode.parseYAMLWithLibrary(text, file: file)), "\(file)")
            }
        }
    }

    @Test func aGeneratedSpecReadsHereAndTheSameAsWithTheLibrary() throws {
        var lines = ["spec_name: bench", "tasks:"]
        for i in 1...300 {
            lines.append("  - id: \"\(i)\"")
            lines.append("    title: Generated task \(i)")
            lines.append("    required_skill: backend")
            if i > 2 { lines.append("    dependencies: [\"\(i - 1)\", \"\(i - 2)\"]") }
        }
        let text = lines.joined(separator: "\n") + "\n"
        let fast = try #require(BlockYAMLParser.parse(text, file: "b.yaml"))
        #expect(dump(fast) == dump(SpecNode.parseYAMLWithLibrary(text, file: "b.yaml")))
    }
}
