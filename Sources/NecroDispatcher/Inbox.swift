import DequeModule
import Synchronization

/// A queue many producers fill and one loop empties in batches: everything pending is taken at
/// once, so a burst of runner exits becomes one turn and one registry transaction.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex(Deque<Element>())
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    init() {
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func post(_ element: Element) {
        items.withLock { $0.append(element) }
        wake.yield()
    }

    /// Waits until something is posted, then takes all of it. Empty only if the task is cancelled.
    func takeAll() async -> [Element] {
        var iterator = wakeups.makeAsyncIterator()
        while true {
            let batch = items.withLock { items -> [Element] in
                defer { items.removeAll() }
                return Array(items)
            }
            if !batch.isEmpty { return batch }
            guard await iterator.next() != nil, !Task.isCancelled else { return [] }
        }
    }
}
