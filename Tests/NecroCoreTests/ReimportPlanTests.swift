import NecroCore
import Testing

private func stored(_ pairs: [(TaskID, String)], parent: [TaskID: TaskID] = [:], removed: Set<TaskID> = []) -> [ReimportPlan.Stored] {
    pairs.map { ReimportPlan.Stored(id: $0.0, title: $0.1, parent: parent[$0.0], removed: removed.contains($0.0)) }
}

private func tasks(_ pairs: [(TaskID, String)], parent: [TaskID: TaskID] = [:]) -> [TaskSpec] {
    pairs.map { TaskSpec(id: $0.0, title: $0.1, parent: parent[$0.0]) }
}

private func rename(_ from: TaskID, _ to: TaskID) -> ReimportPlan.Rename { ReimportPlan.Rename(from: from, to: to) }

@Suite struct ReimportPlanTests {
    @Test func aTaskInsertedAtTwoIsNewAndTheRenumberedOnesKeepTheirHistory() {
        let plan = ReimportPlan.make(
            stored: stored([("1", "Schema"), ("2", "Service"), ("3", "API")]),
            tasks: tasks([("1", "Schema"), ("2", "Audit log"), ("3", "Service"), ("4", "API")]), version: 2)
        #expect(plan.added == ["2"])
        #expect(plan.renumbered == [rename("2", "3"), rename("3", "4")])
        #expect(plan.movedAside.isEmpty && plan.removed.isEmpty)
        #expect(plan.kept == ["1", "3", "4"])
    }

    @Test func titlesMatchWhateverTheirSpacingAndCase() {
        let plan = ReimportPlan.make(
            stored: stored([("1", "Set up  the Project")]), tasks: tasks([("1", " set up the project ")]), version: 2)
        #expect(plan.isEmpty && plan.kept == ["1"])
    }

    @Test func aTaskWhoseTitleChangedIsNewAndTheOneItReplacesLeavesWithItsHistory() {
        let plan = ReimportPlan.make(stored: stored([("1", "Schema"), ("2", "Service")]), tasks: tasks([("1", "Schema"), ("2", "Billing")]), version: 3)
        #expect(plan.added == ["2"])
        #expect(plan.movedAside == [rename("2", "2@v3")])
        #expect(plan.removed == ["2@v3"], "cancelled, kept under its new id")
        #expect(plan.renames == [rename("2", "2@v3")])
    }

    @Test func aTaskGoneFromTheSpecIsRemovedUnderItsOwnId() {
        let plan = ReimportPlan.make(stored: stored([("1", "Schema"), ("2", "Service")]), tasks: tasks([("1", "Schema")]), version: 2)
        #expect(plan.removed == ["2"] && plan.renames.isEmpty)
    }

    @Test func anIdOnceRemovedAndNowTakenByAnotherTaskMovesTheOldHistoryAside() {
        let plan = ReimportPlan.make(
            stored: stored([("1", "Schema"), ("2", "Old")], removed: ["2"]), tasks: tasks([("1", "Schema"), ("2", "New")]), version: 4)
        #expect(plan.added == ["2"])
        #expect(plan.movedAside == [rename("2", "2@v4")])
        #expect(plan.removed.isEmpty, "it was removed already")
    }

    @Test func repeatedTitlesAreToldApartByTheirParentThenTheirPlace() {
        let old = stored(
            [("1", "Auth"), ("1.1", "Write tests"), ("2", "Chat"), ("2.1", "Write tests"), ("2.2", "Write tests")],
            parent: ["1.1": "1", "2.1": "2", "2.2": "2"])
        let new = tasks(
            [("1", "Intro"), ("2", "Auth"), ("2.1", "Write tests"), ("3", "Chat"), ("3.1", "Write tests"), ("3.2", "Write tests")],
            parent: ["2.1": "2", "3.1": "3", "3.2": "3"])
        let plan = ReimportPlan.make(stored: old, tasks: new, version: 2)
        #expect(plan.added == ["1"])
        #expect(
            Set(plan.renumbered) == [rename("1", "2"), rename("1.1", "2.1"), rename("2", "3"), rename("2.1", "3.1"), rename("2.2", "3.2")])
    }

    @Test func tasksThatTradeIdsAreBothRenumbered() {
        let plan = ReimportPlan.make(stored: stored([("1", "A"), ("2", "B")]), tasks: tasks([("1", "B"), ("2", "A")]), version: 2)
        #expect(Set(plan.renumbered) == [rename("1", "2"), rename("2", "1")])
        #expect(plan.added.isEmpty && plan.movedAside.isEmpty)
    }
}
