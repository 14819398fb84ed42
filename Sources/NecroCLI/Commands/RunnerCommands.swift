import ArgumentParser
import Foundation
import NecroCore

/// `necro runner -- AGENT…`: the runner side of a task, as a pool's command.
struct RunnerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runner",
        abstract: "Run an agent for the task in TASK_CONTEXT, reporting its phases, work items, checkpoints and gates to the dispatcher.",
        discussion: """
            Used as a pool's command (a local pool without one runs it). The agent comes after --, \
            else from the configuration's agent: or the task's _Agent:_ (in TASK_CONTEXT). It runs in \
            the task's folder; NECRO_RUNNER_CONTROL lets it report (necro step start|done N, necro \
            checkpoint). A later attempt goes on from the task's last checkpoint.
            """)

    @Option(help: "Run the agent once for the task (once) or once per step (each); default: the configuration's agent.steps.")
    var steps: String?

    @Option(help: "How long the agent may show no activity before its lease is left to lapse (seconds or 15m); default: the configuration's.")
    var stallTimeout: String?

    @Option(help: "How long to wait, at the end, for the dispatcher to take the last events (seconds).")
    var flushTimeout: Double = 30

    @Argument(parsing: .postTerminator, help: "The agent's argv.")
    var agent: [String] = []

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let text = environment["TASK_CONTEXT"] else {
            printError("error: necro runner: no TASK_CONTEXT: it runs as a pool's command, started by a dispatcher")
            throw ExitStatus.invalidInput
        }
        var context: RunnerContext
        do {
            context = try RunnerContext(json: text, currentDirectory: FileManager.default.currentDirectoryPath)
        } catch {
            printError("error: necro runner: \(error)")
            throw ExitStatus.invalidInput
        }
        if !agent.isEmpty {
            // The agent named here: a preset by its name alone, else this argv as it is (no resume
            // arguments or prompt way of another agent; `{prompt}`, `{prompt.file}` are filled).
            let template = context.agentSettings.promptTemplate
            context.agentSettings = agent.count == 1 ? AgentPreset.named(agent[0]) ?? AgentConfiguration(command: agent) : AgentConfiguration(command: agent)
            context.agentSettings.promptTemplate = template
            context.agent = context.agentSettings.command
        }
        if let steps {
            guard steps == "once" || steps == "each" else {
                printError("error: --steps must be once or each, found \(steps)")
                throw ExitStatus.invalidInput
            }
            context.stepsEach = steps == "each"
        }
        if let stallTimeout {
            guard let seconds = DurationText.seconds(stallTimeout), seconds > 0 else {
                printError("error: --stall-timeout must be a duration such as 900 or 15m, found \(stallTimeout)")
                throw ExitStatus.invalidInput
            }
            context.stallTimeout = Double(seconds)
        }
        guard !context.agent.isEmpty else {
            printError("error: necro runner: no agent to run: pass it after --, or configure agent: {command: [...]} (or _Agent:_ on the task)")
            throw ExitStatus.invalidInput
        }
        let status = TaskRunner(context: context, environment: environment).run(flushSeconds: flushTimeout)
        if status != 0 { throw ExitCode(status) }
    }
}

/// `necro step start|done N`: an agent under `necro runner` says where it is.
struct Step: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tell necro runner that the agent starts or has done step N of its task (numbered from 1).")

    @Argument(help: "start or done.")
    var action: String

    @Argument(help: "The step's number, from 1, in the order the task lists them.")
    var number: Int

    func run() throws {
        guard action == "start" || action == "done" else {
            printError("error: expected necro step start N or necro step done N, found \(action)")
            throw ExitStatus.invalidInput
        }
        try RunnerRequest.send("step \(action) \(number)")
    }
}

/// `necro checkpoint [MESSAGE]`: an agent under `necro runner` asks for a checkpoint now.
struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask necro runner to checkpoint the task's folder now (a later attempt goes on from the last checkpoint).")

    @Argument(help: "What the checkpoint follows, in words.")
    var message: [String] = []

    func run() throws { try RunnerRequest.send("checkpoint " + message.joined(separator: " ")) }
}

enum RunnerRequest {
    static func send(_ request: String) throws {
        guard let path = ProcessInfo.processInfo.environment["NECRO_RUNNER_CONTROL"], !path.isEmpty else {
            printError("error: not under necro runner: NECRO_RUNNER_CONTROL is not set")
            throw ExitStatus.invalidInput
        }
        let answer: String
        do {
            answer = try RunnerControl.ask(path, request)
        } catch {
            printError("error: \(error)")
            throw ExitStatus.failure
        }
        if answer.hasPrefix("ok") {
            print(answer)
        } else {
            printError(answer.isEmpty ? "error: necro runner did not answer" : answer)
            throw ExitStatus.failure
        }
    }
}
