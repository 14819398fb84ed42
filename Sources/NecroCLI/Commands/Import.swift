import ArgumentParser
import Foundation
import NecroCore
import NecroRegistry

/// `necro import SPEC`: loads a spec into the registry, or updates it there.
struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a spec into the registry, or update the one already there.",
        discussion: """
            A re-import updates the tasks whose definition changed and keeps the state and events of the \
            others. An invalid spec exits 2 and leaves the registry untouched.
            """
    )

    @Argument(help: "The spec file.")
    var spec: String

    @OptionGroup var order: SpecOrderOption

    @OptionGroup var importing: SpecImportOptions

    @OptionGroup var options: RegistryOptions

    func run() async throws {
        let loaded = try importing.named(try loadSpecOrExit(spec, order: order.mode))
        do {
            if importing.dryRun { return try SpecImportOptions.preview(loaded.spec, registry: options.registry) }
            let registry = try SQLiteRegistry(path: options.registry)
            let report = try registry.importTaskSet(loaded.spec, source: loaded.path, origin: SpecImportOptions.origin(of: loaded.path))
            print(Self.describe(report))
            // A dispatcher running on this registry takes the taskset up.
            if FileManager.default.fileExists(atPath: DispatcherProcess.pidFile(options.registry)) {
                try registry.addControlRequest(.load, spec: report.spec, target: report.spec)
                if DispatcherProcess.notify(options.registry) { print("\(report.spec): taken up by the running dispatcher") }
            }
        } catch let error as RegistryError {
            printError("error: \(error.message)")
            throw ExitStatus.failure
        }
    }

    static func describe(_ report: ImportReport) -> String {
        if report.created {
            return "\(report.spec) v\(report.version): imported \(counted(report.added.count, "task"))"
        }
        func list(_ ids: [TaskID]) -> String { ids.isEmpty ? "" : " (\(ids.map(\.rawValue).joined(separator: ", ")))" }
        let renumbered = report.renumbered.map { "\($0.from) → \($0.to)" }
        let aside = Dictionary(report.movedAside.map { ($0.to, $0.from) }, uniquingKeysWith: { first, _ in first })
        let removed = report.removed.map { id in aside[id].map { "\($0), kept as \(id)" } ?? id.rawValue }
        return "\(report.spec) v\(report.version): \(report.added.count) added\(list(report.added)), "
            + "\(report.changed.count) changed\(list(report.changed)), \(report.removed.count) removed"
            + (removed.isEmpty ? "" : " (\(removed.joined(separator: ", ")))") + ", "
            + "\(report.unchanged) unchanged"
            + (renumbered.isEmpty ? "" : "; renumbered, with their history: \(renumbered.joined(separator: ", "))")
    }
}
