/// Tells a provider's rate or usage limit in an agent's error text, and when it resets.
///
/// When: an epoch after a bar (`… limit reached|1764270000`, Claude Code's older form), a
/// duration after "try again in", "retry after", "resets in" (`4 days 20 hours 9 minutes`, `1.5s`,
/// `2h 5m`), or an ISO 8601 time after "at" or "resets" (`2026-11-27T21:00:00Z`). A time of day in
/// the agent's own time zone (`resets 3pm`) is not read: the dispatcher's backoff applies.
public enum UsageLimits {
    static let markers = [
        "usage limit", "rate limit", "rate_limit", "ratelimit", "limit reached", "too many requests", "quota exceeded",
        "exceeded your current quota", "limit exceeded", "hit your limit", "out of extra usage",
    ]

    /// The limit this text reports, if it reports one.
    public static func notice(in text: String, now: Timestamp) -> UsageLimitNotice? {
        let lower = text.lowercased()
        guard markers.contains(where: { lower.contains($0) }) else { return nil }
        return UsageLimitNotice(message: String(text.prefix(500)), resetsAt: resetTime(in: lower, now: now))
    }

    static func resetTime(in lower: String, now: Timestamp) -> Timestamp? {
        let characters = Array(lower)
        // `…|1764270000`
        if let bar = characters.lastIndex(of: "|") {
            let digits = characters[(bar + 1)...].prefix { $0.isNumber }
            if digits.count >= 9 && digits.count <= 13, let value = Double(String(digits)) {
                let seconds = digits.count > 10 ? value / 1000 : value
                if seconds > now.secondsSince1970 - 86_400 { return Timestamp(secondsSince1970: seconds) }
            }
        }
        for lead in ["try again in", "retry after", "retry in", "resets in", "reset in", "available in", "please wait"] {
            if let range = lower.firstRange(of: lead), let seconds = duration(ArraySlice(lower[range.upperBound...])) {
                return Timestamp(secondsSince1970: now.secondsSince1970 + seconds)
            }
        }
        for lead in ["resets at", "reset at", "try again at", "resets"] {
            if let range = lower.firstRange(of: lead), let time = isoTime(ArraySlice(lower[range.upperBound...])) { return time }
        }
        return nil
    }

    /// `4 days 20 hours 9 minutes`, `1.5s`, `2h 5m`, `30 seconds`, `90`: seconds; nil if no
    /// number and unit lead the text.
    static func duration(_ text: ArraySlice<Character>) -> Double? {
        var rest = text.drop { $0 == " " || $0 == ":" }
        var total = 0.0
        var found = false
        while true {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(String(number)) else { break }
            rest = rest.dropFirst(number.count).drop { $0 == " " }
            let unit = String(rest.prefix { $0.isLetter })
            let scale: Double?
            switch unit {
            case "ms", "millisecond", "milliseconds": scale = 0.001
            case "s", "sec", "secs", "second", "seconds", "": scale = 1
            case "m", "min", "mins", "minute", "minutes": scale = 60
            case "h", "hr", "hrs", "hour", "hours": scale = 3600
            case "d", "day", "days": scale = 86_400
            default: scale = nil
            }
            guard let scale else { break }
            total += value * scale
            found = true
            rest = rest.dropFirst(unit.count).drop { $0 == " " || $0 == "," }
            if rest.starts(with: Array("and ")) { rest = rest.dropFirst(4) }
        }
        return found && total.isFinite && total < 90 * 86_400 ? total : nil
    }

    /// `2026-11-27t21:00:00z` (lowercased), `2026-11-27 21:00:00+01:00`: a time.
    static func isoTime(_ text: ArraySlice<Character>) -> Timestamp? {
        let chars = Array(text.drop { $0 == " " || $0 == ":" })
        func number(_ start: Int, _ count: Int) -> Int? {
            guard start + count <= chars.count else { return nil }
            return Int(String(chars[start..<(start + count)]))
        }
        guard chars.count >= 19, chars[4] == "-", chars[7] == "-", chars[10] == "t" || chars[10] == " ", chars[13] == ":", chars[16] == ":",
            let year = number(0, 4), let month = number(5, 2), let day = number(8, 2), let hour = number(11, 2), let minute = number(14, 2),
            let second = number(17, 2), (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        if index < chars.count && chars[index] == "." {
            index += 1
            while index < chars.count && chars[index].isNumber { index += 1 }
        }
        var offset = 0
        if index < chars.count, chars[index] == "+" || chars[index] == "-", let hours = number(index + 1, 2) {
            let minutes = (index + 3 < chars.count && chars[index + 3] == ":" ? number(index + 4, 2) : number(index + 3, 2)) ?? 0
            offset = (hours * 3600 + minutes * 60) * (chars[index] == "-" ? -1 : 1)
        }
        // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return Timestamp(secondsSince1970: Double(days * 86_400 + hour * 3600 + minute * 60 + second - offset))
    }
}
