import Foundation
import NecroCore
import NecroTesting
import Testing

@testable import NecroRegistry

/// What a fixture of `Tests/Fixtures/kiro` must read as, written by hand from the file.
struct FixtureExpectation: Sendable, CustomTestStringConvertible {
    var file: String
    var runnable: Int
    var mode: SpecOrder.Mode
    /// Tasks and what each waits on, groups replaced by their tasks.
    var waits: [TaskID: Set<TaskID>]
    var barriers: [TaskID] = []
    var warnings: Int = 0
    var check: (@Sendable (LoadedSpec) -> Void)? = nil

    var testDescription: String { file }
}

private func byID(_ loaded: LoadedSpec) -> [TaskID: TaskSpec] {
    Dictionary(uniqueKeysWithValues: loaded.spec.tasks.map { ($0.id, $0) })
}

private let expectations: [FixtureExpectation] = [
    FixtureExpectation(
        file: "classic.md", runnable: 10, mode: .written,
        waits: [
            "2.1": ["1"], "2.2": ["2.1", "1"], "3.1": ["1", "2.1", "2.2", "2.3"],
            "4": ["1", "2.1", "2.2", "2.3", "3.1", "3.2"], "5.1": ["4"], "6": ["4", "5.1", "5.2"],
        ],
        barriers: ["4", "6"]),
    FixtureExpectation(
        file: "flush-subtasks-ja.md", runnable: 5, mode: .declared,
        waits: ["1.1": [], "1.2": ["1.1"], "2.1": ["1.2"], "2.2": ["1.2"], "2.3": ["2.1", "2.2"]],
        check: { loaded in
            #expect(loaded.validated.widestLevel == 2)
            #expect(byID(loaded)["2.1"]?.metadata["boundary"] == "Dispatch Facet")
            #expect(byID(loaded)["2.1"]?.parent == "2", "written flush under its group")
        }),
    FixtureExpectation(
        file: "heading-style-zh.md", runnable: 7, mode: .written,
        waits: ["1.1": [], "2.1": ["1.1", "1.2"], "3.1": ["1.1", "1.2", "2.1", "2.2", "2.3"]],
        check: { loaded in
            let tasks = byID(loaded)
            #expect(tasks["1"]?.isGroup == true && tasks["1"]?.title == "数据库设计和迁移")
            #expect(tasks["1.1"]?.metadata["requirements"] == ["1.1", "2.1"])
            #expect(loaded.layout.inProgressMarks == 1)
        }),
    FixtureExpectation(
        file: "heading-steps.md", runnable: 3, mode: .written, waits: ["1": [], "2": ["1"], "3": ["2"]], warnings: 2,
        check: { loaded in
            let tasks = byID(loaded)
            #expect(tasks["1"]?.markedDone == true, "every step ticked")
            #expect(tasks["2"]?.steps.map(\.done) == [true, false, false])
            #expect(tasks["2"]?.description == "Each record becomes one row; dates are normalised to UTC.")
            #expect(loaded.warnings.map(\.location.line) == [19, 20])
        }),
    FixtureExpectation(
        file: "waves.md", runnable: 9, mode: .declared,
        waits: [
            "1.1": [], "1.2": [], "2.1": ["1.1", "1.2"], "2.2": ["2.1", "3.1"],
            "4": ["1.1", "1.2", "2.1", "2.2", "3.1", "3.2"], "5": ["4", "2.2", "3.2"], "6": ["4", "5"],
        ],
        barriers: ["4", "6"], warnings: 1,
        check: { loaded in #expect(loaded.order.waves == 4) }),
    FixtureExpectation(
        file: "parent-own-work-es.md", runnable: 8, mode: .written,
        waits: ["2": ["1"], "2.1": ["2", "1"], "2.2": ["2.1", "2", "1"], "3": ["1", "2", "2.1", "2.2"], "4.1": ["3"], "5": ["3", "4.1", "4.2"]],
        barriers: ["3", "5"],
        check: { loaded in
            #expect(byID(loaded)["2"]?.runsOwnWork == true)
            #expect(byID(loaded)["4"]?.isGroup == true)
            #expect(byID(loaded)["2"]?.metadata["requirements"] == ["2.1", "2.4"])
        }),
    FixtureExpectation(
        file: "steps-pt.md", runnable: 3, mode: .written, waits: ["2": ["1"], "3": ["2"]],
        check: { loaded in
            let tasks = byID(loaded)
            #expect(tasks["1"]?.description == "Colunas para nome, tipo e tamanho", "after blank lines")
            #expect(tasks["2"]?.steps.map(\.title) == ["validar o tamanho máximo", "anexar os arquivos à mensagem", "registrar falhas de envio"])
            #expect(tasks["3"]?.metadata["requirements"] == ["3.1"], "the last line, without a newline")
        }),
    FixtureExpectation(
        file: "phases-ko.md", runnable: 5, mode: .written, waits: ["1": [], "3": ["2"], "5": ["4"]],
        check: { loaded in #expect(loaded.spec.tasks.allSatisfy { $0.parent == nil }, "phases are sections") }),
    FixtureExpectation(
        file: "unnumbered-de.md", runnable: 4, mode: .written, waits: ["1": [], "2": ["1"], "4": ["3"]],
        check: { loaded in
            #expect(loaded.layout.numberedInOrder)
            #expect(byID(loaded)["2"]?.title == "Export implementieren")
            #expect(byID(loaded)["2"]?.steps.count == 2)
            #expect(byID(loaded)["4"]?.optional == true)
        }),
    FixtureExpectation(
        file: "three-level-zh.md", runnable: 9, mode: .written,
        waits: ["12.1": ["2"], "12.5.1": ["12.2", "2"], "15": ["2", "12.1", "12.2", "12.5.1", "12.5.2", "12.5.3", "13"]],
        barriers: ["2", "15"],
        check: { loaded in
            let tasks = byID(loaded)
            #expect(tasks["12.5"]?.parent == "12" && tasks["12.5.1"]?.parent == "12.5")
            #expect(tasks["13"]?.optional == true)
            #expect(loaded.layout.inProgressMarks == 2)
        }),
]

@Suite struct KiroFixtureTests {
    @Test(arguments: expectations)
    func eachFixtureReadsAsItsAuthorMeantAndImports(_ expected: FixtureExpectation) throws {
        let loaded = try SpecLoader.load(path: "\(repositoryRoot)/Tests/Fixtures/kiro/\(expected.file)")
        let graph = loaded.validated.graph
        #expect(graph.isGroup.filter { !$0 }.count == expected.runnable, "runnable tasks")
        #expect(loaded.order.mode == expected.mode)
        #expect(loaded.order.barriers == expected.barriers)
        #expect(loaded.warnings.count == expected.warnings, "\(loaded.warnings)")
        for (task, waits) in expected.waits {
            guard let index = graph.index(of: task) else {
                Issue.record("no task \(task)")
                continue
            }
            #expect(Set(graph.taskDependencies(of: index).map { graph.ids[$0] }) == waits, "what \(task) waits on")
        }
        expected.check?(loaded)

        let dir = try TemporaryDirectory("fixture")
        defer { dir.remove() }
        let report = try SQLiteRegistry(path: dir.file("registry.sqlite")).importTaskSet(loaded.spec, source: loaded.path)
        #expect(report.created && report.added.count == loaded.spec.tasks.count)
    }

    @Test func everyFixtureHasAnExpectationAndALineInLayouts() throws {
        let folder = "\(repositoryRoot)/Tests/Fixtures/kiro"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".md") && $0 != "LAYOUTS.md" }
        #expect(Set(files) == Set(expectations.map(\.file)))
        let layouts = try String(contentsOfFile: "\(folder)/LAYOUTS.md", encoding: .utf8)
        for file in files { #expect(layouts.contains("`\(file)`"), "LAYOUTS.md describes \(file)") }
    }
}
