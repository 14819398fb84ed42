import AsyncHTTPClient
import Foundation
import NIOHTTP1
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroServer
import NecroTesting
import Testing

@Suite(.serialized) struct RouteTests {
    @Test func everyReadRouteAnswersFromTheRegistry() async throws {
        let spec = TaskSetSpec(name: "s", tasks: [task("a", skill: "db"), task("b", ["a"]), task("c", ["b"])])
        let f = try await ServerFixture(spec, script: #"echo "working on $NECRO_TASK_ID""#)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "c" } != nil)

        let health = try await f.get("/healthz")
        #expect(health.status == 200 && health.json?["status"] == "ok")
        #expect((health.json?["last_event_id"]?.intValue ?? 0) > 0)
        let sets = try await f.get("/v1/tasksets")
        #expect(sets.json?.arrayValue?.first?["counts"]?["done"] == 3, "the list names the counts as one taskset does")
        let set = try await f.get("/v1/tasksets/s")
        #expect(set.json?["tasks"]?.arrayValue?.map { $0["id"]?.stringValue } == ["a", "b", "c"])
        #expect(set.json?["counts"]?["done"] == 3 && set.json?["counts"]?["failed"] == 0 && set.json?["version"] == 1)
        #expect(try await f.get("/v1/tasksets/nope").status == 404)

        #expect(try await f.get("/v1/tasks").json?.arrayValue?.count == 3)
        #expect(try await f.get("/v1/tasks?skill=db").json?.arrayValue?.map { $0["id"]?.stringValue } == ["a"])
        #expect(try await f.get("/v1/tasks?state=done,failed&spec=s&limit=2").json?.arrayValue?.count == 2)
        let badState = try await f.get("/v1/tasks?state=finished")
        #expect(badState.status == 400 && badState.json?["error"]?["field"] == "state")
        #expect(try await f.get("/v1/tasks?limit=0").json?["error"]?["field"] == "limit")

        let b = try await f.get("/v1/tasks/s/b")
        #expect(b.json?["state"] == "done" && b.json?["dependencies"] == ["a"])
        #expect(b.json?["runners"]?.arrayValue?.count == 1)
        #expect(b.json?["events"]?.arrayValue?.compactMap { $0["event_type"]?.stringValue }.contains("TaskCompleted") == true)
        #expect(try await f.get("/v1/tasks/s/zz").code == "not_found")

        let runners = try await f.get("/v1/runners").json?.arrayValue ?? []
        #expect(runners.count == 3)
        #expect(try await f.get("/v1/runners?running=true").json?.arrayValue?.isEmpty == true)
        let id = try #require(runners.first { $0["task_id"] == "b" }?["id"]?.stringValue)
        let runner = try await f.get("/v1/runners/\(id)")
        #expect(runner.json?["exit"] == "exit code 0" && runner.json?["pool"] == "local")
        let log = try await f.get("/v1/runners/\(id)/log")
        #expect(log.status == 200 && log.text == "working on b\n")
        #expect(try await f.get("/v1/runners/\(id)/log?bytes=2").text == "b\n")
        #expect(try await f.get("/v1/runners/\(id)/log?bytes=x").json?["error"]?["field"] == "bytes")
        #expect(try await f.get("/v1/runners/nobody").status == 404)

        let pools = try await f.get("/v1/pools").json?.arrayValue ?? []
        #expect(pools.first?["name"] == "local" && pools.first?["max_concurrency"] == 2 && pools.first?["running"] == 0)

        let events = try await f.get("/v1/events?task=b&limit=100").json?.arrayValue ?? []
        #expect(events.compactMap { $0["seq"]?.intValue } == Array(1...events.count))
        #expect(Set(events.compactMap { $0["task_id"]?.stringValue }) == ["b"])
        let after = try #require(events.first?["id"]?.intValue)
        #expect(try await f.get("/v1/events?task=b&after=\(after)&limit=1").json?.arrayValue?.first?["seq"] == 2)
        let assigned = try await f.get("/v1/events?type=TaskAssigned").json?.arrayValue ?? []
        #expect(assigned.count == 3 && assigned.allSatisfy { $0["event_type"] == "TaskAssigned" }, "\(assigned)")
        #expect(try await f.get("/v1/events?limit=-1").json?["error"]?["field"] == "limit")
        #expect(try await f.get("/v1/events?after=-1").json?["error"]?["field"] == "after")

        let metrics = try await f.get("/metrics")
        #expect(metrics.status == 200 && metrics.text.contains("necro_tasks{state=\"done\"} 3"))
        // Every metric says what it counts, and in which unit.
        let lines = metrics.text.split(separator: "\n").map(String.init)
        let types = lines.indices.filter { lines[$0].hasPrefix("# TYPE ") }
        #expect(types.count >= 8)
        for index in types {
            let name = lines[index].split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) ") && lines[index - 1].hasSuffix(")."), "\(lines[index])")
        }
        let dashboard = try await f.get("/")
        #expect(dashboard.status == 200 && dashboard.text.contains("new EventSource(") && !dashboard.text.contains("http://") == false)
        #expect(!dashboard.text.contains("src=\"http"), "nothing loaded from elsewhere")

