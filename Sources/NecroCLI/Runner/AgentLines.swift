import Foundation
import NecroCore

/// An agent's output cut into lines. A line longer than `limit` (a tool's whole output, quoted)
/// is passed over rather than held: what the runner reads of it is small, and its memory too.
struct AgentLines {
    static let limit = 8 << 20
    private var pending: [UInt8] = []
    private var skipping = false

    mutating func add(_ bytes: ArraySlice<UInt8>, _ line: (ArraySlice<UInt8>) -> Void) {
        var rest = bytes
        while let newline = rest.firstIndex(of: 10) {
            if !skipping {
                if pending.isEmpty {
                    line(rest[rest.startIndex..<newline])
                } else {
                    pending += rest[rest.startIndex..<newline]
                    line(pending[...])
                }
            }
            pending.removeAll(keepingCapacity: pending.count < 65_536)
            skipping = false
            rest = rest[(newline + 1)...]
        }
        guard !skipping else { return }
        if pending.count + rest.count > Self.limit {
            pending.removeAll()
            skipping = true
        } else {
            pending += rest
        }
    }

    /// The last line, if the output did not end with a newline.
    mutating func finish(_ line: (ArraySlice<UInt8>) -> Void) {
        if !skipping && !pending.isEmpty { line(pending[...]) }
        pending.removeAll()
    }
}

/// A reset time an agent gives as a time of day, in its own time zone (the runner's, unless it
/// names one): Claude Code's `resets 3pm (Europe/Berlin)`, `resets Apr 23 at 4pm`, Codex's
/// `try again at 12:16 PM`. The next such time from now.
enum LocalResetTime {
    static func resolve(_ message: String, now: Date) -> Timestamp? {
        let lower = message.lowercased()
        guard let lead = ["resets ", "reset at ", "try again at ", "again at "].lazy.compactMap({ lower.range(of: $0) }).first else { return nil }
        let rest = String(lower[lead.upperBound...])
        guard let time = rest.firstMatch(of: /(\d{1,2})(?::(\d{2}))?\s*(am|pm)/) else { return nil }
        guard var hour = Int(time.1), let minute = Int(time.2 ?? "0"), (1...12).contains(hour), minute < 60 else { return nil }
        if time.3 == "pm" && hour != 12 { hour += 12 }
        if time.3 == "am" && hour == 12 { hour = 0 }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        if let zone = message.firstMatch(of: /\(([A-Za-z_]+(?:\/[A-Za-z_+\-0-9]+)+|UTC|GMT)\)/), let named = TimeZone(identifier: String(zone.1)) {
            calendar.timeZone = named
        }
        var day = calendar.dateComponents([.year, .month, .day], from: now)
        // `Apr 23 at 4pm`, `Mar 10th, 2026 3:39 AM`: a date before the time.
        let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        var dated = false
        if let date = rest.firstMatch(of: /(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?(?:\s+(\d{4}))?/),
            date.range.lowerBound < time.range.lowerBound, let month = months.firstIndex(of: String(date.1)), let dayNumber = Int(date.2)
        {
            day.month = month + 1
            day.day = dayNumber
            if let year = date.3.flatMap({ Int($0) }) { day.year = year }
            dated = true
        }
        day.hour = hour
        day.minute = minute
        guard var reset = calendar.date(from: day) else { return nil }
        // A time of day already past is tomorrow's; a date already past, next year's.
        if reset <= now { reset = calendar.date(byAdding: dated ? .year : .day, value: 1, to: reset) ?? reset }
        guard reset > now, reset.timeIntervalSince(now) < 40 * 86_400 else { return nil }
        return Timestamp(secondsSince1970: reset.timeIntervalSince1970)
    }
}
