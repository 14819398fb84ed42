import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

/// Loads markdown text as a `tasks.md`, with an optional order asked for.
private func load(_ text: String, order: SpecOrder.Mode? = nil) throws -> LoadedSpec {
    let dir = try TemporaryDirectory("layout")
    defer { dir.remove() }
    return try SpecLoader.load(path: try dir.write("spec/tasks.md", text), order: order)
}

private func failure(_ text: String) throws -> SpecValidationError? {
    do {
        _ = try load(text)
        return nil
    } catch let error as SpecValidationError {
        return error
    }
}

private func dependencies(_ loaded: LoadedSpec) -> [String: [String]] {
    Dictionary(uniqueKeysWithValues: loaded.spec.tasks.map { ($0.id.rawValue, $0.dependencies.map(\.rawValue)) })
}

@Suite struct SpecOrderTests {
    @Test func withoutDependenciesEachTaskWaitsOnTheOneWrittenBeforeIt() throws {
        let loaded = try load(
            """
            - [ ] 1. One
            - [ ] 2. Group
              - [ ] 2.1 A
              - [ ] 2.2 B
            - [ ] 3. Three
            """)
        #expect(loaded.order.mode == .written)
        #expect(loaded.order.reason == "no task declares a dependency")
        #expect(dependencies(loaded) == ["1": [], "2": ["1"], "2.1": [], "2.2": ["2.1"], "3": ["2"]])
        // 2.1 inherits its group's wait on 1; the group is done with 2.2.
        let graph = loaded.validated.graph
        #expect(graph.taskDependencies(of: graph.index(of: "2.1")!) == [graph.index(of: "1")!])
        #expect(loaded.validated.widestLevel == 1)
        #expect(loaded.order.addedEdges == 3)
    }

    @Test func oneDeclarationMakesTheWholeSpecDeclaredAndAnOrderAskedForWins() throws {
        let text = """
            - [ ] 1. One
            - [ ] 2. Two
            - [ ] 3. Three
              - _Depends: 1_
            """
        let declared = try load(text)
        #expect(declared.order.mode == .declared)
        #expect(declared.order.reason == "1 task declares its dependencies (_Depends:_)")
        #expect(dependencies(declared) == ["1": [], "2": [], "3": ["1"]])
        #expect(declared.validated.widestLevel == 2)
        let written = try load(text, order: .written)
        #expect(written.order.mode == .written)
        #expect(dependencies(written) == ["1": [], "2": ["1"], "3": ["1", "2"]], "document order plus the declared edges")
        // A declaration of "none" still declares.
        let none = try load("- [ ] 1. One\n  - _Depends:_ none\n- [ ] 2. Two\n")
        #expect(none.order.mode == .declared)
        #expect(dependencies(none) == ["1": [], "2": []])
    }

    @Test func aCheckpointWaitsForEverythingBeforeAndEverythingAfterWaitsForIt() throws {
        let loaded = try load(
            """
            - [ ] 1. One
            - [ ] 2. Group
              - [ ] 2.1 A
              - [ ] 2.2 Checkpoint: the group's tests pass
              - [ ] 2.3 C
            - [ ] 3. Implement CheckpointManager
              - _Depends: 1_
            - [ ] 4. **Final Checkpoint** — everything passes
            - [ ] 5. After
            """)
        #expect(loaded.order.mode == .declared)
        #expect(loaded.order.barriers == ["2.2", "4"])
        let deps = dependencies(loaded)
        #expect(deps["2.2"] == ["2.1", "1"], "its earlier sibling and what comes before its group")
        #expect(deps["2.3"] == ["2.2"])
        #expect(deps["3"] == ["1", "2.2"])
        #expect(Set(deps["4"]!) == ["3", "2"], "what is written after the previous barrier")
        #expect(deps["5"] == ["4"])
    }

