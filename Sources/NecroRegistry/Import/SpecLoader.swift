public import Foundation
public import NecroCore

/// The format of a spec file, told by its extension.
public struct SpecFormat: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    private init(_ name: String) { self.name = name }

    public static let kiroMarkdown = SpecFormat("markdown")
    public static let yaml = SpecFormat("yaml")
    public static let json = SpecFormat("json")

    public init?(path: String) {
        switch (path as NSString).pathExtension.lowercased() {
        case "md", "markdown": self = .kiroMarkdown
        case "yaml", "yml": self = .yaml
        case "json": self = .json
        default: return nil
        }
    }

    public var description: String { name }
}

/// A spec read from a file and validated.
public struct LoadedSpec: Sendable {
    public var path: String
    public var format: SpecFormat
    public var validated: TaskSetValidator.Validated
    /// The order the tasks run in, and why.
    public var order: SpecOrder
    /// What the file says beside its tasks.
    public var layout: SpecLayout
    /// Problems that do not make the spec invalid, located like errors.
    public var warnings: [SpecIssue]
    public var spec: TaskSetSpec { validated.spec }
}

/// Reads spec files of the three formats into one model and validates them.
public enum SpecLoader {
    /// Reads and validates a spec file. Throws `SpecValidationError` with every problem found.
    /// - Parameter order: the order asked for (`--order`), overriding the spec's own.
    public static func load(path: String, order: SpecOrder.Mode? = nil) throws(SpecValidationError) -> LoadedSpec {
        let file = path
        guard let format = SpecFormat(path: path) else {
            throw SpecValidationError(issues: [
                SpecIssue(.unreadable, at: SourceLocation(file: file), "unknown spec format: use .md (Kiro tasks.md), .yaml, .yml or .json")
            ])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecValidationError(issues: [
                SpecIssue(.unreadable, at: SourceLocation(file: file), "cannot read the spec file (missing, or not readable)")
            ])
        }
        return try load(data: data, format: format, file: file, defaultName: defaultName(forPath: path), order: order)
    }

    /// Reads and validates spec text, for specs that arrive without a file (the API).
    public static func load(
        data: Data, format: SpecFormat, file: String, defaultName: String, order requested: SpecOrder.Mode? = nil
    ) throws(SpecValidationError) -> LoadedSpec {
        var parsed = parse(data: data, format: format, file: file, defaultName: defaultName)
        inheritOptional(&parsed.spec.tasks)
        let (order, orderWarnings) = SpecOrder.apply(
            to: &parsed.spec, layout: parsed.layout, requested: requested, structured: format != .kiroMarkdown, file: file)
        let warnings = sortedByLine(parsed.issues.filter(\.isWarning) + orderWarnings)
        let errors = parsed.issues.filter { !$0.isWarning }
        guard errors.isEmpty else {
            // A spec with syntax or type errors may also have graph errors: report those too, but only
            // the ones that do not stem from the tasks that could not be read.
            var issues = errors
            if case .failure(let more) = TaskSetValidator.validate(parsed.spec, origins: parsed.origins) {
                issues += more.issues.filter { $0.code != .missingField && $0.code != .noTasks }
            }
            throw SpecValidationError(issues: sortedByLine(issues), warnings: warnings)
        }
        switch TaskSetValidator.validate(parsed.spec, origins: parsed.origins) {
        case .success(let validated):
            return LoadedSpec(path: file, format: format, validated: validated, order: order, layout: parsed.layout, warnings: warnings)
        case .failure(let error): throw SpecValidationError(issues: sortedByLine(error.issues), warnings: warnings)
        }
    }

    /// An optional group (or parent) makes its subtasks optional. Parents come before their
    /// subtasks in every format.
    static func inheritOptional(_ tasks: inout [TaskSpec]) {
        guard tasks.contains(where: { $0.optional && ($0.isGroup || $0.runsOwnWork) }) else { return }
        var optional = Set<TaskID>()
        for i in tasks.indices {
            if let parent = tasks[i].parent, optional.contains(parent) { tasks[i].optional = true }
            if tasks[i].optional { optional.insert(tasks[i].id) }
        }
    }

    /// File order where lines are known; a stable sort keeps the rest in the order found.
    public static func sortedByLine(_ issues: [SpecIssue]) -> [SpecIssue] {
        issues.enumerated().sorted { a, b in
            switch (a.element.location.line, b.element.location.line) {
            case let (x?, y?) where x != y: return x < y
            case (nil, _?): return false
            case (_?, nil): return true
            default: return a.offset < b.offset
            }
        }.map(\.element)
    }

    static func parse(data: Data, format: SpecFormat, file: String, defaultName: String) -> (
        spec: TaskSetSpec, origins: SpecOrigins, layout: SpecLayout, issues: [SpecIssue]
    ) {
        switch format {
        case .kiroMarkdown:
            return KiroTasksParser.parse([UInt8](data), name: defaultName, file: file)
        default:
            let node: Result<SpecNode, SpecIssue>
            if format == .json {
                node = SpecNode.parseJSON(data, file: file)
            } else {
                node = SpecNode.parseYAML(String(decoding: data, as: UTF8.self), file: file)
            }
            switch consume node {
            case .failure(let issue):
                return (TaskSetSpec(name: defaultName, tasks: []), SpecOrigins(file: file), SpecLayout(), [issue])
            case .success(let root):
                var decoder = TaskSetDecoder(file: file)
                let (spec, origins) = decoder.decode(root, defaultName: defaultName)
                // A big document's tree takes a tenth of the load to free: freed on another core
                // while validation goes on.
                if data.count > 1 << 20 { NodeDisposal.free(root) }
                return (spec, origins, decoder.layout, decoder.issues)
            }
        }
    }

    /// The spec name a path implies: the folder of a `tasks.*` file (`specs/chat-app/tasks.md` →
    /// `chat-app`), otherwise the file's name without its extension.
    public static func defaultName(forPath path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let base = url.deletingPathExtension().lastPathComponent
        if base == "tasks" {
            let folder = url.deletingLastPathComponent().lastPathComponent
            if !folder.isEmpty, folder != "/", folder != "." { return folder }
        }
        return base
    }
}

/// Frees a parsed document off the caller's thread.
private final class NodeDisposal: @unchecked Sendable {
    private var node: SpecNode?

    private init(_ node: consuming SpecNode) { self.node = node }

    static func free(_ node: consuming SpecNode) {
        let disposal = NodeDisposal(node)
        DispatchQueue.global().async { disposal.node = nil }
    }
}
