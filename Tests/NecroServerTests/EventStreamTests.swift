import AsyncHTTPClient
import Foundation
import NIOCore
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroServer
import NecroTesting
import Testing

/// A client of `/v1/events/stream`: the ids of the events it got, in order, and whether the stream
/// said the run ended.
private struct StreamReader {
    let client: HTTPClient
    let url: String

    struct Result: Sendable {
        var ids: [Int64] = []
        var ended = false
        var keepAlives = 0
    }

    /// Reads until the stream ends, or until `stopAfter` events (then it drops the connection).
    func read(
        lastEventID: Int64? = nil, stopAfter: Int? = nil, onFirstEvent: @Sendable () -> Void = {},
        onFirstKeepAlive: @Sendable () -> Void = {}, into result: inout Result
    ) async throws {
        // The read-only token, in the address, as the dashboard sends it.
        let token = AccessKeys(adminToken: "admin-secret", runnerKey: Array(repeating: 7, count: 32)).readToken
        var request = HTTPClientRequest(url: url + "/v1/events/stream?token=\(token)")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
        let response = try await client.execute(request, timeout: .seconds(120))
        guard response.status == .ok, response.headers.first(name: "Content-Type") == "text/event-stream" else {
            throw ServerError("stream answered \(response.status)")
        }
        var pending = ""
        var got = 0
        for try await buffer in response.body {
            pending += String(buffer: buffer)
            while let end = pending.range(of: "\n\n") {
                let frame = pending[..<end.lowerBound]
                pending.removeSubrange(..<end.upperBound)
                if frame.hasPrefix(":") {
                    result.keepAlives += 1
                    if result.keepAlives == 1 { onFirstKeepAlive() }
                    continue
                }
                if frame.hasPrefix("event: end") { result.ended = true; continue }
                guard let idLine = frame.split(separator: "\n").first(where: { $0.hasPrefix("id: ") }), let id = Int64(idLine.dropFirst(4)) else {
                    continue
                }
                result.ids.append(id)
                got += 1
                if got == 1 { onFirstEvent() }
                if let stopAfter, got >= stopAfter { return }  // the response is dropped: the connection closes
            }
        }
    }
}

@Suite(.serialized) struct EventStreamTests {
    @Test func aHundredSubscribersEachGetTheWholeRunInOrderOnceEvenOneThatReconnects() async throws {
        // 60 tasks in layers; the first waits on a FIFO so that every subscriber is there mid-run.
        var tasks = [task("t0")]
        for i in 1..<60 { tasks.append(task(TaskID("t\(i)"), [TaskID("t\((i - 1) / 3)")])) }
        let script = #"if [ "$NECRO_TASK_ID" = t0 ]; then read line < "$ROOT/go"; fi; echo "$NECRO_TASK_ID""#
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: tasks), script: script, concurrency: 4, keepRunning: false, keepAlive: .milliseconds(200))
        #expect(mkfifo(f.dir.file("go"), 0o644) == 0)
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 200
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let reader = StreamReader(client: client, url: f.url)
        let (connected, connection) = AsyncStream.makeStream(of: Void.self)

        let results = try await withThrowingTaskGroup(of: StreamReader.Result.self) { group in
            for subscriber in 0..<100 {
                group.addTask {
                    var result = StreamReader.Result()
                    if subscriber == 0 {
                        // Disconnected mid-run, then resumed from the last id it got.
                        try await reader.read(stopAfter: 150, onFirstEvent: { connection.yield() }, into: &result)
                        try await reader.read(lastEventID: result.ids.last, into: &result)
                    } else {
                        try await reader.read(onFirstEvent: { connection.yield() }, into: &result)
                    }
                    return result
                }
            }
            // Everyone is connected once the first events (the import's) reached them all; then the run goes on.
            var count = 0
            for await _ in connected {
                count += 1
                if count == 100 { break }
            }
            release(f.dir.file("go"))
            var all: [StreamReader.Result] = []
            for try await result in group { all.append(result) }
            return all
        }
        let outcome = try await f.run.value
        #expect(outcome.succeeded)
        let recorded = try f.registry.events(EventQuery()).map(\.id)
        #expect(recorded.count > 300)
        #expect(try f.registry.events(EventQuery()).prefix(150).contains { $0.type == .runnerFinished }, "the reconnect was mid-run")
        #expect(try f.registry.events(EventQuery()).prefix(150).contains { $0.type == .runnerFinished }, "the reconnect was mid-run")
        #expect(results.count == 100)
        for (index, result) in results.enumerated() {
            #expect(result.ids == recorded, "subscriber \(index): \(result.ids.count) of \(recorded.count) events, in order, none twice")
            #expect(result.ended, "subscriber \(index) was told the run ended")
        }
        #expect(results.contains { $0.keepAlives > 0 }, "idle streams get keep-alive comments")
        try await client.shutdown()
        await f.finish()
    }

    @Test func eventsRecordedBesideTheDispatchersUpdatesStillReachALiveStreamInOrder() async throws {
        // As `necro serve`: nothing to run at first. A taskset imported through the API records
        // its TaskImported events itself, not through the dispatcher's updates.
        let f = try await ServerFixture(nil, keepAlive: .milliseconds(50))
        var updates = f.dispatcher.updates().makeAsyncIterator()
        let reader = StreamReader(client: HTTPClient.shared, url: f.url)
        let (live, isLive) = AsyncStream.makeStream(of: Void.self)
        let reading = Task {
            var result = StreamReader.Result()
            try await reader.read(onFirstKeepAlive: { isLive.yield() }, into: &result)
            return result
        }
        // The stream has read the (empty) registry and waits for live events: only then the import.
        var waiting = live.makeAsyncIterator()
        #expect(await next(&waiting, within: .seconds(30)) != nil, "the stream sends keep-alives")
        let json = #"{"spec_name": "j", "tasks": [{"id": "a", "title": "A"}, {"id": "b", "title": "B", "dependencies": ["a"]}]}"#
        let created = try await f.call(.POST, "/v1/tasksets", token: "admin-secret", body: json, contentType: "application/json")
        #expect(created.status == 201)
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "b" } != nil)
        f.dispatcher.shutdownNow()
        let result = try await reading.value
        let recorded = try f.registry.events(EventQuery())
        #expect(recorded.filter { $0.type == .taskImported }.count == 2)
        #expect(result.ids == recorded.map(\.id), "every recorded event once, in order, the import's included")
        #expect(result.ended)
        await f.finish()
    }

    @Test func anObserverThatFallsBehindIsDroppedAndTheDispatcherGoesOn() async throws {
        let tasks = (0..<30).map { task(TaskID("t\($0)")) }
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: tasks), concurrency: 4, keepRunning: false, startRun: false)
        // Two observers from the start: one reads nothing until the end, with room for 3 updates.
        let slow = f.dispatcher.updates(buffer: 3)
        let keen = f.dispatcher.updates()
        f.startRun()
        let keenCount = Task { var count = 0; for await update in keen { if case .events(let batch) = update { count += batch.count } }; return count }
        let outcome = try await f.run.value  // not held up by the slow one
        #expect(outcome.succeeded)
        var slowUpdates = 0
        for await _ in slow { slowUpdates += 1 }
        #expect(slowUpdates == 3, "it got what fit, then its stream ended: it may read the rest from the registry")
        #expect(await keenCount.value > 90, "the other got every event")
        // One that comes after the end is told at once.
        var late = f.dispatcher.updates().makeAsyncIterator()
        guard case .finished(let told)? = await late.next() else {
            Issue.record("a late observer must be told the run is over")
            return
        }
        #expect(told == outcome)
        await f.finish()
    }
}