    @Test func aDeclaredEdgeAgainstABarrierIsACycle() throws {
        let error = try failure(
            """
            - [ ] 1. One
              - _Depends: 3_
            - [ ] 2. Checkpoint
            - [ ] 3. Three
            """)
        #expect(error?.issues.map(\.code) == [.dependencyCycle])
        #expect(error?.issues.first?.message.contains("1 -> 3 -> 2 -> 1") == true || error?.issues.first?.message.contains("2 -> 1 -> 3 -> 2") == true,
            "\(error?.issues ?? [])")
    }

    @Test func barrierTitles() {
        for title in [
            "Checkpoint", "Checkpoint - Ensure all tests pass", "checkpoint: verify", "Final checkpoint — all green",
            "**Checkpoint** - Verify", "Final Checkpoint - 全功能验证", "CHECKPOINT",
        ] {
            #expect(SpecOrder.isBarrierTitle(title), "\(title)")
        }
        for title in ["Implement CheckpointManager", "CheckpointManager", "Checkpointing", "Abschluss-Checkpoint", "Add a checkpoint", "Finalcheckpoint"] {
            #expect(!SpecOrder.isBarrierTitle(title), "\(title)")
        }
    }

    @Test func wavesOrderTheTasksTheyListAndTheRestFollowInOrder() throws {
        let loaded = try load(
            """
            # Implementation Plan
            - [ ] 1. Backend
              - [ ] 1.1 Schema
              - [ ] 1.2 API
            - [ ] 2. Frontend
              - [ ] 2.1 Layout
            - [ ] 3. Notes
            - [ ] 4. Release

            ## Task Dependency Graph
            ```json
            {"waves": [{"id": 0, "tasks": ["1.1", "2.1"]}, {"id": 1, "tasks": ["1.2", "9.9"]}]}
            ```
            """)
        #expect(loaded.order.mode == .declared)
        #expect(loaded.order.reason.hasPrefix("the waves block at line 11"))
        let deps = dependencies(loaded)
        #expect(deps["1.1"] == [] && deps["2.1"] == [])
        #expect(deps["1.2"] == ["1.1", "2.1"])
        #expect(deps["3"] == ["1.2"], "unlisted: after the last wave")
        #expect(deps["4"] == ["3"], "then in the order written")
        #expect(loaded.validated.widestLevel == 2)
        #expect(loaded.warnings.map(\.location.line) == [11], "a stale id in the waves block is warned about")
        #expect(loaded.warnings.first?.message.contains("9.9") == true)
    }

    @Test func aBrokenWavesBlockIsAnError() throws {
        let error = try failure("- [ ] 1. One\n\n```json\n{\"waves\": [{\"id\": 0, \"tasks\": [\"1\"]}\n```\n")
        #expect(error?.issues.map(\.code) == [.malformed])
        #expect(error?.issues.first?.location.line == 3)
    }

    @Test func theOrderFieldOfYAMLAndJSON() throws {
        let dir = try TemporaryDirectory("yaml-order")
        defer { dir.remove() }
        let yaml = try dir.write("s.yaml", "spec_name: s\norder: written\ntasks:\n  - {id: a, title: A}\n  - {id: b, title: B}\n")
        let loaded = try SpecLoader.load(path: yaml)
        #expect(loaded.order.mode == .written)
        #expect(loaded.spec.tasks[1].dependencies == ["a"])
        let declared = try SpecLoader.load(path: try dir.write("t.json", #"{"spec_name": "t", "tasks": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}"#))
        #expect(declared.order.mode == .declared, "structured specs run as declared by default")
        #expect(declared.spec.tasks[1].dependencies == [])
        let bad = try dir.write("u.yaml", "spec_name: u\norder: sideways\ntasks:\n  - {id: a, title: A}\n")
        do {
            _ = try SpecLoader.load(path: bad)
            Issue.record("a bad order must be refused")
        } catch {
            #expect(error.issues.first?.location.field == "order")
        }
    }
}

@Suite struct KiroLayoutTests {
    @Test func unnumberedCheckboxesUnderATaskAreItsSteps() throws {
        let loaded = try load(
            """
            - [ ] 1. Set up the project
              - [x] create the package
              - [ ] add the CI workflow
                - with caching
              - _Requirements: 1.1_
            - [ ] 2. Next
            """)
        let one = loaded.spec.tasks[0]
        #expect(one.steps == [TaskStep("create the package", done: true), TaskStep("add the CI workflow")])
        #expect(one.description == "with caching")
        #expect(!one.markedDone, "a numbered task's own checkbox says whether it is done")
        #expect(loaded.spec.tasks.count == 2)
    }

    @Test func headingsNumberedLikeTasksAreTasksAndOtherHeadingsSections() throws {
        let loaded = try load(
            """
            # Implementation Plan
            ## Phase 1: Foundation

            ### 1. Set up the repository
            Some words about it.
            - [x] create the folder
            - [x] commit

            ## Task 2: Write the parser
            - [x] tokens
            - [ ] grammar

            ### 3. Storage
            - [ ] 3.1 Schema
            - [ ] 3.2 Migrations

            ## 4. Overview
            Only prose here: a section.

            ## Phase 2
            - [ ] 5. Numbered under a section
            """)
        let byID = Dictionary(uniqueKeysWithValues: loaded.spec.tasks.map { ($0.id, $0) })
        #expect(loaded.spec.tasks.map(\.id) == ["1", "2", "3", "3.1", "3.2", "5"])
        #expect(byID["1"]?.title == "Set up the repository")
        #expect(byID["1"]?.markedDone == true, "done when every step is")
        #expect(byID["2"]?.title == "Write the parser")
        #expect(byID["2"]?.markedDone == false)
        #expect(byID["3"]?.isGroup == true, "its checkboxes are numbered under it: a group")
        #expect(byID["3.1"]?.parent == "3")
        #expect(byID["5"]?.parent == nil)
        #expect(loaded.order.mode == .written)
        #expect(byID["5"]?.dependencies == ["3"])
    }

    @Test func aChecklistAfterTheTasksIsIgnoredWithALocatedWarning() throws {
        let loaded = try load(
            """
            - [ ] 1. One
            - [ ] 2. Two

            ## Notes
            - [ ] Tasks marked with * are optional
            - [ ] Each task references requirements
            """)
        #expect(loaded.spec.tasks.map(\.id) == ["1", "2"])
        #expect(loaded.warnings.map(\.location.line) == [5, 6])
        #expect(loaded.warnings.allSatisfy { $0.code == .ignoredChecklist && $0.isWarning })
        #expect(loaded.warnings.first?.message.contains("under \"Notes\", line 4") == true)
        #expect(loaded.warnings.first?.description.hasSuffix("tasks.md:5: warning: \(loaded.warnings[0].message) [ignored-checklist]") == true)
    }

    @Test func aFileOfUnnumberedCheckboxesIsAListOfTasksInOrder() throws {
        let loaded = try load(
            """
            # Todo
            - [x] Write the README
            - [ ] Add a license
              - MIT
              - [ ] check the year
            - [ ]* Publish
            """)
        #expect(loaded.spec.tasks.map(\.id) == ["1", "2", "3"])
        #expect(loaded.spec.tasks.map(\.title) == ["Write the README", "Add a license", "Publish"])
        #expect(loaded.spec.tasks[1].steps == [TaskStep("check the year")])
        #expect(loaded.spec.tasks[1].description == "MIT")
        #expect(loaded.spec.tasks[0].markedDone && loaded.spec.tasks[2].optional)
        #expect(loaded.layout.numberedInOrder)
        #expect(loaded.spec.tasks[2].dependencies == ["2"])
    }

    @Test func aParentWithWorkOfItsOwnRunsAndAPureHeadingStaysAGroup() throws {
        let loaded = try load(
            """
            - [ ] 1. Data layer
              - [ ] 1.1 Schema
            - [ ] 2. Implement the order service
              - Create the service and its repository
              - [ ]* 2.1 Write property tests
            - [ ] 3. Wire it
              - _Requirements: 4.2_
              - [ ] 3.1 Routes
            - [ ] 4. Annotated group
              - _Skill: backend_
              - [ ] 4.1 Only subtask
            """)
        let byID = Dictionary(uniqueKeysWithValues: loaded.spec.tasks.map { ($0.id, $0) })
        #expect(byID["1"]?.isGroup == true && byID["1"]?.runsOwnWork == false)
        #expect(byID["2"]?.runsOwnWork == true && byID["2"]?.isGroup == false, "a description of its own")
        #expect(byID["3"]?.runsOwnWork == true, "requirements of its own")
        #expect(byID["4"]?.isGroup == true, "other annotations are not work")
        let graph = loaded.validated.graph
        func deps(_ id: TaskID) -> [TaskID] { graph.taskDependencies(of: graph.index(of: id)!).map { graph.ids[$0] } }
        #expect(!graph.isGroup[graph.index(of: "2")!])
        #expect(Set(deps("2.1")) == ["2", "1.1"], "the subtask waits on its parent's own work (and, with it, on 1)")
        #expect(Set(deps("3")) == ["2", "2.1"], "what follows waits on the parent and its subtasks")
    }

    @Test func whatRealSpecsWriteIsRead() throws {
        let loaded = try load(
            """
            # 実装計画
            - [~] 1. 準備
              - _Requirements:_ 1.1, 1.2
              - _Boundary:_ Dispatch Facet
            - [-] 2. Implementar
              - _Requisitos: 2.1_
            - [ ]\\* 3. Optional with an escaped star



              - the detail, after blank lines
            - [ ] 4. Code
              ```markdown
              - [ ] 9. not a task: inside a code block
              ```
            """)
        let byID = Dictionary(uniqueKeysWithValues: loaded.spec.tasks.map { ($0.id, $0) })
        #expect(loaded.spec.tasks.map(\.id) == ["1", "2", "3", "4"])
        #expect(byID["1"]?.metadata["requirements"] == ["1.1", "1.2"])
        #expect(byID["1"]?.metadata["boundary"] == "Dispatch Facet")
        #expect(byID["2"]?.metadata["requirements"] == ["2.1"])
        #expect(byID["3"]?.optional == true)
        #expect(byID["3"]?.description == "the detail, after blank lines")
        #expect(byID["4"]?.description.contains("- [ ] 9. not a task") == true)
        #expect(loaded.layout.inProgressMarks == 2)
        #expect(loaded.spec.tasks.filter(\.markedDone).isEmpty)
    }

    @Test func aPriorityInWordsIsANoteWithAWarningNotAnError() throws {
        let loaded = try load("- [ ] 1. Raft log\n  - _Priority: Critical_\n- [ ] 2. Snapshots\n  - _Priority: 3_\n")
        #expect(loaded.spec.tasks.map(\.priority) == [0, 3])
        #expect(loaded.spec.tasks[0].metadata["priority"] == "Critical")
        #expect(loaded.warnings.map(\.location.line) == [2])
        #expect(loaded.warnings.first?.message.contains("\"Critical\" is kept as a note") == true)
    }

    @Test func anUnnumberedCheckboxRightAfterATaskIsAnErrorThatSaysWhatToDo() throws {
        let error = try failure("- [ ] 1. One\n- [ ] something\n")
        #expect(error?.issues.map(\.code) == [.ambiguous])
        #expect(error?.issues.first?.location.line == 2)
    }

    @Test func aFileWithoutTasksIsAnError() throws {
        for text in ["", "# Implementation Plan\n\nNothing yet.\n", "## Notes\n"] {
            let error = try failure(text)
            #expect(error?.issues.map(\.code) == [.noTasks], "\(text)")
        }
        let dir = try TemporaryDirectory("binary")
        defer { dir.remove() }
        let path = dir.file("tasks.md")
        _ = FileManager.default.createFile(atPath: path, contents: Data([0x7f, 0x45, 0x4c, 0x46, 0, 0, 1]))
        do {
            _ = try SpecLoader.load(path: path)
            Issue.record("a binary file must not load")
        } catch {
            #expect(error.issues.first?.code == .unreadable)
            #expect(error.issues.first?.message.contains("not a text file") == true)
        }
    }
}
