import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

private let example = "\(repositoryRoot)/Examples/chat-app"

private func load(_ name: String, _ text: String) throws -> Result<LoadedSpec, SpecValidationError> {
    let dir = try TemporaryDirectory("spec")
    let path = try dir.write(name, text)
    do { return .success(try SpecLoader.load(path: path)) } catch { return .failure(error) }
}

private func issues(_ name: String, _ text: String) throws -> [SpecIssue] {
    switch try load(name, text) {
    case .success: return []
    case .failure(let error): return error.issues
    }
}

@Suite struct FormatEquivalenceTests {
    @Test func theThreeFormatsOfTheExampleGiveTheSameTasks() throws {
        let markdown = try SpecLoader.load(path: "\(example)/tasks.md").spec
        let yaml = try SpecLoader.load(path: "\(example)/tasks.yaml").spec
        let json = try SpecLoader.load(path: "\(example)/tasks.json").spec
        #expect(markdown.name == "chat-app")
        #expect(markdown.tasks.count == 17)
        for (a, b) in zip(markdown.tasks, yaml.tasks) { #expect(a == b, "task \(a.id)") }
        #expect(markdown == yaml)
        #expect(yaml == json)
    }

    @Test func theExampleReadsAsWritten() throws {
        let spec = try SpecLoader.load(path: "\(example)/tasks.md").spec
        let byID = Dictionary(uniqueKeysWithValues: spec.tasks.map { ($0.id, $0) })
        #expect(byID["1"]?.markedDone == true)
        #expect(byID["2"]?.isGroup == true)
        #expect(byID["2.1"]?.parent == "2", "nested by indentation")
        #expect(byID["3.1"]?.parent == "3", "written flush under its group, nested by its id")
        #expect(byID["2.3"]?.optional == true)
        #expect(byID["3.1"]?.timeoutSeconds == 1800)
        #expect(byID["3.1"]?.priority == 9)
        #expect(byID["3.1"]?.description == "Sign-up, login and token refresh endpoints\nPasswords hashed with Argon2")
        #expect(byID["3.2"]?.resources == TaskResources(cpu: 2, memoryMB: 2048))
        #expect(byID["3.3"]?.dependencies == ["3.1", "3.2"])
        #expect(byID["3.3"]?.maxAttempts == 4)
        #expect(byID["5"]?.dependencies == ["3", "4"])
        #expect(byID["6"]?.gates == [["sh", "-c", "test -f DEPLOY.md"]])
        #expect(byID["7"]?.timeoutSeconds == 3600)
    }
}

@Suite struct KiroMarkdownTests {
    @Test func requirementsAreMetadataNeverDependencies() throws {
        let text = """
            - [ ] 1. Auth
              - _Requirements: 2, 3.1_
            - [ ] 2. Chat
              - _Requirements: 1_
              - _Depends: 1_
            - [ ] 3. Other
            """
        let spec = try load("tasks.md", text).get().spec
        #expect(spec.tasks[0].dependencies.isEmpty)
        #expect(spec.tasks[0].metadata["requirements"] == ["2", "3.1"])
        #expect(spec.tasks[1].dependencies == ["1"])
        // Had requirements been read as dependencies, 1 -> 2 -> 1 would be a cycle.
        #expect(spec.tasks[1].metadata["requirements"] == ["1"])
    }

    @Test func attributesAndCheckboxes() throws {
        let text = """
            # Plan
            Intro paragraph.

            - [x] 1. Done already
            - [ ]* 2. Optional one
              - first line of description
              - _Dependencies: 1_
              - _Skill: frontend_
              - _Priority: -3_
              - _Timeout: 1h30m_
              - _Attempts: 5_
              - _Gate: swift test --filter "Auth Tests"_
              - _Gate: npm run build && npm test_
              - _Leverage: src/auth_
              second line without bullet
            - [-] 3. In progress counts as not done
            """
        let spec = try load("tasks.md", text).get().spec
        #expect(spec.tasks.map(\.markedDone) == [true, false, false])
        let two = spec.tasks[1]
        #expect(two.optional)
        #expect(two.dependencies == ["1"])
        #expect(two.requiredSkill == "frontend")
        #expect(two.priority == -3)
        #expect(two.timeoutSeconds == 5400)
        #expect(two.maxAttempts == 5)
        // A gate written as a shell line runs in a shell; a plain one is split into argv.
        #expect(two.gates == [["swift", "test", "--filter", "Auth Tests"], ["sh", "-c", "npm run build && npm test"]])
        #expect(two.metadata["leverage"] == "src/auth")
        #expect(two.description == "first line of description\nsecond line without bullet")
    }

    @Test func specNameComesFromTheFolder() {
        #expect(SpecLoader.defaultName(forPath: "specs/chat-app/tasks.md") == "chat-app")
        #expect(SpecLoader.defaultName(forPath: "/x/billing.yaml") == "billing")
    }

