/// Durations as people write them in specs and configuration: `90`, `45s`, `30m`, `1h30m`, `2d`.
public enum DurationText {
    /// Whole seconds, or nil if the text is not a duration. A bare number is seconds.
    public static func seconds(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces
        guard !trimmed.isEmpty else { return nil }
        if let plain = Int(trimmed) { return plain >= 0 ? plain : nil }
        var total = 0
        var number = ""
        for character in trimmed where character != " " {
            if character.isASCII, character.isNumber {
                number.append(character)
                continue
            }
            guard let value = Int(number) else { return nil }
            let unit: Int
            switch character {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86_400
            default: return nil
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: unit)
            guard !overflow else { return nil }
            total += product
            number = ""
        }
        return number.isEmpty ? total : nil
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    public var trimmingSpaces: String {
        var start = startIndex
        var end = endIndex
        while start < end, self[start] == " " || self[start] == "\t" { start = index(after: start) }
        while end > start, self[index(before: end)] == " " || self[index(before: end)] == "\t" || self[index(before: end)] == "\r" {
            end = index(before: end)
        }
        return String(self[start..<end])
    }
}
