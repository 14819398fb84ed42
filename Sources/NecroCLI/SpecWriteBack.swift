import Foundation
import NecroCore
import NecroDispatcher
import Synchronization

/// `necro run --update-spec`: ticks the spec's checkboxes as its tasks go: `[-]` while running,
/// `[x]` once done (a group once all of it is), `[ ]` again for a task that fails, is cancelled,
/// skipped or interrupted. Each change re-reads the file and rewrites only those characters,
/// through a temporary file renamed over it, with the file's permissions; a file changed while it
/// was being patched is patched again from what it then holds. Steps and heading tasks are left
/// alone.
final class SpecWriteBack: Sendable {
    let path: String
    let spec: String
    /// The tasks that had a checkbox when the run began: only theirs are changed.
    private let boxed: Set<[UInt8]>
    private let warned = Mutex<Set<TaskID>>([])

    init?(path: String, spec: String) {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        self.path = path
        self.spec = spec
        self.boxed = Set(SpecCheckboxes.marks(in: [UInt8](data)).keys)
    }

    /// Follows the dispatcher's events until the run ends.
    func follow(_ updates: AsyncStream<Dispatcher<ContinuousClock>.Update>) async {
        for await update in updates {
            guard case .events(let events) = update else { continue }
            var changes: [TaskID: UInt8] = [:]
            for event in events where event.spec == spec {
                guard let task = event.taskID, let mark = Self.mark(for: event) else { continue }
                changes[task] = mark
            }
            changes = changes.filter { boxed.contains(Array($0.key.rawValue.utf8)) }
            if !changes.isEmpty { write(changes) }
        }
    }

    /// The checkbox an event puts its task in, if it changes it.
    static func mark(for event: EventRecord) -> UInt8? {
        switch event.type {
        case .taskAssigned, .runnerAdopted: return UInt8(ascii: "-")
        case .taskCompleted: return UInt8(ascii: "x")
        case .taskFailed, .taskCancelled, .taskSkipped, .taskReady: return UInt8(ascii: " ")
        default: return nil
        }
    }

    func write(_ changes: [TaskID: UInt8]) {
        for _ in 0..<5 {
            guard let before = try? FileManager.default.attributesOfItem(atPath: path),
                let data = FileManager.default.contents(atPath: path)
            else {
                warn(nil, "\(path): cannot read the spec to tick its tasks: left as it is")
                return
            }
            let original = [UInt8](data)
            let (patched, missing) = SpecCheckboxes.setting(changes, in: original)
            for id in missing { warn(id, "\(path): no checkbox for task \(id) any more (the file was edited): not ticked") }
            guard patched != original else { return }
            let temporary = "\((path as NSString).deletingLastPathComponent)/.\((path as NSString).lastPathComponent).necro-\(getpid())"
            do {
                try Data(patched).write(to: URL(fileURLWithPath: temporary))
                if let permissions = before[.posixPermissions] {
                    try FileManager.default.setAttributes([.posixPermissions: permissions], ofItemAtPath: temporary)
                }
                // Edited meanwhile? Then patch what it holds now, never what it held.
                let now = try? FileManager.default.attributesOfItem(atPath: path)
                guard now?[.modificationDate] as? Date == before[.modificationDate] as? Date,
                    now?[.size] as? Int == before[.size] as? Int
                else {
                    try? FileManager.default.removeItem(atPath: temporary)
                    continue
                }
                guard rename(temporary, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                return
            } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                warn(nil, "\(path): cannot write the ticks: \(error.localizedDescription)")
                return
            }
        }
        warn(nil, "\(path) keeps changing: its ticks were left as they were")
    }

    /// Says it once per task (and once for the file).
    private func warn(_ task: TaskID?, _ message: String) {
        guard warned.withLock({ $0.insert(task ?? TaskID("")).inserted }) else { return }
        printError("warning: \(message)")
    }
}
