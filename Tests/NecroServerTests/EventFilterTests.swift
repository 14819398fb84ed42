import NecroCore
import Testing

@testable import NecroServer

@Suite struct EventFilterTests {
    private func event(_ id: Int64, spec: String = "s", task: TaskID? = "a", _ type: EventType) -> EventRecord {
        EventRecord(
            id: id, spec: spec, taskID: task, seq: id, type: type, actor: "dispatcher", spanID: nil, parentSpanID: nil,
            phase: nil, payload: [:], timestamp: Timestamp(secondsSince1970: 0))
    }

    @Test func aLiveEventGoesToAStreamWhenItsSpecTaskAndTypeMatch() {
        let failures = EventQuery(spec: "s", type: .taskFailed)
        #expect(NecroAPI.matches(event(1, .taskFailed), failures))
        #expect(!NecroAPI.matches(event(2, .taskAssigned), failures), "another type")
        #expect(!NecroAPI.matches(event(3, spec: "other", .taskFailed), failures), "another spec")
        #expect(!NecroAPI.matches(event(0, .taskFailed), failures), "not recorded yet: it comes with its id")
        let oneTask = EventQuery(task: "a")
        #expect(NecroAPI.matches(event(4, .taskAssigned), oneTask) && !NecroAPI.matches(event(5, task: "b", .taskAssigned), oneTask))
    }
}
