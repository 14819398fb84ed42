public import NecroCore

/// A seeded mutation of `text`, for fuzz tests: one to four edits, each inserting one of `pieces`,
/// deleting up to 20 bytes, cutting off the rest, or repeating up to 200 bytes in place.
public func mutated(_ text: String, inserting pieces: [String], _ random: inout SplitMix64) -> String {
    var bytes = Array(text.utf8)
    for _ in 0..<(1 + Int(random.next() % 4)) {
        let at = Int(random.next() % UInt64(bytes.count + 1))
        switch random.next() % 4 {
        case 0: bytes.insert(contentsOf: Array(pieces[Int(random.next() % UInt64(pieces.count))].utf8), at: at)
        case 1: if at < bytes.count { bytes.removeSubrange(at..<min(bytes.count, at + Int(random.next() % 20))) }
        case 2: bytes = Array(bytes.prefix(at))
        default:
            let length = min(bytes.count - at, Int(random.next() % 200))
            bytes.insert(contentsOf: bytes[at..<at + length], at: at)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
