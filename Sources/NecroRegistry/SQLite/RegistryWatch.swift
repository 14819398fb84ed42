import Foundation

/// Tells when a registry file may have changed, from the kernel (inotify on its folder: a commit
/// writes the `-wal` file, a checkpoint or a rollback-journal commit the file itself), so that a
/// reader in another process can follow what is recorded without reading it on a timer. A change
/// made after the watch began is never missed; several are told as one.
public final class RegistryWatch: Sendable {
    /// One element per wakeup: read the registry again.
    public let changes: AsyncStream<Void>
    private let descriptor: Int32
    private let stopWrite: Int32

    /// Watches the registry at `path` (its folder must exist).
    public init(path: String) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let name = url.lastPathComponent
        descriptor = inotify_init1(Int32(IN_CLOEXEC))
        guard descriptor >= 0 else { throw RegistryWatchError("cannot watch \(path): \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE)
        guard inotify_add_watch(descriptor, folder, mask) >= 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw RegistryWatchError("cannot watch \(folder): \(reason)")
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            close(descriptor)
            throw RegistryWatchError("cannot watch \(path): \(String(cString: strerror(errno)))")
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        stopWrite = fds[1]
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        changes = stream
        let (inotify, stopRead) = (descriptor, fds[0])
        let thread = Thread {
            Self.watch(inotify, stopRead: stopRead, name: Array(name.utf8), continuation: continuation)
            close(stopRead)
            close(inotify)
        }
        thread.name = "necro-registry-watch"
        thread.start()
    }

    /// Stops watching; `changes` ends.
    public func stop() {
        var byte: UInt8 = 1
        _ = write(stopWrite, &byte, 1)
    }

    deinit {
        stop()
        close(stopWrite)
    }

    /// Blocks on the kernel's events until stopped; a change to the registry's own files (its
    /// name, then `-wal`, `-journal`… or nothing) is told.
    private static func watch(_ inotify: Int32, stopRead: Int32, name: [UInt8], continuation: AsyncStream<Void>.Continuation) {
        defer { continuation.finish() }
        let capacity = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            var watched = [pollfd(fd: inotify, events: Int16(POLLIN), revents: 0), pollfd(fd: stopRead, events: Int16(POLLIN), revents: 0)]
            guard poll(&watched, 2, -1) >= 0 || errno == EINTR else { return }
            if watched[1].revents != 0 { return }
            guard watched[0].revents != 0 else { continue }
            let count = read(inotify, buffer, capacity)
            guard count > 0 else { return }
            var offset = 0
            var relevant = false
            while offset + MemoryLayout<inotify_event>.size <= count {
                let event = buffer.load(fromByteOffset: offset, as: inotify_event.self)
                let nameStart = offset + MemoryLayout<inotify_event>.size
                let bytes = UnsafeRawBufferPointer(start: buffer + nameStart, count: Int(event.len))
                let eventName = bytes.prefix { $0 != 0 }
                if eventName.starts(with: name) { relevant = true }
                offset = nameStart + Int(event.len)
            }
            if relevant { continuation.yield() }
        }
    }
}

public struct RegistryWatchError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
