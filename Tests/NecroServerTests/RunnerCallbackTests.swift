import Foundation
import NIOHTTP1
import NecroCore
import NecroDispatcher
import NecroRegistry
import NecroServer
import NecroTesting
import Testing

/// A runner calls its API with curl, as an agent wrapper would: `$NECRO_API_URL`,
/// `$NECRO_RUNNER_TOKEN`, `$RUNNER_ID`.
private let callAPI = #"""
call() { curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $NECRO_RUNNER_TOKEN" -H 'Content-Type: application/json' ${2:+-d "$2"} "$NECRO_API_URL/v1/runners/$1"; }
"""#

@Suite(.serialized) struct RunnerCallbackTests {
    /// Events sent late keep the time they happened; one sent again with the same `runner_seq`
    /// (its answer lost) is recorded once.
    @Test func aRunnersEventsKeepTheirOwnTimeAndAreRecordedOnceWhenSentAgain() async throws {
        let script = callAPI + "\n" + #"""
            body='{"events": [{"event_type": "phase_enter", "phase": "planning", "timestamp": 1700000000.5, "runner_seq": 1}, {"event_type": "phase_exit", "phase": "planning", "runner_seq": 2}]}'
            {
              echo "first $(call "$RUNNER_ID/events" "$body")"
              echo "again $(call "$RUNNER_ID/events" "$body")"
              echo "bad-time $(call "$RUNNER_ID/events" '{"event_type": "phase_enter", "timestamp": "yesterday"}')"
              echo "future $(call "$RUNNER_ID/events" '{"event_type": "phase_enter", "timestamp": 99999999999}')"
              echo "bad-seq $(call "$RUNNER_ID/events" '{"event_type": "phase_enter", "runner_seq": 0}')"
            } > "$ROOT/codes"
            """#
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("talker")]), script: script)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted } != nil)
        #expect(try String(contentsOfFile: f.dir.file("codes"), encoding: .utf8) == "first 200\nagain 200\nbad-time 400\nfuture 400\nbad-seq 400\n")
        let reported = try f.registry.events(EventQuery(spec: "s", task: "talker")).filter { EventType.runnerTypes.contains($0.type) && $0.actor == "runner" }
        #expect(reported.map(\.type) == [.phaseEnter, .phaseExit])
        #expect(reported.first?.timestamp == Timestamp(secondsSince1970: 1_700_000_000.5))
        #expect(reported.map { $0.payload["runner_seq"] } == [1, 2])
    }

    @Test func aRunnerReportsOnItselfWithItsOwnTokenAndOnlyWhileItRuns() async throws {
        // "peer" waits on a FIFO so that it runs while "talker" tries its token on it.
        let script = callAPI + "\n" + #"""
            if [ "$NECRO_TASK_ID" = peer ]; then echo "$RUNNER_ID" > "$ROOT/peer-id"; read line < "$ROOT/go"; exit 0; fi
            while [ ! -s "$ROOT/peer-id" ]; do sleep 0.01; done
            {
              echo "heartbeat $(call "$RUNNER_ID/heartbeat")"
              echo "events $(call "$RUNNER_ID/events" '{"events": [{"event_type": "phase_enter", "phase": "planning"}, {"event_type": "work_item_start", "span_id": "work_wi_1", "parent_span_id": "main", "actor": "worker", "payload": {"work_item_id": "wi_1"}}]}')"
              echo "one $(call "$RUNNER_ID/events" '{"event_type": "phase_exit", "phase": "planning"}')"
              echo "checkpoint $(call "$RUNNER_ID/checkpoints" '{"checkpoint_id": "ckpt-1", "sequence_number": 1}')"
              echo "unknown-type $(call "$RUNNER_ID/events" '{"event_type": "TaskCompleted"}')"
              echo "peer-with-own-token $(call "$(cat "$ROOT/peer-id")/heartbeat")"
              echo "peer-events-with-own-token $(call "$(cat "$ROOT/peer-id")/events" '{"event_type": "runner_exit"}')"
              NECRO_RUNNER_TOKEN=made-up; echo "made-up-token $(call "$RUNNER_ID/heartbeat")"
            } > "$ROOT/codes"
            """#
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("peer"), task("talker")]), script: script)
        #expect(mkfifo(f.dir.file("go"), 0o644) == 0)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        let done = await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "talker" }
        #expect(done != nil)
        let codes = try String(contentsOfFile: f.dir.file("codes"), encoding: .utf8)
        #expect(
            codes == """
                heartbeat 204
                events 200
                one 200
                checkpoint 201
                unknown-type 400
                peer-with-own-token 403
                peer-events-with-own-token 403
                made-up-token 403

                """)
        // Recorded on its task, in order, with the spans and phases given.
        let events = try f.registry.events(EventQuery(spec: "s", task: "talker"))
        let ours: Set<String> = ["dispatcher", "registry"]
        // (The dispatcher's own lease events for this plain runner are not its reports.)
        let reported = events.filter { $0.payload["runner_id"] != nil && EventType.runnerTypes.contains($0.type) }
        #expect(reported.map(\.type.rawValue) == ["phase_enter", "work_item_start", "phase_exit", "checkpoint_commit"])
        #expect(reported[1].spanID == "work_wi_1" && reported[1].parentSpanID == "main" && reported[1].actor == "worker")
        #expect(reported[0].phase == "planning" && reported[0].spanID == "main")
        #expect(reported[3].payload["checkpoint_id"] == "ckpt-1")
        #expect(events.map(\.seq) == Array(1...Int64(events.count)), "one gapless seq with the dispatcher's own events")
        #expect(try f.registry.events(EventQuery(spec: "s", task: "peer")).allSatisfy { ours.contains($0.actor) || $0.actor == "lease_manager" }, "nothing on the peer's task")
        let talker = try #require(try f.registry.runners(runningOnly: false).first { $0.task.id == "talker" })
        #expect(talker.lastHeartbeat != nil)

        // Its token stops working when it ends.
        let ended = try await f.post("/v1/runners/\(talker.id.rawValue)/heartbeat", token: f.keys.token(for: talker.id))
        #expect(ended.status == 403 && ended.code == "runner_not_running")
        let peer = RunnerID(try String(contentsOfFile: f.dir.file("peer-id"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        // The peer's own token, while it runs, works for it.
        #expect(try await f.post("/v1/runners/\(peer.rawValue)/heartbeat", token: f.keys.token(for: peer)).status == 204)
        // It reads its own task and runner, nothing else.
        let own = f.keys.token(for: peer)
        #expect(try await f.get("/v1/tasks/s/peer", token: own).status == 200)
        #expect(try await f.get("/v1/runners/\(peer.rawValue)", token: own).status == 200)
        #expect(try await f.get("/v1/runners/\(peer.rawValue)/log", token: own).status == 200)
        #expect(try await f.get("/v1/tasks/s/talker", token: own).status == 403)
        #expect(try await f.get("/v1/runners/\(talker.id.rawValue)", token: own).status == 403)
        #expect(try await f.get("/v1/tasks", token: own).status == 403)
        let noToken = try await f.post("/v1/runners/\(peer.rawValue)/heartbeat", token: nil)
        #expect(noToken.status == 401)
        let badBody = try await f.call(
            .POST, "/v1/runners/\(peer.rawValue)/events", token: f.keys.token(for: peer), body: #"{"events": [{"event_type": "phase_enter", "span_id": 3}]}"#)
        #expect(badBody.status == 400 && badBody.json?["error"]?["field"] == "events[0].span_id")
        let noCheckpointID = try await f.call(.POST, "/v1/runners/\(peer.rawValue)/checkpoints", token: f.keys.token(for: peer), body: "{}")
        #expect(noCheckpointID.json?["error"]?["field"] == "checkpoint_id")
        release(f.dir.file("go"))
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted && $0.taskID == "peer" } != nil)
        await f.finish()
    }

    @Test func aLaterAttemptFindsTheLastCheckpointInItsContext() async throws {
        // Attempt 1 reports a checkpoint and fails; attempt 2 reads it from TASK_CONTEXT.
        let script = callAPI + "\n" + #"""
            if [ "$NECRO_ATTEMPT" = 1 ]; then call "$RUNNER_ID/checkpoints" '{"checkpoint_id": "after-step-2", "sequence_number": 2}' > /dev/null; exit 1; fi
            printf '%s' "$TASK_CONTEXT" > "$ROOT/context.json"
            """#
        let f = try await ServerFixture(TaskSetSpec(name: "s", tasks: [task("resumable")]), script: script, retries: 2)
        var updates = f.dispatcher.updates().makeAsyncIterator()
        #expect(await f.awaitEvent(&updates) { $0.type == .taskCompleted } != nil)
        let context = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: f.dir.file("context.json"))))
        #expect(context["attempt"] == 2)
        #expect(context["checkpoint"]?["checkpoint_id"] == "after-step-2")
        #expect(context["checkpoint"]?["sequence_number"] == 2)
        await f.finish()
    }
}
