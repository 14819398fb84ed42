import CNecroSystem
import Foundation
public import NecroCore
import Synchronization

/// Where runners' supervisors record how their runners ended, so that it outlives the dispatcher:
/// one file per dispatcher start, one fixed-size record per running runner.
///
/// A record holds the runner's identity (written at its start) and, once it has ended, its status
/// (written by its supervisor): the exit code, 128 + the signal, or why it could not start. A record
/// is given to another runner only once the dispatcher has recorded the previous one's exit. Writing
/// into a record of an existing file costs a write; a file per runner would cost creating and
/// removing an inode each time, far more on some file systems.
public final class RunnerStatusTable: Sendable {
    public static let recordSize = Int(NECRO_STATUS_RECORD_SIZE)
    static let statusSize = Int(NECRO_STATUS_SIZE)
    static let fileExtension = "status"

    public let path: String
    private let file: Int32
    private let records = Mutex(Records())

    private struct Records {
        var free: [Int] = []
        var count = 0
        var claimed = 0
        /// Records the file has room for on the disk: a supervisor's status always fits in its
        /// record, however full the disk is by the time its runner ends.
        var allocated = 0
    }

    /// Records reserved on the disk at a time.
    static let reservation = 64

    /// Creates a new table in `folder` (made if needed), named after `name`.
    public init(folder: String, name: String) throws {
        do { try PrivateFiles.makeFolder(folder) } catch { throw RunnerStatusTableError(message: error.message) }
        var candidate = "\(folder)/\(name).\(Self.fileExtension)"
        var attempt = 1
        var opened = open(candidate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, PrivateFiles.fileMode)
        while opened < 0 && errno == EEXIST {
            attempt += 1
            candidate = "\(folder)/\(name)-\(attempt).\(Self.fileExtension)"
            opened = open(candidate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, PrivateFiles.fileMode)
        }
        guard opened >= 0 else {
            throw RunnerStatusTableError(message: "cannot create the runner status table \(candidate): \(errnoText())")
        }
        path = candidate
        file = opened
        // Held while this dispatcher lives: `removeUnused` leaves the table of a live one alone.
        _ = flock(opened, LOCK_SH)
    }

    deinit { close(file) }

    /// A record for `runner`: its identity written, no status yet, its room on the disk reserved
    /// (the runner must not start without it: its end could not be known).
    public func claim(_ runner: RunnerID) -> Result<StatusRecord, RunnerStatusTableError> {
        let claimed = records.withLock { records -> Result<Int, RunnerStatusTableError> in
            if let index = records.free.popLast() {
                records.claimed += 1
                return .success(index)
            }
            if records.count == records.allocated {
                let more = Self.reservation
                let failed = posix_fallocate(file, off_t(records.allocated * Self.recordSize), off_t(more * Self.recordSize))
                guard failed == 0 else {
                    return .failure(RunnerStatusTableError(message: "cannot write the runner status table \(path): \(String(cString: strerror(failed)))"))
                }
                records.allocated += more
            }
            records.claimed += 1
            records.count += 1
            return .success(records.count - 1)
        }
        let index: Int
        switch claimed {
        case .success(let claimedIndex): index = claimedIndex
        case .failure(let error): return .failure(error)
        }
        var record = [UInt8](repeating: 0, count: Self.recordSize)
        let identity = Self.identity(of: runner)
        record.replaceSubrange(Self.statusSize..<(Self.statusSize + identity.count), with: identity)
        let offset = index * Self.recordSize
        let written = record.withUnsafeBytes { pwrite(file, $0.baseAddress, Self.recordSize, off_t(offset)) }
        guard written == Self.recordSize else {
            let why = String(cString: strerror(errno))
            release(StatusRecord(path: path, offset: offset))
            return .failure(RunnerStatusTableError(message: "cannot write the runner status table \(path): \(why)"))
        }
        return .success(StatusRecord(path: path, offset: offset))
    }

    /// Whether a record could be claimed now (room reserved, or reserved now).
    public var canClaim: Bool {
        records.withLock { records in
            if !records.free.isEmpty || records.count < records.allocated { return true }
            guard posix_fallocate(file, off_t(records.allocated * Self.recordSize), off_t(Self.reservation * Self.recordSize)) == 0 else {
                return false
            }
            records.allocated += Self.reservation
            return true
        }
    }

