import Foundation
import NecroCore
import Synchronization

/// Takes the journal's turns into the registry on a thread of its own, as many turns to a
/// transaction as have come meanwhile: the dispatcher's loop writes a turn's line and goes on to
/// its effects, it does not wait for the registry.
///
/// Turns are recorded in the order they were journalled. What a turn was waiting for (an API
/// request answered once its change is recorded) is let go once it is in the registry. If the
/// registry cannot be written, the turns stay in the journal and are tried again every
/// `retryInterval`, or as soon as more come.
///
/// A writer that keeps up would make a transaction of every turn, each a commit: turns nobody
/// waits on are gathered for up to `gatherInterval` after the last transaction, so that a busy
/// dispatcher makes at most a few hundred a second. A turn somebody waits on (an API request), a
/// flush and the end go in at once.
final class RecordWriter: Sendable {
    /// A journalled turn: its batch (nil for a turn that recorded nothing), the status records its
    /// runners' exits free once it is recorded, and whom it lets go.
    struct Turn: Sendable {
        var batch: JournalBatch?
        var statusRecords: [StatusRecord] = []
        var done: [@Sendable () -> Void] = []
        /// Whether its line is in the journal. One that is not (the journal could not take it)
        /// lives only here until the registry has it.
        var journalled = true
    }

    /// What happens once turns are recorded, or could not be (each turn told once); when a turn
    /// that is nowhere but here could not be recorded (records are failing), and when everything
    /// is recorded again.
    struct Observers: Sendable {
        var recorded: @Sendable ([EventRecord], [StatusRecord]) -> Void
        var notRecorded: @Sendable ([Transition]) -> Void
        var failing: @Sendable (String) -> Void = { _ in }
        var caughtUp: @Sendable () -> Void = {}
    }

