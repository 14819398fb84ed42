import Foundation
import NecroRunners

/// Runs git in one directory, with an environment that makes its output parseable and its own
/// commits attributable to the dispatcher.
struct Git: Sendable {
    struct Failure: Error, CustomStringConvertible {
        var command: [String]
        var status: Int32
        var output: String
        var description: String {
            let text = output.trimmingCharacters(in: .whitespacesAndNewlines)
            return "git \(command.joined(separator: " ")) failed (\(status))" + (text.isEmpty ? "" : ": \(text)")
        }
    }

    let directory: String
    let environment: [String: String]

    init(_ directory: String, environment base: [String: String] = ProcessInfo.processInfo.environment) {
        self.directory = directory
        var environment = base.filter { !$0.key.hasPrefix("GIT_") }  // no GIT_DIR or index of a caller
        environment["LC_ALL"] = "C"
        environment["GIT_TERMINAL_PROMPT"] = "0"
        environment["GIT_AUTHOR_NAME"] = "NecroCode Dispatcher"
        environment["GIT_AUTHOR_EMAIL"] = "necro@localhost"
        environment["GIT_COMMITTER_NAME"] = "NecroCode Dispatcher"
        environment["GIT_COMMITTER_EMAIL"] = "necro@localhost"
        // What a runner may have written into the repository's .git (it is mounted into
        // containers) must not run here: no hooks, no fsmonitor. And worktrees given to a
        // container's uid are still worked in.
        let settings = [("core.hooksPath", "/dev/null"), ("core.fsmonitor", "false"), ("safe.directory", "*")]
        environment["GIT_CONFIG_COUNT"] = String(settings.count)
        for (index, (key, value)) in settings.enumerated() {
            environment["GIT_CONFIG_KEY_\(index)"] = key
            environment["GIT_CONFIG_VALUE_\(index)"] = value
        }
        self.environment = environment
    }

    /// The same git, in another directory.
    func at(_ directory: String) -> Git { Git(directory: directory, environment: environment) }

    private init(directory: String, environment: [String: String]) {
        self.directory = directory
        self.environment = environment
    }

    /// Runs git; the result whatever its status.
    func attempt(_ arguments: [String], environment extra: [String: String] = [:]) throws -> Subprocess.Result {
        try Subprocess.run(["git"] + arguments, in: directory, environment: environment.merging(extra) { $1 })
    }

    /// Runs git and returns its output, trimmed; throws if it fails.
    @discardableResult
    func run(_ arguments: [String], environment extra: [String: String] = [:]) throws -> String {
        let result = try attempt(arguments, environment: extra)
        guard result.succeeded else {
            throw Failure(command: arguments, status: result.status, output: result.stderr + result.stdout)
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether git exits 0.
    func check(_ arguments: [String]) -> Bool { (try? attempt(arguments).succeeded) ?? false }
}