    /// The dispatcher has recorded the exit of the record's runner: the record may serve another.
    public func release(_ record: StatusRecord) {
        guard record.path == path else { return }
        records.withLock { records in
            records.claimed -= 1
            records.free.append(record.offset / Self.recordSize)
        }
    }

    /// Removes the file if no record is in use; returns whether it did.
    @discardableResult
    public func removeIfUnused() -> Bool {
        guard records.withLock({ $0.claimed == 0 }) else { return false }
        return unlink(path) == 0
    }

    // MARK: Reading

    /// How the record's runner ended, as its supervisor recorded it; nil if it has not (yet), or if
    /// the record now belongs to another runner.
    public static func exit(of runner: RunnerID, in record: StatusRecord) -> RunnerExit? {
        let file = open(record.path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var bytes = [UInt8](repeating: 0, count: recordSize)
        let count = bytes.withUnsafeMutableBytes { pread(file, $0.baseAddress, recordSize, off_t(record.offset)) }
        guard count == recordSize else { return nil }
        let identity = bytes[statusSize...].prefix { $0 != 0 }
        guard Array(identity) == Self.identity(of: runner) else { return nil }
        return exit(fromStatus: bytes[0..<statusSize])
    }

    /// Whether the supervisor of the record's runner lives, as the lock over its record says (taken
    /// before the supervisor starts, held until it ends), with its pid once it has written it.
    public enum Supervisor: Equatable, Sendable {
        case gone
        case alive(pid: Int32?)
    }

    public static func supervisor(of runner: RunnerID, in record: StatusRecord) -> Supervisor {
        guard necro_status_record_locked(record.path, record.offset) == 1 else { return .gone }
        let file = open(record.path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return .alive(pid: nil) }
        defer { close(file) }
        var bytes = [UInt8](repeating: 0, count: recordSize)
        guard pread(file, &bytes, recordSize, off_t(record.offset)) == recordSize,
            Array(bytes[statusSize...].prefix { $0 != 0 }) == Self.identity(of: runner), bytes[0] == UInt8(ascii: "S")
        else { return .alive(pid: nil) }
        let digits = bytes[1..<statusSize].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return .alive(pid: Int32(String(decoding: digits, as: UTF8.self)))
    }

    /// The status text a supervisor writes: `N\n` (exit code, or 128 + signal), `EN\n` (exec failed
    /// with errno N), `CN\n` (the working directory could not be made or entered).
    static func exit(fromStatus bytes: ArraySlice<UInt8>) -> RunnerExit? {
        guard let end = bytes.firstIndex(of: 10) else { return nil }
        var text = bytes[bytes.startIndex..<end]
        let kind = text.first
        if kind == UInt8(ascii: "E") || kind == UInt8(ascii: "C") { text = text.dropFirst() }
        guard let number = Int32(String(decoding: text, as: UTF8.self)) else { return nil }
        switch kind {
        case UInt8(ascii: "E"): return .launchFailed("cannot start the command: \(String(cString: strerror(number)))")
        case UInt8(ascii: "C"): return .launchFailed("cannot make or enter the working directory: \(String(cString: strerror(number)))")
        default: return number > 128 && number <= 128 + 64 ? .signalled(number - 128) : .exited(code: number)
        }
    }

    /// The bytes that name a runner in its record: its id, or a hash of it if the id is too long.
    static func identity(of runner: RunnerID) -> [UInt8] {
        let id = Array(runner.rawValue.utf8)
        if id.count < recordSize - statusSize { return id }
        return Array("#\(String(FNV1a.hash(id), radix: 16))".utf8)
    }

    /// Removes the tables in `folder` whose dispatcher is gone and that no runner still running
    /// (`referenced`: the tables named by runners the registry has as running) may write to.
    public static func removeUnused(in folder: String, referenced: Set<String>) {
        for table in tables(in: folder) where !referenced.contains(table) {
            let file = open(table, O_RDONLY | O_CLOEXEC)
            guard file >= 0 else { continue }
            if flock(file, LOCK_EX | LOCK_NB) == 0 { unlink(table) }
            close(file)
        }
    }

    /// The tables in `folder`.
    public static func tables(in folder: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".\(fileExtension)") }.map { "\(folder)/\($0)" }.sorted()
    }
}

/// The status table could not be created.
public struct RunnerStatusTableError: Error, Sendable, Hashable {
    public var message: String
}
