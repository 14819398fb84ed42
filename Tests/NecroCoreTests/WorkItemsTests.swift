import NecroCore
import Testing

@Suite struct WorkItemsTests {
    private func kinds(_ changes: [WorkItems.Change]) -> [String] {
        changes.map {
            switch $0 {
            case .dispatched(let item): "dispatched \(item.id)"
            case .started(let item): "started \(item.id)"
            case .done(let item): "done \(item.id)"
            case .failed(let item, _): "failed \(item.id)"
            }
        }
    }

    @Test func stepsAreDispatchedStartedAndDoneAsTheAgentSaysAndTheRestAtItsExit() throws {
        var items = WorkItems(steps: [("One", false), ("Two", false), ("Three", false)], taskTitle: "T")
        #expect(kinds(items.startNext()) == ["dispatched step_1", "started step_1"])
        #expect(kinds(try items.start(1)) == [], "started already")
        #expect(kinds(try items.finish(1)) == ["done step_1"])
        #expect(kinds(try items.finish(2)) == ["dispatched step_2", "started step_2", "done step_2"], "done without a start: started first")
        #expect(try items.finish(2).isEmpty && items.isDone(2) == true, "done already: nothing changes")
        #expect(try items.start(2).isEmpty)
        #expect(throws: WorkItems.Refusal.noSuchStep(4, count: 3)) { try items.start(4) }
        #expect(items.current == nil && items.doneIDs == ["step_1", "step_2"])
        #expect(kinds(try items.finish(3)) == ["dispatched step_3", "started step_3", "done step_3"])
        #expect(items.allDone)
    }

    @Test func doneStepsAreNotRedoneAndAFailureFailsWhatWasStarted() throws {
        var items = WorkItems(steps: [("One", true), ("Two", false), ("Three", false)], taskTitle: "T", done: ["step_2"])
        #expect(items.remaining.map(\.id) == ["step_3"])
        #expect(kinds(items.startNext()) == ["dispatched step_3", "started step_3"])
        #expect(kinds(items.failStarted("exit 1")) == ["failed step_3"])
        // A task without steps is one work item: the task itself.
        var single = WorkItems(steps: [], taskTitle: "Build it")
        #expect(single.items.map(\.title) == ["Build it"] && single.items.first?.span == "work_step_1")
        #expect(kinds(try single.finish(1)) == ["dispatched step_1", "started step_1", "done step_1"])
    }
}

@Suite struct PathComponentTests {
    @Test func anIdBecomesOneFileNameThatNoOtherIdMakes() {
        #expect(PathComponent.safe("s.1.a1-x") == "s.1.a1-x")
        #expect(PathComponent.safe("a/b") == "a%2Fb" && PathComponent.safe("a%2Fb") == "a%252Fb")
        #expect(PathComponent.safe("..") == "%2E." && PathComponent.safe(".hidden/x") == "%2Ehidden%2Fx")
        #expect(RunnerSpool.fileName(of: RunnerID("s/t.a1")) == "spool-s%2Ft.a1.jsonl")
    }
}
