import Foundation
import NecroCore
import Testing

@testable import NecroCLI

@Suite struct RunDisplayTests {
    @Test func aLineReadBeforeTheRunnersAssignmentIsShownOnceItComes() {
        var live = LiveRunners()
        let id = RunnerID("s.a.a1")
        live.output(id, "cloning the repository")
        #expect(live.running.isEmpty, "not shown before its assignment")
        live.assigned(id, task: "a", pool: "local", at: Date())
        #expect(live.running[id]?.lastLine == "cloning the repository")
        live.output(id, "writing tests")
        #expect(live.running[id]?.lastLine == "writing tests")
    }

    @Test func aFinishedRunnerLeavesNothingBehind() {
        var live = LiveRunners()
        let id = RunnerID("s.a.a1")
        live.assigned(id, task: "a", pool: "local", at: Date())
        live.finished(id)
        #expect(live.running.isEmpty)
        // A line kept for a runner that is never seen assigned goes with its end.
        let other = RunnerID("s.b.a1")
        live.output(other, "early")
        live.finished(other)
        live.assigned(other, task: "b", pool: "local", at: Date())
        #expect(live.running[other]?.lastLine == "")
    }

    @Test func countsOfOneAreSingular() {
        func event(_ type: EventType, _ payload: [String: JSONValue]) -> EventRecord {
            EventRecord(
                id: 1, spec: "s", taskID: "a", seq: 1, type: type, actor: "dispatcher", spanID: nil, parentSpanID: nil, phase: nil,
                payload: payload, timestamp: Timestamp(secondsSince1970: 0))
        }
        #expect(describe(event(.taskFailed, ["retry_count": 0, "attempts": 1, "failure_reason": "exit code 1"])) == "FAILED after 1 attempt: exit code 1")
        #expect(describe(event(.taskFailed, ["retry_count": 2, "attempts": 3, "failure_reason": "exit code 1"])) == "FAILED after 3 attempts: exit code 1")
        #expect(describe(event(.dispatcherStarted, ["scheduling_policy": "priority", "tasks": 1])) == "dispatcher started (priority, 1 task)")
        #expect(describe(event(.recoveryDetected, ["expired_count": 1])) == "recovery: 1 task left running")
        #expect(counted(1, "task") == "1 task" && counted(0, "task") == "0 tasks" && counted(2, "runner") == "2 runners")
    }

    @Test func eventsInTextShowActorSpanAndPhaseWhenTheyHaveThem() {
        let reported = EventRecord(
            id: 7, spec: "s", taskID: "a", seq: 3, type: .workItemStart, actor: "worker", spanID: "work_wi_1", parentSpanID: "main",
            phase: "executing", payload: ["work_item_id": "wi_1"], timestamp: Timestamp(secondsSince1970: 0))
        #expect(Events.text(reported).contains("work_item_start  [actor worker, span work_wi_1 < main, phase executing] {"))
        let own = EventRecord(
            id: 8, spec: "s", taskID: "a", seq: 4, type: .taskReady, actor: "dispatcher", spanID: nil, parentSpanID: nil, phase: nil,
            payload: [:], timestamp: Timestamp(secondsSince1970: 0))
        #expect(Events.text(own).hasSuffix("seq 4  TaskReady"), "\(Events.text(own))")
    }
}