    @Test func eachErrorNamesItsLineAndAllComeOutTogether() throws {
        let text = """
            - [ ] 1. First
              - _Depends: 9_
            - [ ] 1. Again
            - [ ] 2. Self
              - _Depends: 2_
            - [ ] 3. A
              - _Depends: 4_
            - [ ] 4. B
              - _Depends: 3_
              - _Priority: high_
            - [ ] 5.
            - [ ] Title without id
              - _Timeout: later_
            """
        let found = try issues("tasks.md", text)
        let byCode = Dictionary(grouping: found, by: \.code)
        #expect(byCode[.unknownDependency]?.first?.location == SourceLocation(file: found[0].location.file, line: 2))
        #expect(byCode[.duplicateID]?.first?.location.line == 3)
        #expect(byCode[.duplicateID]?.first?.message.contains("first declared at line 1") == true)
        #expect(byCode[.selfDependency]?.first?.location.line == 5)
        #expect(byCode[.dependencyCycle]?.first?.message == "dependency cycle: 3 -> 4 -> 3")
        #expect(byCode[.dependencyCycle]?.first?.location.line == 6)
        #expect(found.allSatisfy { !$0.isWarning }, "a word as a priority is only a warning")
        #expect(byCode[.missingField]?.first?.location.line == 11)
        #expect(byCode[.ambiguous]?.map { $0.location.line } == [12], "an unnumbered checkbox right after a task")
        #expect(byCode[.ambiguous]?.first?.message.contains("indent it under task 5") == true)
        #expect(found.count == 6, "\(found)")
        #expect(found.map { $0.location.line ?? 0 } == found.map { $0.location.line ?? 0 }.sorted(), "in file order")
    }

    @Test func cycleIsPrintedAsAPath() throws {
        let text = """
            - [ ] 1.1 A
            - [ ] 1.2 B
              - _Depends: 2.1_
            - [ ] 2.1 C
              - _Depends: 1.2_
            """
        let found = try issues("tasks.md", text)
        #expect(found.map(\.message) == ["dependency cycle: 1.2 -> 2.1 -> 1.2"])
        #expect(found.first?.description.hasSuffix("tasks.md:2: error: dependency cycle: 1.2 -> 2.1 -> 1.2 [dependency-cycle]") == true)
    }
}

@Suite struct StructuredFormatTests {
    @Test func yamlTypeErrorsCarryFieldPathAndLine() throws {
        let text = """
            spec_name: bad
            tasks:
              - id: "1"
                title: A
                priority: high
                dependencies: "2"
              - id: "2"
                titel: B
              - id: "3"
                title: C
                dependencies: ["3", "99"]
                resources: {cpu: fast}
                optional: maybe
            """
        let found = try issues("bad.yaml", text)
        func at(_ field: String) -> SpecIssue? { found.first { $0.location.field == field } }
        #expect(at("tasks[0].priority")?.code == .wrongType)
        #expect(at("tasks[0].priority")?.location.line == 5)
        #expect(at("tasks[0].dependencies")?.message == "expected a list, found a string")
        #expect(at("tasks[1].titel")?.code == .unknownField)
        #expect(at("tasks[1].title")?.code == .missingField)
        #expect(at("tasks[2].resources.cpu")?.code == .wrongType)
        #expect(at("tasks[2].optional")?.location.line == 13)
        #expect(at("tasks[2].dependencies[0]")?.code == .selfDependency)
        #expect(at("tasks[2].dependencies[1]")?.code == .unknownDependency)
        #expect(at("tasks[2].dependencies[1]")?.location.line == 11)
        #expect(found.count == 8, "\(found)")
    }

    @Test func yamlDuplicatesAndCyclesAcrossSubtasks() throws {
        let text = """
            spec_name: cyc
            tasks:
              - id: "1"
                title: Group
                subtasks:
                  - {id: "1.1", title: A, dependencies: ["2"]}
                  - {id: "1.1", title: Again}
              - {id: "2", title: B, dependencies: ["1"]}
            """
        let found = try issues("cyc.yaml", text)
        #expect(found.contains { $0.code == .duplicateID && $0.location.field == "tasks[0].subtasks[1]" && $0.location.line == 7 })
        #expect(found.contains { $0.code == .dependencyCycle && $0.message == "dependency cycle: 1 -> 1.1 -> 2 -> 1" })
    }

    @Test func malformedYamlGivesItsLine() throws {
        let found = try issues("m.yaml", "spec_name: x\ntasks:\n  - id: \"1\"\n    title: [unclosed\n")
        #expect(found.count == 1)
        #expect(found.first?.code == .malformed)
        #expect(found.first?.location.line == 5)
    }

    @Test func malformedJsonGivesItsLine() throws {
        let found = try issues("m.json", "{\"spec_name\": \"x\",\n \"tasks\": [ {\"id\": , \"title\": \"a\"}]}")
        #expect(found.count == 1)
        #expect(found.first?.code == .malformed)
        #expect(found.first?.location.line == 2)
        #expect(found.first?.message.contains("column 20") == true)
    }

    @Test func jsonWrongTypesCarryFieldPaths() throws {
        let text = #"{"spec_name": "j", "tasks": [{"id": 1.5, "title": "a"}, {"id": "2", "title": 3, "gates": [[]], "max_attempts": 0}], "extra": 1}"#
        let found = try issues("j.json", text)
        #expect(Set(found.compactMap(\.location.field)) == ["tasks[0].id", "tasks[1].title", "tasks[1].gates[0]", "tasks[1].max_attempts", "extra"])
        #expect(found.first { $0.location.field == "tasks[0].id" }?.message.contains("quote ids") == true)
    }

