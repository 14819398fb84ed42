import CNecroSystem
import Foundation
public import NecroCore

/// Who may do what through the API: the admin token (any mutating call) and each runner's token
/// (its own callbacks only).
///
/// A runner's token is derived from a key kept beside the registry (`runner.key`, mode 0600):
/// HMAC-SHA256 of its runner id. Nothing per runner is stored, a restarted dispatcher knows the
/// tokens of the runners it adopts, and a token names one runner only.
public struct AccessKeys: Sendable {
    public let adminToken: String
    private let runnerKey: [UInt8]

    public init(adminToken: String, runnerKey: [UInt8]) {
        self.adminToken = adminToken
        self.runnerKey = runnerKey
    }

    /// The keys of the registry in `folder`: the admin token from `NECRO_ADMIN_TOKEN`, else from
    /// `admin.token` (made on first use, mode 0600); the runner key from `runner.key` (likewise).
    public static func load(folder: String, environment: [String: String]? = nil) throws -> AccessKeys {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let admin = try environment["NECRO_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            ?? String(decoding: secret(at: "\(folder)/admin.token") { Array((hex(randomBytes(32)) + "\n").utf8) }, as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        let key = try secret(at: "\(folder)/runner.key") { randomBytes(32) }
        return AccessKeys(adminToken: admin, runnerKey: key)
    }

    /// The token runner `id` gets at its start.
    public func token(for id: RunnerID) -> String {
        var mac = [UInt8](repeating: 0, count: 32)
        let data = Array(id.rawValue.utf8)
        _ = runnerKey.withUnsafeBytes { key in
            data.withUnsafeBytes { bytes in necro_hmac_sha256(key.baseAddress, key.count, bytes.baseAddress, bytes.count, &mac) }
        }
        return Self.hex(mac)
    }

    /// Whether `token` is runner `id`'s.
    public func isToken(_ token: String, of id: RunnerID) -> Bool {
        Self.equal(token, self.token(for: id))
    }

    /// Whether `token` is the admin token.
    public func isAdmin(_ token: String) -> Bool { Self.equal(token, adminToken) }

    /// The read-only token (`necro token --read`): reads everything, changes nothing. Made from the
    /// runner key under a name no runner id can have.
    public var readToken: String { token(for: RunnerID("\u{0}read")) }

    /// Whether `token` is the read-only token.
    public func isReadToken(_ token: String) -> Bool { Self.equal(token, readToken) }

    static func equal(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return necro_equal_in_constant_time(x, y, x.count) == 1
    }

    /// The file's bytes; made with `make` (mode 0600, never replacing one made meanwhile) if it
    /// does not exist.
    private static func secret(at path: String, make: () -> [UInt8]) throws -> [UInt8] {
        if let existing = FileManager.default.contents(atPath: path), !existing.isEmpty { return Array(existing) }
        try PrivateFiles.makeFolder((path as NSString).deletingLastPathComponent)
        let bytes = make()
        let file = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard file >= 0 else {
            if errno == EEXIST, let existing = FileManager.default.contents(atPath: path) { return Array(existing) }
            throw ServerError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(file) }
        guard bytes.withUnsafeBytes({ write(file, $0.baseAddress, $0.count) }) == bytes.count else {
            throw ServerError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return bytes
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        if necro_random_bytes(&bytes, count) != 0 {
            var generator = SystemRandomNumberGenerator()
            for index in bytes.indices { bytes[index] = generator.next() }
        }
        return bytes
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// The server could not start or do its work; the message says why.
public struct ServerError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
