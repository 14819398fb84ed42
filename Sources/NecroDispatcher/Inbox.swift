import DequeModule
import Synchronization

/// A queue many producers fill and one loop empties in batches: everything pending is taken at
/// once, so a burst of runner exits becomes one turn and one registry transaction. One consumer.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex(Deque<Element>())
    private let wake: AsyncStream<Void>.Continuation
    /// The one consumer's iterator: only `takeAll`, from the dispatcher's loop, touches it.
    nonisolated(unsafe) private var wakeups: AsyncStream<Void>.Iterator

    init() {
        let (stream, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        wakeups = stream.makeAsyncIterator()
    }

    func post(_ element: Element) {
        items.withLock { $0.append(element) }
        wake.yield()
    }

    /// Waits until something is posted, then takes all of it. Empty only if the task is cancelled.
    func takeAll() async -> [Element] {
        while true {
            let batch = items.withLock { items -> [Element] in
                defer { items.removeAll() }
                return Array(items)
            }
            if !batch.isEmpty { return batch }
            guard await wakeups.next() != nil, !Task.isCancelled else { return [] }
        }
    }
}
