import Foundation
import NecroCore
import NecroRegistry
import NecroTesting
import Testing

@testable import NecroServer

/// Seeded, bounded mutations of what clients send the API: specs to `POST /v1/tasksets` (the
/// bundled example in its three formats) over HTTP, and runner reports through the same checks
/// the routes make. No answer is a 500, none hangs, every refusal says what and where.
@Suite(.serialized) struct APIFuzzTests {
    private static let pieces = [
        ":", "- ", "[", "]", "{", "}", "\"", "'", "#", "&a ", "*a", "\n", "  ", "\t", "\u{0}", "\\", "1e308", "-1", ".inf",
        "- [ ]", "_Depends: 1_", ",", "9223372036854775807", "\"id\": \"x\", \"id\": \"y\"", "null", "true",
    ]

    @Test func mutatedSpecsSentToTheAPIAreTakenOrRefusedWithAReasonNeverA500() async throws {
        let folder = "\(repositoryRoot)/Examples/chat-app"
        let seeds = [
            (try String(contentsOfFile: "\(folder)/tasks.md", encoding: .utf8), "md"),
            (try String(contentsOfFile: "\(folder)/tasks.yaml", encoding: .utf8), "yaml"),
            (try String(contentsOfFile: "\(folder)/tasks.json", encoding: .utf8), "json"),
        ]
        // The pool is disabled: what is taken waits, nothing runs (the bodies are what is tested).
        let f = try await ServerFixture(nil, poolEnabled: false)
        var random = SplitMix64(seed: 14)
        var statuses: [Int: Int] = [:]
        var slowest = Duration.zero
        for round in 0..<200 {
            for (text, format) in seeds {
                let body = mutated(text, inserting: Self.pieces, &random)
                let started = ContinuousClock.now
                let reply = try await f.call(
                    .POST, "/v1/tasksets?name=fuzz-\(round % 5)&replace=true&format=\(format)", token: "admin-secret", body: body,
                    contentType: "text/plain")
                slowest = max(slowest, ContinuousClock.now - started)
                statuses[Int(reply.status), default: 0] += 1
                #expect([200, 201, 400, 409].contains(reply.status), "round \(round) (\(format)): \(reply.status) \(reply.text.prefix(300))")
                guard reply.status >= 400 else { continue }
                #expect(reply.json?["error"]?["message"]?.stringValue?.isEmpty == false, "\(reply.text.prefix(300))")
                for issue in reply.json?["error"]?["issues"]?.arrayValue ?? [] where issue["code"] == "malformed" {
                    #expect(issue["line"]?.intValue != nil, "round \(round): \(issue)")
                }
            }
        }
        print("fuzzed \(statuses.values.reduce(0, +)) API bodies: \(statuses.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")); slowest \(slowest)")
        #expect(statuses.values.reduce(0, +) == 600)
        #expect(slowest < .seconds(30), "no body hangs the server")
        await f.finish()
    }

    @Test func mutatedRunnerReportsAreTakenOrRefusedWithTheirField() throws {
        let seed = #"{"events": [{"event_type": "phase_enter", "phase": "planning"}, {"event_type": "work_item_start", "span_id": "work_wi_1", "parent_span_id": "main", "actor": "worker", "payload": {"work_item_id": "wi_1"}}]}"#
        let checkpoint = #"{"checkpoint_id": "ckpt-1", "sequence_number": 1, "payload": {"files": ["a"]}}"#
        var random = SplitMix64(seed: 15)
        var taken = 0
        var refused = 0
        for _ in 0..<1500 {
            for (text, isCheckpoint) in [(seed, false), (checkpoint, true)] {
                let data = Data(mutated(text, inserting: Self.pieces, &random).utf8)
                // What `jsonBody` does: strict JSON first, then the object.
                if let issue = StrictJSON.problem(in: data, named: "body") {
                    #expect(issue.location.line != nil, "\(issue)")
                    refused += 1
                    continue
                }
                guard let body = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
                    refused += 1
                    continue
                }
                do {
                    if isCheckpoint { _ = try RunnerReports.checkpoint(body) } else { _ = try RunnerReports.events(body) }
                    taken += 1
                } catch let error as APIError {
                    #expect(error.status == .badRequest && !error.message.isEmpty)
                    refused += 1
                }
            }
        }
        print("fuzzed \(taken + refused) runner reports: \(taken) taken, \(refused) refused with a reason")
        #expect(taken + refused == 3000 && taken > 0 && refused > 0)
    }
}
