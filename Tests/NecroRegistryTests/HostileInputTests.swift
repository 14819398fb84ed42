import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

/// The issues of a configuration: `text`, then a pool (every configuration needs one).
private func configurationIssues(_ text: String, pool: Bool = true) -> [SpecIssue] {
    let pool = pool ? "\nagent_pools:\n  local:\n    max_concurrency: 1\n    config:\n      command: [/bin/true]\n" : ""
    do {
        _ = try ConfigurationLoader.load(text: text + pool, file: "necro.yaml")
        return []
    } catch {
        return error.issues
    }
}

private func specIssues(_ text: String, _ format: SpecFormat) -> [SpecIssue] {
    do {
        _ = try SpecLoader.load(data: Data(text.utf8), format: format, file: "spec", defaultName: "s")
        return []
    } catch {
        return error.issues
    }
}

/// Numbers, ids, aliases and nesting an attacker (or a typo) may write: each a located error, never
/// a trap or a hang.
@Suite struct HostileInputTests {
    @Test(arguments: ["1e17", "1e308", "\"inf\"", ".inf", "-.inf", ".nan", "9223372036854775807", "-1", "99999999999999999999h", "315360001"])
    func aDurationOutOfRangeIsALocatedError(_ value: String) {
        let found = configurationIssues("dispatcher:\n  heartbeat_timeout: 30\n  retry_max_delay: \(value)\n")
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.location.line == 3 && found.first?.location.field == "dispatcher.retry_max_delay")
    }

    @Test func zeroHeartbeatsHugeCountsAndInfiniteNumbersAreRefused() {
        #expect(configurationIssues("dispatcher:\n  heartbeat_timeout: 0\n").map(\.location.field) == ["dispatcher.heartbeat_timeout"])
        #expect(configurationIssues("dispatcher:\n  max_global_concurrency: 9223372036854775807\n").first?.message.contains("from 1 to") == true)
        #expect(configurationIssues("dispatcher:\n  retry_backoff_base: 1e400\n").first?.message.contains("finite") == true)
        #expect(configurationIssues("repo_pool:\n  repo: .\n  max_slots: 100000\n").first?.location.line == 3)
        #expect(specIssues("spec_name: s\nweight: .inf\ntasks:\n  - {id: a, title: A}\n", .yaml).first?.location.field == "weight")
        #expect(specIssues("spec_name: s\ntasks:\n  - {id: a, title: A, timeout_seconds: 9223372036854775807}\n", .yaml).count == 1)
        #expect(specIssues("- [ ] 1. One\n  - _Timeout: 99999999999h_\n  - _Resources: cpu=inf_\n", .kiroMarkdown).map(\.location.line) == [2, 3])
    }

    @Test func taskIdsThatCouldNameSomethingElseAreRefused() {
        for id in ["-rf", "a\\tb", "a\\u0000b", "a b", "a,b", ""] {
            let found = specIssues("{\"spec_name\": \"s\", \"tasks\": [{\"id\": \"\(id)\", \"title\": \"T\"}]}", .json)
            #expect(found.first?.location.field == "tasks[0].id", "\(id): \(found)")
        }
        #expect(specIssues("- [ ] 1\u{1}2. A control character inside\n", .kiroMarkdown).first?.message.contains("control character") == true)
        #expect(specIssues("- [ ] 1\u{0}2. A NUL inside\n", .kiroMarkdown).first?.code == .unreadable, "not a text file")
    }

    @Test func anAliasBombIsRefusedAtOnce() {
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for i in 1...9 { lines.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]") }
        let bomb = lines.joined(separator: "\n") + "\nspec_name: bomb\ntasks: [*a9]\n"
        let started = ContinuousClock.now
        #expect(specIssues(bomb, .yaml).first?.message.contains("aliases multiply") == true)
        #expect(configurationIssues(bomb, pool: false).first?.message.contains("aliases multiply") == true)
        #expect(ContinuousClock.now - started < .seconds(10), "refused, not expanded to ten billion values")
        // Aliases that stay small are still read (the library handles them).
        #expect(specIssues("spec_name: s\ntasks:\n  - id: a\n    title: &t Title\n  - {id: b, title: *t}\n", .yaml).isEmpty)
    }

    @Test func nestingBeyondAnySpecIsRefusedNotFollowedToTheEndOfTheStack() {
        let deepFlow = "spec_name: s\ntasks: " + String(repeating: "[", count: 50_000) + String(repeating: "]", count: 50_000) + "\n"
        #expect(specIssues(deepFlow, .yaml).first?.message.contains("nested more than") == true)
        let deepMultiLine = "a: " + String(repeating: "[\n", count: 50_000) + String(repeating: "]", count: 50_000) + "\n"
        #expect(configurationIssues(deepMultiLine, pool: false).first?.message.contains("nested more than") == true)
        var block = ""
        for level in 0..<400 { block += String(repeating: " ", count: level) + "k\(level):\n" }
        #expect(configurationIssues(block, pool: false).first?.message.contains("nested more than") == true)
        let deepJSON = String(repeating: "{\"a\": ", count: 10_000) + "1" + String(repeating: "}", count: 10_000)
        #expect(specIssues(deepJSON, .json).first?.message.contains("nested more than") == true)
    }

    /// Seeded mutations of the bundled example in the three formats and of its configuration: no
    /// input crashes or hangs the loaders, and every syntax error has its line.
    @Test func mutatedSpecsAndConfigurationsAreReadOrRefusedWithALocation() throws {
        let folder = "\(repositoryRoot)/Examples/chat-app"
        let seeds: [(String, SpecFormat?)] = [
            (try String(contentsOfFile: "\(folder)/tasks.md", encoding: .utf8), .kiroMarkdown),
            (try String(contentsOfFile: "\(folder)/tasks.yaml", encoding: .utf8), .yaml),
            (try String(contentsOfFile: "\(folder)/tasks.json", encoding: .utf8), .json),
            (try String(contentsOfFile: "\(folder)/necro.yaml", encoding: .utf8), nil),
        ]
        let pieces = [
            ":", "- ", "[", "]", "{", "}", "\"", "'", "#", "&a ", "*a", "!", "|", ">", "\n", "  ", "\t", "\u{0}", "\\", "1e308",
            "-1", ".inf", "_", "- [ ]", "- [x] 9.", "```", "## 1. ", "_Depends: 1_", "\"waves\"", ",", "9223372036854775807",
        ]
        var random = SplitMix64(seed: 13)
        var inputs = 0
        var refused = 0
        var slowest = Duration.zero
        for round in 0..<750 {
            for (text, format) in seeds {
                let mutated = NecroTesting.mutated(text, inserting: pieces, &random)
                let started = ContinuousClock.now
                let found = format.map { specIssues(mutated, $0) } ?? configurationIssues(mutated)
                slowest = max(slowest, ContinuousClock.now - started)
                inputs += 1
                if !found.isEmpty { refused += 1 }
                for issue in found where !issue.isWarning {
                    #expect(!issue.location.file.isEmpty)
                    if issue.code == .malformed {
                        #expect(issue.location.line != nil, "round \(round): \(issue)")
                    }
                }
            }
        }
        print("fuzzed \(inputs) inputs: \(refused) refused with located errors, the rest read; slowest \(slowest)")
        #expect(inputs == 3000)
        #expect(slowest < .seconds(5))
    }
}
