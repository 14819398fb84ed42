public import ArgumentParser
import CNecroSystem
import Foundation

/// The `necro` command line.
public struct Necro: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "necro",
        abstract: "NecroCode Dispatcher: runs a graph of tasks (AI coding agents working through a spec).",
        version: "0.1.0",
        subcommands: [
            Run.self, Serve.self, Status.self, Events.self, Retry.self, Pool.self, Heartbeat.self, RunnerCommand.self, Step.self, Checkpoint.self, Logs.self, Token.self, Validate.self, Graph.self, Import.self,
            Bench.self,
        ]
    )

    public init() {}
}

/// Exit statuses, in one place.
enum ExitStatus {
    /// Some tasks failed, or the command could not do its work.
    static let failure = ExitCode(1)
    /// Invalid input: spec, configuration or arguments.
    static let invalidInput = ExitCode(2)
    /// Stopped by a signal.
    static let interrupted = ExitCode(130)
}

/// Options shared by the commands that use the registry.
struct RegistryOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the registry file.")
    var registry: String = ".necro/registry.sqlite"

    /// The registry's folder, where runners' logs, work folders, statuses and slots go.
    var folder: String {
        let base = (registry as NSString).deletingLastPathComponent
        return base.isEmpty ? "." : base
    }
}

extension Necro {
    /// Parses the process's arguments and runs the command they name; the executable's entry point.
    public static func runMain() async {
        necro_steady_heap()
        await main(nil)
    }
}
