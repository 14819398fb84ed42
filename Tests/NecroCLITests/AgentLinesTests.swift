import Foundation
import NecroCore
import Testing

@testable import NecroCLI

@Suite struct AgentLinesTests {
    @Test func outputIsCutIntoLinesWhateverTheChunksAndAnOverlongLineIsPassedOver() {
        var lines = AgentLines()
        var seen: [String] = []
        let take: (ArraySlice<UInt8>) -> Void = { seen.append(String(decoding: $0, as: UTF8.self)) }
        lines.add(ArraySlice("{\"a\":".utf8), take)
        lines.add(ArraySlice("1}\nsecond\nthi".utf8), take)
        lines.add(ArraySlice([UInt8](repeating: 65, count: AgentLines.limit + 10)), take)  // thi… grows past the limit
        lines.add(ArraySlice("rd\nfourth".utf8), take)
        lines.finish(take)
        #expect(seen == ["{\"a\":1}", "second", "fourth"])
    }

    @Test func aResetTimeOfDayIsTheNextSuchTimeInTheZoneTheAgentNames() throws {
        // 2026-11-27 10:00 UTC.
        let now = Date(timeIntervalSince1970: 1_795_773_600)
        /// Hours from now to the reset, to the second.
        func reset(_ message: String) -> Double? {
            LocalResetTime.resolve(message, now: now).map { (($0.secondsSince1970 - now.timeIntervalSince1970) / 3600 * 3600).rounded() / 3600 }
        }
        #expect(reset("You've hit your limit · resets 3pm (UTC)") == 5)
        #expect(reset("You've hit your limit · resets 9:30am (UTC)") == 23.5, "past today: tomorrow")
        #expect(reset("You've hit your limit · resets Nov 28 at 4pm (UTC)") == 30)
        #expect(reset("Claude AI usage limit reached, no time") == nil)
        if TimeZone(identifier: "Europe/Berlin") != nil {
            // 15:00 in Berlin in November is 14:00 UTC.
            #expect(reset("You've hit your limit · resets 3pm (Europe/Berlin)") == 4)
        }
        // Codex names no zone: the runner's own, as the agent runs beside it.
        let local = try #require(LocalResetTime.resolve("You've hit your usage limit. Try again at 4:05 PM.", now: now))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .current
        let parts = calendar.dateComponents([.hour, .minute], from: Date(timeIntervalSince1970: local.secondsSince1970))
        #expect(parts.hour == 16 && parts.minute == 5)
        #expect(local.secondsSince1970 > now.timeIntervalSince1970 && local.secondsSince1970 - now.timeIntervalSince1970 <= 86_400)
    }
}