    private let registry: any Registry
    private let journal: EventJournal
    private let observers: Observers
    private let retryInterval: Duration
    private let gatherInterval: Duration
    /// The journal is emptied, with the loop held for a moment, once it is past this size.
    private let journalLimit: Int
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)

    private struct Queue {
        var turns: [Turn] = []
        var flushes: [DispatchSemaphore] = []
        var stopping = false
        /// Why a turn that is nowhere else could not be recorded; nil once every turn is.
        var failure: String?

        /// Whether what is queued may wait for more turns: nobody waits on it.
        var mayGather: Bool { !turns.isEmpty && !stopping && flushes.isEmpty && turns.allSatisfy(\.done.isEmpty) }
    }

    init(
        registry: any Registry, journal: EventJournal, observers: Observers, retryInterval: Duration = .milliseconds(200),
        gatherInterval: Duration = .milliseconds(5), journalLimit: Int = 8 << 20
    ) {
        self.registry = registry
        self.journal = journal
        self.observers = observers
        self.retryInterval = retryInterval
        self.gatherInterval = gatherInterval
        self.journalLimit = journalLimit
        let thread = Thread { [self] in run() }
        thread.name = "necro-recorder"
        thread.start()
    }

    /// Queues a turn whose line is in the journal (or that recorded nothing, or, unjournalled,
    /// that the journal could not take).
    func enqueue(_ turn: Turn) {
        queue.withLock { $0.turns.append(turn) }
        wake.signal()
    }

    /// Why records are failing (a turn that is nowhere but here could not be recorded); nil if
    /// they are not.
    var failure: String? { queue.withLock { $0.failure } }

    /// While records are failing, queues the turn unjournalled (after those waiting already, so
    /// that no later turn is journalled ahead of them) and returns true; else false: the caller
    /// journals it.
    func enqueueIfFailing(_ turn: () -> Turn) -> Bool {
        let queued = queue.withLock { queue -> Bool in
            guard queue.failure != nil else { return false }
            queue.turns.append(turn())
            return true
        }
        if queued { wake.signal() }
        return queued
    }

    /// Returns once every turn queued before has been tried: true if recorded, false if records
    /// are failing (see `failure`).
    @discardableResult
    func flush() -> Bool {
        let done = DispatchSemaphore(value: 0)
        let running = queue.withLock { queue -> Bool in
            guard !queue.stopping else { return false }
            queue.flushes.append(done)
            return true
        }
        if running {
            wake.signal()
            done.wait()
        }
        return queue.withLock { $0.failure == nil }
    }

    /// Tries what is queued once more and stops.
    func finish() {
        queue.withLock { $0.stopping = true }
        wake.signal()
        stopped.wait()
    }

    // MARK: The writer's thread

    /// Turns not recorded yet, oldest first; those told as not recorded come first.
    private struct Backlog {
        var turns: [Turn] = []
        var told = 0
        /// Batches recorded since the journal was last emptied.
        var recordedSinceEmpty = 0
        /// Replay marks of lines the journal no longer holds, dropped with the next transaction.
        var forgetting: ClosedRange<String>?
    }

    private func run() {
        var backlog = Backlog()
        var lastTransaction = ContinuousClock.now
        while true {
            if backlog.turns.isEmpty {
                wake.wait()
            } else {
                _ = wake.wait(timeout: Self.dispatchTime(after: retryInterval))
            }
            gather(until: lastTransaction + gatherInterval)
            let (turns, flushes, stopping) = queue.withLock { queue in
                defer {
                    queue.turns.removeAll(keepingCapacity: true)
                    queue.flushes.removeAll()
                }
                return (queue.turns, queue.flushes, queue.stopping)
            }
            backlog.turns += turns
            if !backlog.turns.isEmpty {
                record(&backlog)
                lastTransaction = .now
            }
            for flush in flushes { flush.signal() }
            if stopping {
                // Whatever was queued while the last record was made.
                backlog.turns += takeQueuedTurns()
                if !backlog.turns.isEmpty { record(&backlog) }
                for turn in backlog.turns { turn.done.forEach { $0() } }
                queue.withLock { $0.flushes }.forEach { $0.signal() }
                stopped.signal()
                return
            }
        }
    }

    /// The turns queued since the last were taken.
    private func takeQueuedTurns() -> [Turn] {
        queue.withLock { queue in defer { queue.turns.removeAll() }; return queue.turns }
    }

    /// Waits until `deadline` for more turns to share the next transaction, unless somebody waits
    /// on what is queued (then, or as soon as somebody does, it goes in at once).
    private func gather(until deadline: ContinuousClock.Instant) {
        while queue.withLock({ $0.mayGather }) {
            let left = deadline - .now
            guard left > .zero else { return }
            _ = wake.wait(timeout: Self.dispatchTime(after: left))
        }
    }

    private static func dispatchTime(after duration: Duration) -> DispatchTime {
        let (seconds, attoseconds) = duration.components
        return .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }

    /// Records the backlog in one transaction (the turns told as not recorded in one of their own,
    /// so that their events are not told twice); on failure it is kept for the next try.
    private func record(_ backlog: inout Backlog) {
        do {
            if backlog.told > 0 {
                try apply(backlog.turns[..<backlog.told], telling: false, &backlog)
                backlog.turns.removeFirst(backlog.told)
                backlog.told = 0
            }
            if !backlog.turns.isEmpty {
                try apply(backlog.turns[...], telling: true, &backlog)
                backlog.turns.removeAll(keepingCapacity: true)
            }
        } catch {
            let untold = backlog.turns[backlog.told...].compactMap(\.batch).flatMap(\.transitions)
            // Whoever waits on a turn that is nowhere but here is let go now, not when (if ever)
            // it is recorded: a runner's heartbeat must not hang while the disk is full. (A
            // journalled turn is answered once the registry has it.) Told once: emptied.
            for index in backlog.told..<backlog.turns.count where !backlog.turns[index].journalled {
                let waiting = backlog.turns[index].done
                backlog.turns[index].done = []
                waiting.forEach { $0() }
            }
            backlog.told = backlog.turns.count
            if !untold.isEmpty { observers.notRecorded(untold) }
            if backlog.turns.contains(where: { !$0.journalled }) {
                let text = "\(error)"
                let first = queue.withLock { queue in defer { queue.failure = text }; return queue.failure == nil }
                if first { observers.failing(text) }
            }
            return
        }
        emptyJournal(&backlog)
        // Everything is in the registry, and nothing waits to be: records are written again.
        let caughtUp = queue.withLock { queue in
            guard queue.failure != nil, queue.turns.isEmpty else { return false }
            queue.failure = nil
            return true
        }
        if caughtUp { observers.caughtUp() }
    }

    /// Applies `turns` in one transaction, with the replay marks to forget, and lets them go: their
    /// status records freed, their events told (if `telling`), whoever waits on them answered.
    private func apply(_ turns: ArraySlice<Turn>, telling: Bool, _ backlog: inout Backlog) throws {
        let events = try registry.applyOnce(turns.compactMap(\.batch), forgetting: backlog.forgetting)
        backlog.forgetting = nil
        backlog.recordedSinceEmpty += turns.lazy.filter { $0.batch != nil && $0.journalled }.count
        observers.recorded(telling ? events : [], turns.flatMap(\.statusRecords))
        for turn in turns { turn.done.forEach { $0() } }
    }

    /// Empties the journal once the registry has all its lines; past its limit, the turns that
    /// came meanwhile are recorded with the loop held, so that it can be.
    private func emptyJournal(_ backlog: inout Backlog) {
        let catchUp = journal.size > journalLimit
        let emptied = journal.empty(ifHolding: backlog.recordedSinceEmpty) { count in
            guard catchUp else { return count }
            let late = takeQueuedTurns()
            guard !late.isEmpty else { return count }
            do {
                try apply(late[...], telling: true, &backlog)
                return backlog.recordedSinceEmpty
            } catch {
                queue.withLock { $0.turns.insert(contentsOf: late, at: 0) }  // tried again with the next turns
                return count
            }
        }
        guard let emptied else { return }
        backlog.recordedSinceEmpty = 0
        backlog.forgetting = backlog.forgetting.map { min($0.lowerBound, emptied.lowerBound)...max($0.upperBound, emptied.upperBound) } ?? emptied
    }
}
