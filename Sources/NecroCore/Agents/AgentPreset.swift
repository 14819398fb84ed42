/// The common coding agents in one line (`agent: claude`): each run headless in the task's folder,
/// able to edit files and run commands there without asking, its output read by `necro runner`.
/// What each passes, and why, is in the README and `docs/reference.md`, with the tools' docs.
public enum AgentPreset {
    public static let names = ["claude", "codex", "aider"]

    public static func named(_ name: String) -> AgentConfiguration? {
        switch name {
        case "claude":
            // Headless (`-p`), one JSON object per line (`stream-json`, which needs `--verbose`).
            // The prompt comes on stdin, under a short instruction, as Claude Code's headless docs
            // pipe input. File edits are accepted and the tools it needs allowed without a prompt
            // (in `-p` a tool that would ask is denied); the mode that bypasses every check
            // refuses to run as root, which containers often are. Naming TodoWrite keeps its
            // to-do list, which becomes work items.
            return AgentConfiguration(
                command: [
                    "claude", "-p", "Carry out the task described on stdin, in the current folder.", "--output-format", "stream-json", "--verbose",
                    "--permission-mode", "acceptEdits", "--allowedTools", "Bash,Edit,MultiEdit,Write,Read,Glob,Grep,LS,TodoWrite,NotebookEdit",
                ],
                preset: name, resume: ["--resume", "{agent.session}"], promptVia: .stdin)
        case "codex":
            // Non-interactive (`exec`, which never asks for approval), JSON lines (`--json`),
            // writing only inside the folder (`--sandbox workspace-write`; `--full-auto` says the
            // same and is deprecated); the folder may be a worktree git does not see as a
            // repository from inside a container (`--skip-git-repo-check`). With no prompt
            // argument, it reads the prompt from stdin; `resume <id>` goes on with the thread.
            return AgentConfiguration(
                command: ["codex", "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"],
                preset: name, resume: ["resume", "{agent.session}"], promptVia: .stdin)
        case "aider":
            // One message from a file, then exit; every question answered yes (its edits; aider
            // itself declines the shell commands a model proposes when it runs unattended, so the
            // task's gates are what runs its tests); plain output, no update check or model
            // warnings on a terminal nobody reads. Aider has no session id to resume by.
            return AgentConfiguration(
                command: [
                    "aider", "--yes-always", "--no-pretty", "--no-stream", "--no-check-update", "--no-show-model-warnings",
                    "--message-file", "{prompt.file}",
                ],
                preset: name, resume: [], promptVia: .file)
        default:
            return nil
        }
    }
}

/// How the agent is started for one run: its argv and what goes on its stdin.
public struct AgentInvocation: Hashable, Sendable {
    public var argv: [String]
    /// The prompt, when it goes on stdin; nil: stdin is closed (`/dev/null`).
    public var stdin: String?

    /// `{prompt}`, `{prompt.file}` and `{agent.session}` filled in; the resume arguments after
    /// the command when a session is resumed; the prompt where `prompt_via` says (as the last
    /// argument, or the file's path, if the command does not place it).
    public init(agent: AgentConfiguration, prompt: String, promptFile: String, session: String?) {
        func fill(_ word: String) -> String {
            guard word.contains("{") else { return word }
            return word.replacing("{prompt.file}", with: promptFile).replacing("{agent.session}", with: session ?? "")
                .replacing("{prompt}", with: prompt)
        }
        var argv = agent.command.map(fill)
        if let session, !session.isEmpty, !agent.resume.isEmpty { argv += agent.resume.map(fill) }
        stdin = nil
        switch agent.promptVia {
        case .arg?: if !agent.command.contains(where: { $0.contains("{prompt}") }) { argv.append(prompt) }
        case .file?: if !agent.command.contains(where: { $0.contains("{prompt.file}") }) { argv.append(promptFile) }
        case .stdin?: stdin = prompt
        case nil: break
        }
        self.argv = argv
    }
}
