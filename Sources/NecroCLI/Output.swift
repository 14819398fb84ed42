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
