import DequeModule
import Synchronization

/// A queue many producers fill and one loop empties in batches: what is pending is taken together
/// (up to a bound), so a burst of runner exits becomes a few turns, each one registry transaction.
/// One consumer.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex((open: true, queue: Deque<Element>()))
    private let wake: AsyncStream<Void>.Continuation
    /// The one consumer's iterator: only `takeBatch`, from the dispatcher's loop, touches it.
    nonisolated(unsafe) private var wakeups: AsyncStream<Void>.Iterator

    init() {
        let (stream, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        wakeups = stream.makeAsyncIterator()
    }

    /// Queues `element`; false if the inbox is closed (its loop has ended).
    @discardableResult
    func post(_ element: Element) -> Bool {
        guard items.withLock({ items in
            if items.open { items.queue.append(element) }
            return items.open
        }) else { return false }
        wake.yield()
        return true
    }

    /// Whether it still takes posts (its loop runs).
    var isOpen: Bool { items.withLock { $0.open } }

    /// Takes no more: what is left is returned, later posts are refused.
    func close() -> [Element] {
        items.withLock { items in
            items.open = false
            defer { items.queue.removeAll() }
            return Array(items.queue)
        }
    }

    /// Waits until something is posted, then takes it, up to `max` elements: a burst becomes turns
    /// of a bounded size, each recorded and its launches started before the next is read (one
    /// large turn would hold back the first launch it decides until the whole burst is recorded).
    /// Empty only if the task is cancelled.
    func takeBatch(max: Int = 64) async -> [Element] {
        while true {
            let batch = items.withLock { items -> [Element] in
                let count = Swift.min(max, items.queue.count)
                defer { items.queue.removeFirst(count) }
                return Array(items.queue.prefix(count))
            }
            if !batch.isEmpty { return batch }
            guard await wakeups.next() != nil, !Task.isCancelled else { return [] }
        }
    }
}
