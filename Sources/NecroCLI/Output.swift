import Foundation
import NecroCore
import NecroRegistry

/// Writes to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Reads and validates a spec, or prints every problem and exits 2.
func loadSpecOrExit(_ path: String) throws -> LoadedSpec {
    do {
        return try SpecLoader.load(path: path)
    } catch {
        report(error)
        throw ExitStatus.invalidInput
    }
}

/// Prints every issue of a failed validation, one per line, compiler style.
func report(_ error: SpecValidationError) {
    for issue in error.issues { printError(issue.description) }
    let count = error.issues.count
    printError("\(count) error\(count == 1 ? "" : "s")")
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
