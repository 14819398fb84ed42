/// The stream's next element, or nil if none comes within `timeout`: a guard against a test
/// hanging, not a way to wait for "nothing" — on timeout the pending `next()` is cancelled, which
/// ends the stream.
public func next<Element: Sendable>(
    _ iterator: inout AsyncStream<Element>.Iterator, within timeout: Duration = .seconds(10)
) async -> Element? {
    nonisolated(unsafe) var it = iterator
    defer { iterator = it }
    return await withTaskGroup(of: Element?.self) { group in
        group.addTask { try? await Task.sleep(for: timeout); return nil }
        group.addTask { await it.next() }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
