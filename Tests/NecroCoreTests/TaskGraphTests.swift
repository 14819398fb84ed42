import Foundation
import NecroCore
import NecroTesting
import Testing

private func task(_ id: TaskID, _ deps: [TaskID] = [], parent: TaskID? = nil, group: Bool = false) -> TaskSpec {
    TaskSpec(id: id, title: "task \(id)", dependencies: deps, parent: parent, isGroup: group)
}

private func ids(_ graph: TaskGraph, _ indexes: [Int]) -> [TaskID] { indexes.map { graph.ids[$0] } }

@Suite struct TaskGraphTests {
    @Test func diamondBecomesReadyOnlyWhenBothSidesFinish() {
        let (graph, problems) = TaskGraph.build([task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c"])])
        #expect(problems.isEmpty)
        var tracker = ReadyTracker(graph: graph)
        #expect(ids(graph, tracker.readyTasks) == ["a"])
        let afterA = tracker.finish(0)
        #expect(ids(graph, afterA.ready).sorted() == ["b", "c"])
        let afterB = tracker.finish(1)
        #expect(afterB.ready.isEmpty, "d still waits on c")
        let afterC = tracker.finish(2)
        #expect(ids(graph, afterC.ready) == ["d"])
        let again = tracker.finish(2)
        #expect(again == ReadyTracker.Completion(), "finishing twice changes nothing")
    }

    @Test func completionTouchesOnlyTheOutEdges() {
        // A star: finishing the hub readies exactly its 1,000 dependents, nothing else.
        var tasks = [task("hub"), task("other")]
        for i in 0..<1000 { tasks.append(task(TaskID("leaf\(i)"), ["hub"])) }
        let (graph, _) = TaskGraph.build(tasks)
        var tracker = ReadyTracker(graph: graph)
        let other = tracker.finish(1)
        #expect(other.ready.isEmpty)
        let hub = tracker.finish(0)
        #expect(hub.ready.count == 1000)
    }

    @Test func alreadyFinishedTasksAreTakenIntoAccount() {
        let (graph, _) = TaskGraph.build([task("a"), task("b", ["a"]), task("c", ["b"])])
        let tracker = ReadyTracker(graph: graph, finished: [0])
        #expect(ids(graph, tracker.readyTasks) == ["b"])
        #expect(ids(graph, tracker.waitingOn(2)) == ["b"])
    }

    @Test func groupFinishesWithItsLastSubtaskAndReleasesItsDependents() {
        let (graph, problems) = TaskGraph.build([
            task("1"), task("2", ["1"], group: true), task("2.1", parent: "2"), task("2.2", ["2.1"], parent: "2"),
            task("3", ["2"]),
        ])
        #expect(problems.isEmpty)
        var tracker = ReadyTracker(graph: graph)
        // 2.1 inherits its group's dependency on 1.
        #expect(ids(graph, tracker.readyTasks) == ["1"])
        let first = tracker.finish(0)
        #expect(ids(graph, first.ready) == ["2.1"])
        let second = tracker.finish(2)
        #expect(ids(graph, second.ready) == ["2.2"])
        let last = tracker.finish(3)
        #expect(ids(graph, last.groupsFinished) == ["2"])
        #expect(ids(graph, last.ready) == ["3"], "a dependency on a group is on all of it")
    }

    @Test func referencesThatCannotBeEdgesAreReported() {
        let (_, problems) = TaskGraph.build([task("a", ["a", "zzz"]), task("a"), task("b", parent: "nope")])
        #expect(
            problems == [
                .duplicateID(index: 1, first: 0), .selfDependency(index: 0, dependency: 0),
                .unknownDependency(index: 0, dependency: 1), .unknownParent(index: 2),
            ])
    }

    @Test func cycleIsNamedAsAPath() {
        let (graph, _) = TaskGraph.build([task("1.1"), task("1.2", ["2.1"]), task("2.1", ["1.2"]), task("3", ["1.2"])])
        #expect(graph.cycles() == [["1.2", "2.1", "1.2"]])
        #expect(graph.topologicalOrder() == nil)
        #expect(graph.criticalPathLength() == nil)
    }

    @Test func everySeparateCycleIsReportedOnce() {
        let (graph, _) = TaskGraph.build([
            task("a", ["c"]), task("b", ["a"]), task("c", ["b"]),  // a -> c -> b -> a
            task("x", ["y"]), task("y", ["x"]), task("ok", ["a"]),
        ])
        let cycles = graph.cycles()
        #expect(cycles.count == 2)
        #expect(cycles.contains(["a", "c", "b", "a"]))
        #expect(cycles.contains(["x", "y", "x"]))
    }

    @Test func cycleThroughAGroupIsFound() {
        // 2.1 depends on its own group, which waits on 2.1.
        let (graph, _) = TaskGraph.build([task("2", group: true), task("2.1", ["2"], parent: "2")])
        #expect(graph.cycles() == [["2", "2.1", "2"]])
    }

    @Test func diamondsAreNotCycles() {
        let (graph, _) = TaskGraph.build([task("a"), task("b", ["a"]), task("c", ["a"]), task("d", ["b", "c", "a"])])
        #expect(graph.cycles().isEmpty)
        #expect(graph.criticalPathLength() == 3)
    }

    @Test func longChainDoesNotOverflowTheStack() {
        let n = 200_000
        var tasks = [task("0")]
        for i in 1..<n { tasks.append(task(TaskID(String(i)), [TaskID(String(i - 1))])) }
        tasks[0].dependencies = [TaskID(String(n - 1))]  // close the loop: one cycle of 200,000
        let (cyclic, _) = TaskGraph.build(tasks)
        let cycles = cyclic.cycles()
        #expect(cycles.count == 1)
        #expect(cycles.first?.count == n + 1)
        tasks[0].dependencies = []
        let (chain, _) = TaskGraph.build(tasks)
        #expect(chain.cycles().isEmpty)
        #expect(chain.criticalPathLength() == n)
    }

    @Test func criticalPathIgnoresGroupsAndCountsTasks() {
        let (graph, _) = TaskGraph.build([
            task("1"), task("2", group: true), task("2.1", ["1"], parent: "2"), task("2.2", ["2.1"], parent: "2"),
            task("3", ["2"]), task("4", ["1"]),
        ])
        #expect(graph.criticalPathLength() == 4)  // 1, 2.1, 2.2, 3
        #expect(ids(graph, graph.roots) == ["1"])
    }

    @Test func transitiveDependentsFollowEveryPath() {
        let (graph, _) = TaskGraph.build([task("a"), task("b", ["a"]), task("c", ["b"]), task("d", ["a", "c"]), task("e")])
        #expect(Set(ids(graph, graph.transitiveDependents(of: 0))) == ["b", "c", "d"])
    }
}

@Suite struct TaskIDTests {
    @Test func ordersNumericComponentsAsNumbers() {
        let sorted = ["1.10", "1.2", "10", "2", "1", "1.2.1", "a"].map { TaskID($0) }.sorted()
        #expect(sorted.map(\.rawValue) == ["1", "1.2", "1.2.1", "1.10", "2", "10", "a"])
        #expect(TaskID("2.1").dottedParent == "2")
        #expect(TaskID("2").dottedParent == nil)
    }
}

@Suite struct JSONTextTests {
    @Test func jsonTextIsWhatFoundationsEncoderWritesAndReadsBackTheSame() throws {
        let value: JSONValue = [
            "z": 1, "a": "slash / quote \" back \\ newline \n tab \t bell \u{07} é ✓", "n": .null, "t": true,
            "d": 0.886, "whole": .double(3), "neg": -12, "big": .double(1e300), "list": [1, "x", [:], []],
            "nested": ["b": [1.5, false], "a": .object([:])],
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let foundation = String(decoding: try encoder.encode(value), as: UTF8.self)
        #expect(value.jsonText == foundation)
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data(value.jsonText.utf8))
        #expect(decoded == (try JSONDecoder().decode(JSONValue.self, from: Data(foundation.utf8))))
    }
}

@Suite struct FNV1aTests {
    @Test func matchesThePublishedTestVectors() {
        // From the FNV reference (draft-eastlake-fnv): stable, since status records keep it.
        #expect(FNV1a.hash([UInt8]()) == 0xcbf2_9ce4_8422_2325)
        #expect(FNV1a.hash(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(FNV1a.hash(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
    }
}
