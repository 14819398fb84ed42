import ArgumentParser
import Foundation
import NecroCore
import NecroRegistry

/// Writes to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Reads and validates a spec, printing its warnings, or prints every problem and exits 2.
func loadSpecOrExit(_ path: String, order: SpecOrder.Mode? = nil) throws -> LoadedSpec {
    do {
        let loaded = try SpecLoader.load(path: path, order: order)
        for warning in loaded.warnings { printError(warning.description) }
        return loaded
    } catch {
        report(error)
        throw ExitStatus.invalidInput
    }
}

/// Prints every issue of a failed validation, one per line, compiler style, warnings among them.
func report(_ error: SpecValidationError) {
    for issue in SpecLoader.sortedByLine(error.issues + error.warnings) { printError(issue.description) }
    let count = error.issues.count
    printError("\(count) error\(count == 1 ? "" : "s")")
}

/// `--order`: how the tasks of a spec are ordered, overriding what the spec implies.
struct SpecOrderOption: ParsableArguments {
    enum Argument: String, ExpressibleByArgument, CaseIterable {
        case written, declared
    }

    @Option(
        name: .customLong("order"),
        help: "written: each task after the one written before it (plus declared dependencies); declared: only the declared dependencies and waves. Default: written for a tasks.md that declares no dependency, else declared."
    )
    var argument: Argument?

    var mode: SpecOrder.Mode? { argument.flatMap { SpecOrder.Mode(rawValue: $0.rawValue) } }
}
/// Encodes a value as one line of JSON with sorted keys.
func jsonLine(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
}

/// Values the command keeps until the process exits, so that they are never freed piecemeal.
nonisolated(unsafe) private var keptUntilExit: [Any] = []

/// Keeps a large value alive until the process exits. Only for commands about to end.
func keepUntilExit(_ value: Any) {
    keptUntilExit.append(value)
}

/// `--name` and `--dry-run`, for the commands that import a spec.
struct SpecImportOptions: ParsableArguments {
    @Option(help: "The taskset's name (default: the spec's folder, or its spec_name).")
    var name: String?

    @Flag(help: "Print what the import would do (kept, changed, new, removed tasks) and write nothing.")
    var dryRun = false

    /// The spec under the name asked for.
    func named(_ loaded: LoadedSpec) throws -> LoadedSpec {
        guard let name else { return loaded }
        guard !name.trimmingCharacters(in: .whitespaces).isEmpty else {
            printError("error: --name needs a name")
            throw ExitStatus.invalidInput
        }
        var named = loaded
        named.validated.spec.name = name
        return named
    }

    /// Where the spec file really is: a taskset of the same name from another file is refused.
    static func origin(of path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path
    }

    /// Prints the plan of importing `spec` into the registry at `path`, writing nothing (a
    /// registry that does not exist is not created).
    static func preview(_ spec: TaskSetSpec, registry path: String) throws {
        let preview: ImportPreview
        if FileManager.default.fileExists(atPath: path) {
            preview = try SQLiteRegistry(path: path, readOnly: true).importPreview(spec)
        } else {
            var fresh = ImportPreview(spec: spec.name, creates: true)
            fresh.added = spec.tasks.map { ImportPreview.Entry(id: $0.id, title: $0.title) }
            preview = fresh
        }
        print(describe(preview))
    }

    static func describe(_ preview: ImportPreview) -> String {
        var lines = [
            "\(preview.spec): \(preview.creates ? "a new taskset" : "import plan") (dry run: nothing written)"
        ]
        let width = ([preview.added, preview.changed, preview.removed, preview.kept].flatMap { $0 }.map(\.id.rawValue.count).max() ?? 0)
        func line(_ label: String, _ entry: ImportPreview.Entry, _ note: String = "") {
            let id = entry.id.rawValue.padding(toLength: width, withPad: " ", startingAt: 0)
            let was = entry.previousID.map { " (was \($0))" } ?? ""
            lines.append("  \(label.padding(toLength: 8, withPad: " ", startingAt: 0)) \(id)  \(entry.title)\(was)\(note)")
        }
        for entry in preview.added { line("new", entry) }
        for entry in preview.changed {
            line("changed", entry, entry.previousID == nil ? "" : ": renumbered, keeps its state and history")
        }
        for entry in preview.kept where entry.previousID != nil { line("kept", entry, ": renumbered, keeps its state and history") }
        for entry in preview.removed { line("removed", entry, ": cancelled, kept in history") }
        let unchanged = preview.kept.filter { $0.previousID == nil }.count
        lines.append(
            "  \(preview.added.count) new, \(preview.changed.count) changed, \(preview.kept.count) kept (\(unchanged) as they were), \(preview.removed.count) removed"
        )
        return lines.joined(separator: "\n")
    }
}
