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
}