        let unknown = try await f.get("/v1/nothing")
        #expect(unknown.status == 404 && unknown.code == "not_found")
        await f.finish()
    }

    @Test func changesNeedTheAdminTokenAndReachTheRunningDispatcher() async throws {
        // "gate" waits until the test opens it; "later" waits on it; "failing" fails once.
        let script = #"if [ "$NECRO_TASK_ID" = gate ]; then read line < "$ROOT/go"; fi; if [ "$NECRO_TASK_ID" = failing ] && [ ! -e "$ROOT/fixed" ]; then exit 3; fi"#
        let spec = TaskSetSpec(name: "s", tasks: [task("gate"), task("later", ["gate"]), task("other", ["gate"]), task("failing")])
        let f = try await ServerFixture(spec, script: script)
        #expect(mkfifo(f.dir.file("go"), 0o644) == 0)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        #expect(await f.awaitEvent(&updates) { $0.type == .taskFailed && $0.taskID == "failing" } != nil)

        // No token, a wrong one: refused, nothing changes.
        let anonymous = try await f.post("/v1/tasks/s/later/cancel", token: nil)
        #expect(anonymous.status == 401 && anonymous.code == "unauthorized")
        let wrong = try await f.post("/v1/tasks/s/later/cancel", token: "guess")
        #expect(wrong.status == 403 && wrong.code == "forbidden")
        #expect(try await f.post("/v1/pools/local/disable", token: nil).status == 401)
        #expect(try await f.post("/v1/tasks/s/failing/retry", token: nil).status == 401)

        // With it: cancel, priority, retry, pools.
        // Each answers once its turn is recorded, with the task as it then is.
        let cancelled = try await f.post("/v1/tasks/s/later/cancel")
        #expect(cancelled.status == 200 && cancelled.json?["state"] == "cancelled")
        let prioritised = try await f.post("/v1/tasks/s/other/priority", json: #"{"priority": 7}"#)
        #expect(prioritised.status == 200)
        #expect(prioritised.json?["events"]?.arrayValue?.last?["payload"]?["to"] == 7)
        let badPriority = try await f.post("/v1/tasks/s/other/priority", json: #"{"priority": "high"}"#)
        #expect(badPriority.status == 400 && badPriority.json?["error"]?["field"] == "priority")
        let notJSON = try await f.post("/v1/tasks/s/other/priority", json: "{priority")
        #expect(notJSON.status == 400 && notJSON.code == "bad_request")
        let twice = try await f.post("/v1/tasks/s/other/priority", json: "{\"priority\": 1,\n \"priority\": 9}")
        #expect(twice.status == 400 && twice.text.contains("duplicate key priority (line 2)"), "\(twice.text)")
        #expect(try await f.post("/v1/tasks/s/missing/retry").status == 404)

        let disabled = try await f.post("/v1/pools/local/disable")
        #expect(disabled.status == 200 && disabled.json?["enabled"] == false)
        #expect(try await f.get("/v1/pools").json?.arrayValue?.first?["enabled"] == false)
        #expect(try await f.post("/v1/pools/nope/disable").status == 404)
        try f.dir.write("fixed", "")
        // The pool is disabled: the retried task waits.
        let retried = try await f.post("/v1/tasks/s/failing/retry")
        #expect(retried.status == 200 && retried.json?["state"] == "ready")
        #expect(try await f.post("/v1/pools/local/enable").json?["enabled"] == true)
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "failing" } != nil)
        #expect(try f.registry.poolSettings()["local"] == true, "remembered for the next start")

        release(f.dir.file("go"))
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "other" } != nil)
        let done = try await f.post("/v1/tasks/s/other/retry")
        #expect(done.status == 409 && done.json?["error"]?["message"]?.stringValue?.contains("s/other is done: nothing to retry") == true, "\(done.text)")
        await f.finish()
    }

    @Test func specsSentInAreValidatedAsTheCLIDoesThenRun() async throws {
        let f = try await ServerFixture(nil)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        let invalid = try await f.call(
            .POST, "/v1/tasksets?format=md&name=broken", token: "admin-secret",
            body: "- [ ] 1. One\n  - _Depends: 9_\n- [ ] 1. Again\n")
        #expect(invalid.status == 400 && invalid.code == "invalid_spec")
        let issues = invalid.json?["error"]?["issues"]?.arrayValue ?? []
        #expect(issues.map { $0["line"]?.intValue } == [2, 3])
        #expect(issues.map { $0["code"]?.stringValue } == ["unknown-dependency", "duplicate-id"])
        let yaml = try await f.call(
            .POST, "/v1/tasksets", token: "admin-secret", body: "spec_name: y\ntasks:\n  - id: a\n    title: A\n    priorty: 3\n",
            contentType: "application/yaml")
        #expect(yaml.json?["error"]?["issues"]?.arrayValue?.first?["field"] == "tasks[0].priorty")
        #expect(try await f.call(.POST, "/v1/tasksets?format=xml", token: "admin-secret", body: "x").json?["error"]?["field"] == "format")
        #expect(try await f.call(.POST, "/v1/tasksets", body: "{}").status == 401)
        #expect(try f.registry.taskSets().isEmpty, "nothing imported")

        let json = #"{"spec_name": "j", "tasks": [{"id": "a", "title": "A"}, {"id": "b", "title": "B", "dependencies": ["a"]}]}"#
        let created = try await f.call(.POST, "/v1/tasksets", token: "admin-secret", body: json, contentType: "application/json")
        #expect(created.status == 201 && created.json?["added"] == ["a", "b"])
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "b" && $0.spec == "j" } != nil)
        let markdown = try await f.call(.POST, "/v1/tasksets?name=m", token: "admin-secret", body: "- [ ] 1. One\n- [ ] 2. Two\n  - _Depends: 1_\n")
        #expect(markdown.status == 201 && markdown.json?["spec"] == "m")
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "2" && $0.spec == "m" } != nil)
        // Sent again under the same name: refused unless it is to replace the taskset.
        let clash = try await f.call(.POST, "/v1/tasksets?name=m", token: "admin-secret", body: "- [ ] 1. Other\n")
        #expect(clash.status == 409 && clash.code == "taskset_exists", "never silently replaced")
        #expect(clash.json?["error"]?["message"]?.stringValue?.contains("taskset m exists (version 1") == true)
        #expect(try f.registry.tasks(spec: "m").map(\.task.title) == ["One", "Two"])
        // Replacing it, unchanged: nothing new, and it stays done.
        let again = try await f.call(
            .POST, "/v1/tasksets?name=m&replace=true", token: "admin-secret", body: "- [ ] 1. One\n- [ ] 2. Two\n  - _Depends: 1_\n")
        #expect(again.status == 200 && again.json?["unchanged"] == 2)
        // Markdown carries no name of its own.
        let unnamed = try await f.call(.POST, "/v1/tasksets", token: "admin-secret", body: "# Implementation Plan\n- [ ] 1. One\n")
        #expect(unnamed.status == 400 && unnamed.json?["error"]?["field"] == "name")
        #expect(try await f.call(.POST, "/v1/tasksets?name=m&replace=perhaps", token: "admin-secret", body: "- [ ] 1. One\n").status == 400)
        await f.finish()
    }

    @Test func aSpecSentInTakesTheOrderAskedFor() async throws {
        let f = try await ServerFixture(nil)
        let body = "- [ ] 1. One\n- [ ] 2. Two\n- [ ] 3. Three\n  - _Depends: 1_\n"
        let bad = try await f.call(.POST, "/v1/tasksets?name=w&order=sideways", token: "admin-secret", body: body)
        #expect(bad.status == 400 && bad.json?["error"]?["field"] == "order")
        let written = try await f.call(.POST, "/v1/tasksets?name=w&order=written", token: "admin-secret", body: body)
        #expect(written.status == 201)
        let dependencies = Dictionary(uniqueKeysWithValues: try f.registry.tasks(spec: "w").map { ($0.task.id, $0.task.dependencies) })
        #expect(dependencies == ["1": [], "2": ["1"], "3": ["1", "2"]], "document order plus the declared edge")
        let declared = try await f.call(.POST, "/v1/tasksets?name=d", token: "admin-secret", body: body)
        #expect(declared.status == 201)
        #expect(try f.registry.tasks(spec: "d").first { $0.task.id == "2" }?.task.dependencies == [], "declared by default here")
        let badOptional = try await f.call(.POST, "/v1/tasksets?name=o&with_optional=maybe", token: "admin-secret", body: body)
        #expect(badOptional.status == 400 && badOptional.json?["error"]?["field"] == "with_optional")
        #expect(try await f.call(.POST, "/v1/tasksets?name=o&with_optional=true", token: "admin-secret", body: body).status == 201)
        #expect(try f.registry.taskSets().first { $0.name == "o" }?.runOptional == true)
        #expect(try f.registry.taskSets().first { $0.name == "d" }?.runOptional == false)
        await f.finish()
    }

    /// A body over the limit is refused before it is read, and so is one sent without a valid
    /// token: the answer comes while the client has sent only its headers.
    @Test func anOversizedOrUnauthorizedBodyIsRefusedBeforeItIsRead() async throws {
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("a")]), bodyLimitMB: 1)
        let port = try #require(Int(f.url.split(separator: ":").last ?? ""))
        let hundredMB = 100 << 20
        let anonymous = try answerToHeadersOnly(port: port, "POST /v1/tasksets?name=x HTTP/1.1\r\nHost: t\r\nContent-Type: application/yaml\r\nContent-Length: \(hundredMB)\r\n\r\n")
        #expect(anonymous.hasPrefix("HTTP/1.1 401"), "\(anonymous)")
        let large = try answerToHeadersOnly(
            port: port,
            "POST /v1/tasksets?name=x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer admin-secret\r\nContent-Type: application/yaml\r\nContent-Length: \(hundredMB)\r\n\r\n")
        #expect(large.hasPrefix("HTTP/1.1 413") && large.contains("larger than 1 MB (dispatcher.max_request_body_mb"), "\(large)")
        // Sent in chunks (no length said): cut off at the limit, 413 as well, not a 500.
        let chunk = String(repeating: "x", count: 1 << 19)
        var chunked = "POST /v1/tasksets?name=x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer admin-secret\r\nContent-Type: application/yaml\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += String(repeating: "80000\r\n\(chunk)\r\n", count: 3) + "0\r\n\r\n"
        let cut = try answerToHeadersOnly(port: port, chunked)
        #expect(cut.hasPrefix("HTTP/1.1 413"), "\(cut.prefix(200))")
        // A runner's call is checked before its body too.
        let runner = try answerToHeadersOnly(
            port: port, "POST /v1/runners/nobody/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer admin-secret\r\nContent-Length: \(hundredMB)\r\n\r\n")
        #expect(runner.hasPrefix("HTTP/1.1 403"), "\(runner.prefix(200))")
        await f.finish()
    }

    @Test func aRetryOfATasksetTheDispatcherDoesNotRunPutsItBackAndHasItRun() async throws {
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("a")]))
        var updates = f.dispatcher.updates().makeAsyncIterator()
        // Imported beside the dispatcher and failed in an earlier run: not one it runs.
        try f.registry.importTaskSet(TaskSetSpec(name: "other", tasks: [task("x")]), source: nil)
        try f.registry.apply([Transition(spec: "other", task: "x", to: .failed, attempts: 1, reason: .some("exit code 1"))])
        let retried = try await f.post("/v1/tasks/other/x/retry")
        #expect(retried.status == 200 && retried.json?["state"] != "failed", "\(retried.text)")
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.spec == "other" && $0.taskID == "x" } != nil)
        await f.finish()
    }

    @Test func readsNeedATokenEvenOnLoopbackTheAdminsOrTheReadOnlyOne() async throws {
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("a")]))
        for path in ["/v1/tasks", "/v1/tasks/s/a", "/v1/tasksets", "/v1/tasksets/s", "/v1/events", "/v1/runners", "/v1/pools", "/v1/events/stream"] {
            let anonymous = try await f.get(path, token: nil)
            #expect(anonymous.status == 401 && anonymous.text.contains("necro token --read"), "\(path): \(anonymous.status)")
            #expect(try await f.get(path, token: "guess").status == 403, "\(path)")
        }
        #expect(try await f.get("/v1/tasks", token: "admin-secret").status == 200)
        let read = f.keys.readToken
        #expect(read != f.keys.adminToken && read.count == 64)
        #expect(try await f.get("/v1/tasks", token: read).status == 200)
        #expect(try await f.get("/v1/events?limit=1", token: read).status == 200)
        #expect(try await f.get("/v1/tokens/read").json?["token"]?.stringValue == read, "the admin may ask for it (the dashboard does)")
        #expect(try await f.get("/v1/tokens/read", token: read).status == 403)
        #expect(try await f.get("/v1/events/stream?token=admin-secret", token: nil).status == 403, "never the admin token in an address")
        let change = try await f.post("/v1/pools/local/disable", token: read)
        #expect(change.status == 403, "the read-only token changes nothing")
        #expect(try await f.get("/healthz", token: nil).status == 200, "health is for probes")
        #expect(try await f.get("/metrics", token: nil).status == 200, "metrics hold no task's data")
        await f.finish()
    }
}

/// Sends `request` (headers, and whatever else it holds) on a new connection and returns what the
/// server answers within 10 s, without sending anything more.
private func answerToHeadersOnly(port: Int, _ request: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port)).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return "cannot connect" }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
        let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if count <= 0 { break }  // the server may close once it has answered
        sent += count
    }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while !String(decoding: answer, as: UTF8.self).contains("\r\n\r\n") || answer.count < 20 {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        answer += buffer[..<count]
        if String(decoding: answer, as: UTF8.self).contains("}\n") { break }
    }
    return String(decoding: answer, as: UTF8.self)
}
