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
    /// the dispatcher before reading the registry, and skips live events it already sent. Idle
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
            var last = filter.after
            // What the client missed, page by page.
            while true {
                var page = filter
                page.after = last
                page.limit = 1000
                let events = try registry.events(page)
                for event in events {
                    try await writer.write(Self.frame(event))
                    last = event.id
                }
                if events.count < 1000 { break }
            }
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
                    for event in batch where event.id > last && Self.matches(event, filter) {
                        try await writer.write(Self.frame(event))
                        last = event.id
                    }
                case .update(.finished):
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

    private enum StreamItem: Sendable {
        case update(Dispatcher<ContinuousClock>.Update)
        case keepAlive
    }

    static func matches(_ event: EventRecord, _ query: EventQuery) -> Bool {
        guard event.id > 0 else { return false }  // not recorded yet (fallback journal): it comes with its id later
        if let spec = query.spec, event.spec != spec { return false }
        if let task = query.task, event.taskID != task { return false }
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
