/// A task's work items as `necro runner` follows them: its steps (or, with none, the task itself),
/// dispatched, started and done as the agent reports them (`necro step start|done N`), the rest
/// done when it exits 0. Says which events each change makes; records nothing itself.
public struct WorkItems: Sendable {
    public enum State: Hashable, Sendable {
        case pending, dispatched, started, done, failed
    }

    public struct Item: Hashable, Sendable {
        /// `step_<n>`, n from 1 in the order written.
        public var id: String
        public var title: String
        /// n: the step's number, from 1.
        public var number: Int
        public var state: State
        /// Its span: `work_<id>`.
        public var span: String { "work_\(id)" }
    }

    /// A change to report, in order.
    public enum Change: Hashable, Sendable {
        case dispatched(Item)
        case started(Item)
        case done(Item)
        case failed(Item, error: String)
    }

    public enum Refusal: Error, Hashable, Sendable, CustomStringConvertible {
        case noSuchStep(Int, count: Int)
        public var description: String {
            switch self {
            case .noSuchStep(let number, let count): return "no step \(number): the task has \(count) (numbered from 1)"
            }
        }
    }

    /// Whether step `number` is done (nil: no such step).
    public func isDone(_ number: Int) -> Bool? {
        items.indices.contains(number - 1) ? items[number - 1].state == .done : nil
    }

    public private(set) var items: [Item]

    /// The task's steps (their titles, and whether the spec marks them done), or its title when
    /// it has none; `done`: ids of items an earlier attempt finished (from its checkpoint).
    public init(steps: [(title: String, done: Bool)], taskTitle: String, done: Set<String> = []) {
        let list = steps.isEmpty ? [(title: taskTitle, done: false)] : steps
        items = list.enumerated().map { index, step in
            let id = "step_\(index + 1)"
            return Item(id: id, title: step.title, number: index + 1, state: step.done || done.contains(id) ? .done : .pending)
        }
    }

    /// Items done, in order (those done before this attempt included).
    public var doneIDs: [String] { items.filter { $0.state == .done }.map(\.id) }
    /// Items not done yet, in order.
    public var remaining: [Item] { items.filter { $0.state != .done } }
    /// The item being worked on: the last one started and not finished.
    public var current: Item? { items.last { $0.state == .started } }
    public var allDone: Bool { items.allSatisfy { $0.state == .done } }

    /// Starts step `number` (dispatching it first). One done already (by an earlier attempt)
    /// stays done: nothing changes.
    public mutating func start(_ number: Int) throws(Refusal) -> [Change] {
        let index = try position(number)
        switch items[index].state {
        case .done, .started: return []
        case .pending, .failed:
            items[index].state = .dispatched
            let dispatched = items[index]
            items[index].state = .started
            return [.dispatched(dispatched), .started(items[index])]
        case .dispatched:
            items[index].state = .started
            return [.started(items[index])]
        }
    }

    /// Finishes step `number` (starting it first if it was not); one done already stays as it was.
    public mutating func finish(_ number: Int) throws(Refusal) -> [Change] {
        let index = try position(number)
        if items[index].state == .done { return [] }
        var changes = try start(number)
        items[index].state = .done
        changes.append(.done(items[index]))
        return changes
    }

    /// The first item not done, started: what an agent that reports nothing works on.
    public mutating func startNext() -> [Change] {
        guard let next = items.first(where: { $0.state != .done }) else { return [] }
        return (try? start(next.number)) ?? []
    }

    /// The agent failed: the items it had started fail.
    public mutating func failStarted(_ error: String) -> [Change] {
        var changes: [Change] = []
        for index in items.indices where items[index].state == .started {
            items[index].state = .failed
            changes.append(.failed(items[index], error: error))
        }
        return changes
    }

    private func position(_ number: Int) throws(Refusal) -> Int {
        guard number >= 1, number <= items.count else { throw .noSuchStep(number, count: items.count) }
        return number - 1
    }
}
