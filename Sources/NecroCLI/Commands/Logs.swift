import ArgumentParser
import Foundation
import NecroCore
import NecroRegistry
import NecroServer

/// `necro logs TASK`: what a task's runner printed, from its log beside the registry.
struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print what a task's runner printed (its last attempt, or --attempt N); --follow goes on while it runs.")

    @Argument(help: "The task id.")
    var task: String

    @Option(help: "The spec (needed when the registry holds several).")
    var spec: String?

    @Option(help: "Which attempt (1 is the first); default: the last.")
    var attempt: Int?

    @Flag(name: .shortAndLong, help: "Keep printing what the runner prints until it ends.")
    var follow = false

    @OptionGroup var options: RegistryOptions

    func run() async throws {
        let registry = try openExisting(options.registry)
        let name = try chooseSpec(spec, in: registry)
        let key = TaskKey(spec: name, id: TaskID(task))
        guard try registry.tasks(spec: name).contains(where: { $0.task.id == key.id }) else {
            printError("error: no task \(task) in spec \(name)")
            throw ExitStatus.failure
        }
        let runners = try registry.runners(runningOnly: false).filter { $0.task == key }.sorted { $0.startedAt.secondsSince1970 < $1.startedAt.secondsSince1970 }
        let chosen = attempt.map { number in runners.last { $0.attempt == number } } ?? runners.last
        guard let runner = chosen else {
            let attempts = Set(runners.map(\.attempt)).sorted().map(String.init).joined(separator: ", ")
            printError(
                runners.isEmpty
                    ? "error: \(name)/\(task) has not run (yet): no log"
                    : "error: \(name)/\(task) has no attempt \(attempt ?? 0); it ran attempts \(attempts)")
            throw ExitStatus.failure
        }
        guard let path = runner.logPath, let file = FileHandle(forReadingAtPath: path) else {
            printError("error: the log of \(runner.id) is gone (\(runner.logPath ?? "no path recorded"))")
            throw ExitStatus.failure
        }
        defer { try? file.close() }
        let out = FileHandle.standardOutput
        while true {
            let chunk = file.readDataToEndOfFile()
            if !chunk.isEmpty { out.write(chunk) }
            guard follow else { return }
            // Until the runner has ended (its row says so), and what it printed last is read; or
            // until no dispatcher runs (a row left running by one that died says nothing more).
            let ended = (try? registry.runners(runningOnly: true).contains { $0.id == runner.id }) == false
                || DispatcherProcess.running(options.registry) == nil
            if ended {
                let rest = file.readDataToEndOfFile()
                if !rest.isEmpty { out.write(rest) }
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// `necro token [--read]`: the API's tokens, for scripts and the dashboard.
struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the API's admin token, or with --read its read-only token (reads everything, changes nothing).")

    @Flag(help: "The read-only token.")
    var read = false

    @OptionGroup var options: RegistryOptions

    func run() throws {
        do {
            let keys = try AccessKeys.load(folder: options.folder)
            print(read ? keys.readToken : keys.adminToken)
        } catch {
            printError("error: \(error)")
            throw ExitStatus.failure
        }
    }
}
