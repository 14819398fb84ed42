/// Durations as people write them in specs and configuration: `90`, `45s`, `30m`, `1h30m`, `2d`.
public enum DurationText {
    /// The longest duration taken anywhere (ten years): a longer one is a mistake, and would
    /// overflow the clock it is added to.
    public static let maximumSeconds = 10 * 365 * 86_400

    /// Whole seconds, or nil if the text is not a duration of at most `maximumSeconds`. A bare
    /// number is seconds.
    public static func seconds(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces
        guard !trimmed.isEmpty else { return nil }
        if let plain = Int(trimmed) { return plain >= 0 && plain <= maximumSeconds ? plain : nil }
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
            guard !overflow, product <= maximumSeconds else { return nil }
            total += product
            guard total <= maximumSeconds else { return nil }
            number = ""
        }
        return number.isEmpty ? total : nil
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs and carriage returns (ASCII only, so it
    /// works on UTF-8 bytes without decoding characters).
    public var trimmingSpaces: String {
        let bytes = utf8
        var start = bytes.startIndex
        while start < bytes.endIndex, bytes[start] == 32 || bytes[start] == 9 { start = bytes.index(after: start) }
        // One forward pass: `end` follows the last byte that is not a space.
        var end = start
        var cursor = start
        while cursor < bytes.endIndex {
            let byte = bytes[cursor]
            cursor = bytes.index(after: cursor)
            if byte != 32 && byte != 9 && byte != 13 { end = cursor }
        }
        return String(self[start..<end])
    }
}
