/// The checkboxes of numbered tasks in a `tasks.md`, read and changed in place: only the one
/// character between the brackets, nothing else of the file.
public enum SpecCheckboxes {
    /// Where each numbered task's checkbox mark is: its byte offset, by task id (the first line of
    /// each id; lines in fenced code blocks are not tasks).
    public static func marks(in bytes: [UInt8]) -> [TaskIDKey: Int] {
        var result: [TaskIDKey: Int] = [:]
        var start = 0
        var inFence = false
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != 10 { end += 1 }
            var i = start
            while i < end, bytes[i] == 32 || bytes[i] == 9 { i += 1 }
            if end - i >= 3, (bytes[i] == 96 && bytes[i + 1] == 96 && bytes[i + 2] == 96) || (bytes[i] == 126 && bytes[i + 1] == 126 && bytes[i + 2] == 126) {
                inFence.toggle()
            } else if !inFence, let (id, mark) = checkbox(bytes, from: i, to: end), result[id] == nil {
                result[id] = mark
            }
            start = end + 1
        }
        return result
    }

    /// A task id as bytes, for lookups without decoding.
    public typealias TaskIDKey = [UInt8]

    /// "- [?] 2.1 Title" (or "- [?]* 2.1", "- [?]\*"): the id and the offset of "?".
    static func checkbox(_ bytes: [UInt8], from i: Int, to end: Int) -> (TaskIDKey, Int)? {
        guard end - i >= 6, bytes[i] == 45 || bytes[i] == 42 || bytes[i] == 43, bytes[i + 1] == 32, bytes[i + 2] == 91, bytes[i + 4] == 93
        else { return nil }
        var j = i + 5
        if j + 1 < end, bytes[j] == 92, bytes[j + 1] == 42 { j += 1 }
        if j < end, bytes[j] == 42 { j += 1 }
        while j < end, bytes[j] == 32 || bytes[j] == 9 { j += 1 }
        let idStart = j
        while j < end, bytes[j] != 32, bytes[j] != 9, bytes[j] != 13 { j += 1 }
        var idEnd = j
        if idEnd > idStart, bytes[idEnd - 1] == 46 { idEnd -= 1 }
        guard idEnd > idStart, bytes[idStart] >= 48, bytes[idStart] <= 57 else { return nil }
        return (Array(bytes[idStart..<idEnd]), i + 3)
    }

    /// The file with each named task's mark set (`x`, `-`, or a space); the ids whose checkbox was
    /// not found are returned too. Nothing but those characters changes.
    public static func setting(_ changes: [TaskID: UInt8], in bytes: [UInt8]) -> (bytes: [UInt8], missing: [TaskID]) {
        let found = marks(in: bytes)
        var result = bytes
        var missing: [TaskID] = []
        for (id, mark) in changes {
            if let offset = found[Array(id.rawValue.utf8)] { result[offset] = mark } else { missing.append(id) }
        }
        return (result, missing.sorted())
    }

    /// Two versions of one file that differ only in checkbox marks, joined: a task ticked in
    /// either is ticked (`[x]` over `[-]` or `[~]`, those over `[ ]`). Nil if they differ in
    /// anything else.
    public static func union(_ ours: [UInt8], _ theirs: [UInt8]) -> [UInt8]? {
        guard ours.count == theirs.count else { return nil }
        let ourMarks = Set(marks(in: ours).values)
        func rank(_ mark: UInt8) -> Int { mark == 120 || mark == 88 ? 2 : mark == 45 || mark == 126 ? 1 : 0 }
        var result = ours
        for i in ours.indices where ours[i] != theirs[i] {
            guard ourMarks.contains(i) else { return nil }
            if rank(theirs[i]) > rank(ours[i]) { result[i] = theirs[i] }
        }
        return result
    }
}
