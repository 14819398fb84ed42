/// Task ids to indexes: an open-addressing hash table over the ids' UTF-8 bytes.
///
/// Building a graph of a million tasks does three million id lookups; `Dictionary`'s seeded
/// SipHash costs more than the rest of the work. Spec ids come from the user's own files, so a
/// fast unkeyed hash (FNV-1a) is enough here.
struct TaskIDTable: Sendable {
    private var slots: [Int32]  // index into `ids`, or -1
    private let mask: Int

    /// A table able to hold `capacity` ids at a load factor of at most one half.
    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
    }

    private static func hash(_ id: TaskID) -> Int {
        var utf8 = id.rawValue.utf8
        if let hash = utf8.withContiguousStorageIfAvailable(fnv1a) { return hash }
        utf8 = String(id.rawValue).utf8  // bridged strings: make a native copy
        return utf8.withContiguousStorageIfAvailable(fnv1a) ?? 0
    }

    private static func fnv1a(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        let hash = FNV1a.hash(bytes)
        return Int(truncatingIfNeeded: hash ^ (hash >> 29))
    }

    /// The index stored for `id`, if any.
    func index(of id: TaskID, in ids: [TaskID]) -> Int32? {
        var slot = Self.hash(id) & mask
        while true {
            let stored = slots[slot]
            if stored < 0 { return nil }
            if ids[Int(stored)] == id { return stored }
            slot = (slot + 1) & mask
        }
    }

    /// Stores `index` for `ids[index]` unless the id is there already; returns the index it
    /// already had.
    mutating func insert(_ index: Int32, in ids: [TaskID]) -> Int32? {
        let id = ids[Int(index)]
        var slot = Self.hash(id) & mask
        while true {
            let stored = slots[slot]
            if stored < 0 {
                slots[slot] = index
                return nil
            }
            if ids[Int(stored)] == id { return stored }
            slot = (slot + 1) & mask
        }
    }
}
