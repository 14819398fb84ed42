public import Foundation

/// What a child process did.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs the built `necro` executable, as a user would.
public enum NecroBinary {
    /// The `necro` executable beside the test bundle (`swift build` puts both in one folder).
    public static var path: String {
        if let explicit = ProcessInfo.processInfo.environment["NECRO_BINARY"] { return explicit }
        let bundleFolder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidate = bundleFolder
        // The test runner may be inside `X.xctest/…` on some platforms; walk up to the build folder.
        for _ in 0..<4 {
            let necro = candidate.appendingPathComponent("necro").path
            if FileManager.default.isExecutableFile(atPath: necro) { return necro }
            candidate.deleteLastPathComponent()
        }
        return bundleFolder.appendingPathComponent("necro").path
    }

    /// Starts `necro` with arguments, in `directory`, without waiting for it; its output is dropped,
    /// but for its standard error if `errorFile` names a file to write it to.
    public static func start(_ arguments: [String], in directory: String, errorFile: String? = nil, outputFile: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if let outputFile {
            _ = FileManager.default.createFile(atPath: outputFile, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: outputFile)
        } else {
            process.standardOutput = FileHandle.nullDevice
        }
        if let errorFile {
            _ = FileManager.default.createFile(atPath: errorFile, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: errorFile)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return process
    }

    /// Runs `necro` with arguments, in `directory`, and waits for it.
    public static func run(_ arguments: [String], in directory: String? = nil) throws -> CommandResult {
        try runProcess(path, arguments, in: directory)
    }
}

/// Runs a program and collects its exit status and output.
public func runProcess(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes before waiting, so a chatty child cannot block on a full pipe.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus,
        stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// The repository's root, found from this source file's place in it.
public let repositoryRoot: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
}()

/// Runs a program and collects its exit status and output, without holding a thread while it runs
/// (its output goes through files; its end is looked for every 20 ms): for async tests that run
/// long commands, which would otherwise take one of the few threads every async test shares.
public func runProcessAsync(_ executable: String, _ arguments: [String], in directory: String? = nil) async throws -> CommandResult {
    let folder = NSTemporaryDirectory() + "necro-run-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    for (name, assign) in [("out", { (h: FileHandle) in process.standardOutput = h }), ("err", { (h: FileHandle) in process.standardError = h })] {
        _ = FileManager.default.createFile(atPath: "\(folder)/\(name)", contents: nil)
        assign(FileHandle(forWritingAtPath: "\(folder)/\(name)")!)
    }
    try process.run()
    while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOfFile: "\(folder)/out", encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: "\(folder)/err", encoding: .utf8)) ?? "")
}

extension NecroBinary {
    /// Runs `necro` with arguments, in `directory`, and waits for it without holding a thread.
    public static func runAsync(_ arguments: [String], in directory: String? = nil) async throws -> CommandResult {
        try await runProcessAsync(path, arguments, in: directory)
    }
}