    @Test func jsonAcceptsIntegerIds() throws {
        let spec = try load("i.json", #"{"spec_name": "i", "tasks": [{"id": 1, "title": "a"}, {"id": 2, "title": "b", "dependencies": [1]}]}"#).get().spec
        #expect(spec.tasks.map(\.id) == ["1", "2"])
        #expect(spec.tasks[1].dependencies == ["1"])
    }

    @Test func yamlKeepsUnquotedDottedIdsAsWritten() throws {
        let spec = try load("d.yaml", "spec_name: d\ntasks:\n  - {id: 1.10, title: a}\n  - {id: 1.1, title: b, dependencies: [1.10]}\n").get().spec
        #expect(spec.tasks.map(\.id) == ["1.10", "1.1"])
        #expect(spec.tasks[1].dependencies == ["1.10"])
    }

    @Test func unknownFormatAndMissingFileAreReported() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: SpecValidationError.self) { try SpecLoader.load(path: dir.file("tasks.txt")) }
        do {
            _ = try SpecLoader.load(path: dir.file("missing.yaml"))
            Issue.record("a missing file must not load")
        } catch {
            #expect(error.issues.first?.code == .unreadable)
        }
    }
}

@Suite struct ParallelParseTests {
    private let text = """
        # Plan
        - [ ] 1. One
          - _Depends: 3_
        - [ ] 2. Group
          - [ ] 2.1 Nested
            - _Priority: 3_
        - [ ] 3. Three
          - description of three
        - [ ] 4. Flush group
        - [ ] 5. Five
          - _Priority: soon_
        - [ ] 4.1 Flush subtask, far from its group
          - _Depends: 5_
        - [ ] 6. Six
          - _Depends: 99_
        - [ ] 7. Seven
          - [ ] a step of seven
        - [x] 8. Eight

        ### 9. A heading task
        - [x] step one
        - [ ] step two

        ## Later
        - [ ] 10. Ten
        - [ ] 11. Eleven
        - [ ] 12. Twelve
        - [ ] 13. Thirteen

        ## Notes
        - [ ] not a task

        """

    private func parse(pieces: Int) -> (TaskSetSpec, SpecOrigins, [SpecIssue]) {
        let (spec, origins, _, issues) = KiroTasksParser.parse(Array(text.utf8), name: "p", file: "tasks.md", pieces: pieces)
        return (spec, origins, issues)
    }

    @Test func cuttingTheFileIntoPiecesChangesNothing() throws {
        let (whole, wholeOrigins, wholeIssues) = parse(pieces: 1)
        #expect(whole.tasks.count == 15)
        #expect(whole.tasks.first { $0.id == "4.1" }?.parent == "4")
        #expect(whole.tasks.first { $0.id == "7" }?.steps == [TaskStep("a step of seven")])
        #expect(whole.tasks.first { $0.id == "9" }?.steps == [TaskStep("step one", done: true), TaskStep("step two")])
        #expect(wholeIssues.map { $0.location.line } == [11, 31])
        #expect(wholeIssues.map(\.severity) == [.warning, .warning], "a priority in words, a checklist outside the tasks")
        for pieces in 2...6 {
            let cuts = Array(text.utf8).withUnsafeBufferPointer { KiroTasksParser.chunkStarts($0, pieces: pieces) }
            #expect(cuts.count == pieces, "the text really is cut into \(pieces) pieces")
            let (split, origins, issues) = parse(pieces: pieces)
            #expect(split == whole, "\(pieces) pieces")
            #expect(issues == wholeIssues, "\(pieces) pieces")
            #expect(origins.tasks.map(\.line) == wholeOrigins.tasks.map(\.line))
            #expect(origins.location(ofDependency: 0, ofTask: 7) == SourceLocation(file: "tasks.md", line: 15))
        }
    }

    @Test func aBigFileIsSplitAndStillValidatesTheSame() throws {
        // Over 4 MB, so the loader cuts it into one piece per core.
        var lines = ["# Big"]
        for i in 1...60_000 {
            lines.append("- [ ] \(i). Task number \(i) with a title long enough to weigh")
            if i > 1 { lines.append("  - _Depends: \(i - 1)_") }
            if i == 59_999 { lines.append("  - _Depends: 60000_") }  // closes a cycle near the end
        }
        let dir = try TemporaryDirectory()
        let path = try dir.write("big/tasks.md", lines.joined(separator: "\n"))
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0) > 4 << 20)
        do {
            _ = try SpecLoader.load(path: path)
            Issue.record("the cycle must be found")
        } catch {
            #expect(error.issues.map(\.message) == ["dependency cycle: 59999 -> 60000 -> 59999"])
            #expect(error.issues.first?.location.line == lines.firstIndex(of: "- [ ] 59999. Task number 59999 with a title long enough to weigh")! + 1)
        }
    }
}
