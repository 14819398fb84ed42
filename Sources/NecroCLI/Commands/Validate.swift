import ArgumentParser
import NecroCore
import NecroRegistry

/// `necro validate SPEC`: checks a spec and prints a summary.
struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a spec (Kiro tasks.md, YAML or JSON) and summarise it.",
        discussion: "Every problem is reported at once, with its file and line or field. Exits 2 if the spec is invalid."
    )

    @Argument(help: "The spec file.")
    var spec: String

    @OptionGroup var order: SpecOrderOption

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func run() async throws {
        let loaded: LoadedSpec
        if json {
            // Errors as JSON too, on standard output, for the program that asked.
            do {
                loaded = try SpecLoader.load(path: spec, order: order.mode)
            } catch {
                let answer: JSONValue = .object([
                    "valid": false, "errors": .array(error.issues.map(\.json)), "warnings": .array(error.warnings.map(\.json)),
                ])
                print(answer.jsonText)
                throw ExitStatus.invalidInput
            }
        } else {
            loaded = try loadSpecOrExit(spec, order: order.mode)
        }
        let summary = SpecSummary(loaded)
        print(json ? jsonLine(summary) : summary.text)
        // The process ends here: let it hand the memory back at once rather than free a
        // million tasks one by one (a tenth of the run time on big specs).
        keepUntilExit(loaded)
    }
}

/// What `validate` tells about a valid spec.
struct SpecSummary: Encodable {
    var spec: String
    var file: String
    var format: String
    var tasks: Int
    var groups: Int
    var markedDone: Int
    var optional: Int
    /// Checkboxes marked `[-]` or `[~]`, read as not done.
    var inProgress: Int
    var steps: Int
    /// `written` or `declared`, and why.
    var order: String
    var orderReason: String
    /// The most tasks that can run at once.
    var mostAtOnce: Int
    var barriers: [String]
    var dependencies: Int
    var orderDependencies: Int
    var waves: Int
    var roots: [String]
    var skills: [String: Int]
    var criticalPathLength: Int
    var warnings: Int

    init(_ loaded: LoadedSpec) {
        let graph = loaded.validated.graph
        let tasks = loaded.spec.tasks
        spec = loaded.spec.name
        file = loaded.path
        format = loaded.format.name
        groups = graph.isGroup.lazy.filter { $0 }.count
        self.tasks = tasks.count - groups
        markedDone = tasks.indices.lazy.filter { !graph.isGroup[$0] && tasks[$0].markedDone }.count
        optional = tasks.lazy.filter(\.optional).count
        inProgress = loaded.layout.inProgressMarks
        steps = tasks.reduce(0) { $0 + $1.steps.count }
        order = loaded.order.mode.rawValue
        orderReason = loaded.order.reason
        mostAtOnce = loaded.validated.widestLevel
        barriers = loaded.order.barriers.map(\.rawValue)
        dependencies = loaded.order.declaredEdges
        orderDependencies = loaded.order.addedEdges
        waves = loaded.order.waves
        roots = graph.roots.map { graph.ids[$0].rawValue }
        var skills: [String: Int] = [:]
        for (i, task) in tasks.enumerated() where !graph.isGroup[i] { skills[task.requiredSkill ?? "(none)", default: 0] += 1 }
        self.skills = skills
        criticalPathLength = loaded.validated.criticalPathLength
        warnings = loaded.warnings.count
    }

    private static func list(_ items: [String]) -> String {
        items.prefix(10).joined(separator: ", ") + (items.count > 10 ? ", …" : "")
    }

    var text: String {
        let skillList = skills.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        var counts = "\(markedDone) marked done, \(optional) optional"
        if inProgress > 0 { counts += ", \(inProgress) marked [-] or [~]: read as not done" }
        var lines = [
            "\(spec): valid (\(file), \(format))",
            "  tasks:         \(tasks) in \(groups) group\(groups == 1 ? "" : "s") (\(counts))",
        ]
        if steps > 0 { lines.append("  steps:         \(steps) (unnumbered checkboxes under their tasks)") }
        lines.append("  order:         \(order == "written" ? "as written" : "declared") — \(orderReason)")
        var atOnce = "  at once:       at most \(mostAtOnce) task\(mostAtOnce == 1 ? "" : "s")"
        if mostAtOnce == 1, tasks > 1 {
            atOnce +=
                order == "written"
                ? " (one after another, as written: declare dependencies with _Depends: 1.2_ lines, or a waves block, to run several at once)"
                : " (every task waits on the one before)"
        }
        lines.append(atOnce)
        if !barriers.isEmpty { lines.append("  barriers:      \(barriers.count) (\(Self.list(barriers))): each waits for every task before it") }
        if waves > 0 { lines.append("  waves:         \(waves)") }
        var dependencyText = "  dependencies:  \(dependencies) declared"
        if orderDependencies > 0 { dependencyText += ", \(orderDependencies) from the order" }
        lines.append(dependencyText)
        lines.append("  roots:         \(roots.count) (\(Self.list(roots)))")
        lines.append("  skills:        \(skillList)")
        lines.append("  critical path: \(criticalPathLength) task\(criticalPathLength == 1 ? "" : "s")")
        if warnings > 0 { lines.append("  warnings:      \(warnings) (above)") }
        return lines.joined(separator: "\n")
    }
}
