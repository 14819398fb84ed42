import Foundation
import NecroCore

/// One registry file, one dispatcher: `necro run` and `necro serve` hold an exclusive lock on a
/// file beside the registry (`registry.sqlite.lock`) for as long as they live. The kernel lets go
/// of it when the process ends, however it ends (kill -9 too), and runners never inherit it.
enum DispatcherLock {
    /// The locked file's descriptor, kept open until the process exits.
    nonisolated(unsafe) private static var held: Int32 = -1

    static func path(_ registry: String) -> String { registry + ".lock" }

    /// Takes the lock, or says who holds it and how to add work to that dispatcher, and exits 2.
    static func acquireOrExit(_ registry: String, command: String) throws {
        guard held < 0 else { return }
        let file = path(registry)
        let folder = (file as NSString).deletingLastPathComponent
        if !folder.isEmpty { try? PrivateFiles.makeFolder(folder) }
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            printError("error: cannot open \(file): \(String(cString: strerror(errno)))")
            throw ExitStatus.failure
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            printError(
                "error: registry \(registry) in use by \(holder.isEmpty ? "another dispatcher" : holder): a registry has one dispatcher. "
                    + "Add work to it with `necro import SPEC --registry \(registry)` or `POST /v1/tasksets`; "
                    + "`necro status`, `events`, `retry` and `pool` work beside it.")
            throw ExitStatus.invalidInput
        }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm"
        let text = "pid \(getpid()) (necro \(command), started \(formatter.string(from: Date())))\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        held = fd
    }
}
