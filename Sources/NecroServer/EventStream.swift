import Foundation
import Hummingbird
import NecroCore
import NecroDispatcher
import NecroRegistry

extension NecroAPI {
    /// `GET /v1/events/stream`: server-sent events, each with its global id as `id:`.
    ///
    /// A client that reconnects with `Last-Event-ID` (or `?after=`) first gets what it missed from
    /// the registry, in order, then what happens next, live, with nothing twice: it subscribes to
    /// the dispatcher before reading the registry, and skips live events it already sent. Events
    /// recorded without passing through the dispatcher's updates (a taskset's import, a fallback
    /// journal's replay, another process's `necro retry`) leave a gap in the live ids: the gap is
    /// read from the registry before the event after it goes out. Idle
    /// streams get keep-alive comments. A client that falls too far behind is disconnected (its
    /// subscription dropped, never the dispatcher slowed) and may resume from its last id.
    func eventStream(_ request: Request) throws -> Response {
        var query = try eventQuery(request, defaultLimit: nil)
        if let header = request.headers.lastEventID {
            guard let last = Int64(header.trimmingCharacters(in: .whitespaces)), last >= 0 else {
                throw APIError.badRequest("Last-Event-ID must be an event id", field: "Last-Event-ID")
            }
            query.after = max(query.after, last)
        }
        let filter = query
        // Subscribed first: what is recorded while the registry is read is not missed.
        let updates = dispatcher.updates(buffer: streamBuffer)
        let registry = self.registry
        let keepAlive = self.keepAlive
        let streamBuffer = self.streamBuffer
        let body = ResponseBody { writer in
            var cursor = StreamCursor(filter: filter, recorded: try registry.lastEventID())
            /// Sends what the registry holds that the stream has not covered, up to `bound`
            /// (excluded), page by page.
            func sendMissed(before bound: Int64?) async throws {
                while case let events = try cursor.missed(from: registry, before: bound), !events.isEmpty {
                    for event in events { try await writer.write(Self.frame(event)) }
                }
            }
            // What the client missed.
            try await sendMissed(before: nil)
            // Then live, with a keep-alive comment when nothing else goes out. The queue to this
            // client is bounded: a client that cannot keep up is disconnected (and resumes by id).
            let (items, continuation) = AsyncStream.makeStream(of: StreamItem.self, bufferingPolicy: .bufferingOldest(streamBuffer))
            let forward = Task {
                for await update in updates {
                    if case .dropped = continuation.yield(.update(update)) { break }
                }
                continuation.finish()
            }
            let ticks = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepAlive)
                    continuation.yield(.keepAlive)
                }
            }
            defer {
                forward.cancel()
                ticks.cancel()
            }
            loop: for await item in items {
                switch item {
                case .keepAlive:
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                case .update(.events(let batch)):
                    for event in batch where event.id > 0 {
                        try await sendMissed(before: event.id)
                        if cursor.take(event) { try await writer.write(Self.frame(event)) }
                    }
                case .update(.finished):
                    // What was recorded after the last update (a journal replayed at the end).
                    try await sendMissed(before: nil)
                    try await writer.write(ByteBuffer(string: "event: end\ndata: {}\n\n"))
                    break loop
                case .update(.output):
                    continue
                }
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "keep-alive"],
            body: body)
    }

    /// Where a stream is: the last event it sent, and up to which id every event that matches has
    /// been sent (the ids in between that did not match, or that another writer holds).
    struct StreamCursor {
        let filter: EventQuery
        private(set) var sent: Int64
        private(set) var covered: Int64
        /// The registry's last id when the stream began: covered once the first reads are done.
        private let recordedAtStart: Int64

        /// For a stream that starts after `filter.after`; `recorded` is the registry's last id, read
        /// before anything else is.
        init(filter: EventQuery, recorded: Int64) {
            self.filter = filter
            sent = filter.after
            covered = filter.after
            recordedAtStart = recorded
        }

        /// The next page of events after what was covered that match, read from the registry, up to
        /// `bound` (excluded) if there is one; empty once nothing more is missing.
        mutating func missed(from registry: SQLiteRegistry, before bound: Int64?) throws -> [EventRecord] {
            let from = max(covered, sent)
            if let bound, bound <= from + 1 { return [] }
            var query = filter
            query.after = from
            query.limit = 1000
            var events = try registry.events(query)
            // All read: fewer than a page, or the page went past the bound.
            let complete = events.count < 1000 || bound.map { events.last!.id >= $0 } ?? false
            if let bound { events.removeAll { $0.id >= bound } }
            if let lastRead = events.last?.id { sent = lastRead }
            if !complete {
                covered = max(covered, sent)
            } else if let bound {
                covered = bound - 1
            } else {
                // Nothing more now: what the registry held when the stream began is all sent.
                covered = max(covered, recordedAtStart, sent)
            }
            return events
        }

        /// Whether a live event goes out: one not sent yet that matches. Either way it is covered.
        mutating func take(_ event: EventRecord) -> Bool {
            defer { covered = max(covered, event.id) }
            guard event.id > sent, NecroAPI.matches(event, filter) else { return false }
            sent = event.id
            return true
        }
    }

    private enum StreamItem: Sendable {
        case update(Dispatcher<ContinuousClock>.Update)
        case keepAlive
    }

    static func matches(_ event: EventRecord, _ query: EventQuery) -> Bool {
        guard event.id > 0 else { return false }  // not recorded yet (the registry could not be written): it comes with its id later
        if let spec = query.spec, event.spec != spec { return false }
        if let task = query.task, event.taskID != task { return false }
        if let type = query.type, event.type != type { return false }
        return true
    }

    static func frame(_ event: EventRecord) -> ByteBuffer {
        var bytes = Array("id: \(event.id)\ndata: ".utf8)
        event.json.write(to: &bytes)
        bytes.append(contentsOf: [10, 10])
        return ByteBuffer(bytes: bytes)
    }
}

extension HTTPFields {
    /// The `Last-Event-ID` header of a reconnecting event stream client.
    var lastEventID: String? { self.first { $0.name.canonicalName == "last-event-id" }?.value }
}
