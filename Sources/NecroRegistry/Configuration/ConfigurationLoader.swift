import Foundation
public import NecroCore

/// Reads a dispatcher configuration file (YAML, the format of the design documents).
public enum ConfigurationLoader {
    static let topKeys = ["dispatcher", "agent_pools", "skill_mapping", "repo_pool", "agent", "budget"]
    static let agentKeys = ["preset", "command", "args", "resume", "prompt_via", "prompt_template", "steps", "stall_timeout"]
    static let budgetKeys = ["task_usd", "taskset_usd"]
    static let repoPoolKeys = ["repo", "base_ref", "slots_dir", "max_slots", "branch_template"]
    static let dispatcherKeys = [
        "poll_interval", "scheduling_policy", "max_global_concurrency", "heartbeat_timeout", "retry_max_attempts",
        "retry_backoff_base", "retry_initial_delay", "retry_max_delay", "retry_jitter", "graceful_shutdown_timeout",
        "run_optional_tasks", "record_failure_timeout", "journal_path", "max_request_body_mb", "gate_timeout",
    ]
    static let poolKeys = ["type", "max_concurrency", "cpu_quota", "memory_quota", "enabled", "default_resources", "config"]
    static let localConfigKeys = ["command", "env", "nice"]
    static let dockerConfigKeys = ["image", "command", "env", "env_from_host", "mount_repo_pool", "user", "network", "pids_limit", "pull"]

    /// Reads and checks a configuration file. Throws every problem at once, each with its line.
    public static func load(path: String) throws(SpecValidationError) -> DispatcherConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SpecValidationError(issues: [
                SpecIssue(.unreadable, at: SourceLocation(file: path), "cannot read the configuration file (missing, or not readable)")
            ])
        }
        var configuration = try load(text: String(decoding: data, as: UTF8.self), file: path)
        // `./agent.sh` means the one beside the configuration file, wherever necro runs from.
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        for index in configuration.pools.indices {
            guard let program = configuration.pools[index].command.argv.first, program.contains("/"), !program.hasPrefix("/")
            else { continue }
            configuration.pools[index].command.argv[0] = URL(fileURLWithPath: program, relativeTo: URL(fileURLWithPath: folder + "/"))
                .standardizedFileURL.path
        }
        // And the agent's.
        if let program = configuration.agent?.command.first, program.contains("/"), !program.hasPrefix("/") {
            configuration.agent!.command[0] = URL(fileURLWithPath: program, relativeTo: URL(fileURLWithPath: folder + "/")).standardizedFileURL.path
        }
        // So is the journal.
        configuration.journalPath = configuration.journalPath.map {
            URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: folder + "/")).standardizedFileURL.path
        }
        // So are the repository and the slots folder.
        if var repoPool = configuration.repoPool {
            let base = URL(fileURLWithPath: folder + "/")
            repoPool.repository = URL(fileURLWithPath: repoPool.repository, relativeTo: base).standardizedFileURL.path
            repoPool.slotsDirectory = repoPool.slotsDirectory.map { URL(fileURLWithPath: $0, relativeTo: base).standardizedFileURL.path }
            configuration.repoPool = repoPool
        }
        return configuration
    }

    /// Reads and checks configuration text; `file` names it in errors.
    public static func load(text: String, file: String) throws(SpecValidationError) -> DispatcherConfiguration {
        let root: SpecNode
        switch SpecNode.parseYAML(text, file: file) {
        case .failure(let issue): throw SpecValidationError(issues: [issue])
        case .success(let node): root = node
        }
        var decoder = ConfigurationDecoder(file: file)
        let configuration = decoder.decode(root)
        guard decoder.reader.issues.isEmpty else {
            throw SpecValidationError(issues: SpecLoader.sortedByLine(decoder.reader.issues))
        }
        return configuration
    }
}

private struct ConfigurationDecoder {
    var reader: SpecNodeReader
    var configuration = DispatcherConfiguration()

    init(file: String) { reader = SpecNodeReader(file: file) }

    mutating func decode(_ root: SpecNode) -> DispatcherConfiguration {
        guard let fields = reader.mapping(root, "") else { return configuration }
        var mappingNode: SpecNode?
        for (key, node) in fields {
            switch key {
            case "dispatcher": decodeDispatcher(node)
            case "agent_pools": decodePools(node)
            case "skill_mapping": mappingNode = node
            case "repo_pool": decodeRepoPool(node)
            case "agent": decodeAgent(node)
            case "budget": decodeBudget(node)
            default: unknown(key, node, key, ConfigurationLoader.topKeys)
            }
        }
        if let mappingNode { decodeSkillMapping(mappingNode) }  // after the pools it names
        if configuration.pools.isEmpty {
            reader.fail(.missingField, root, "agent_pools", "no agent pool is configured: add one under agent_pools")
        }
        return configuration
    }

    private mutating func unknown(_ key: String, _ node: SpecNode, _ path: String, _ known: [String]) {
        reader.fail(.unknownField, node, path, "unknown key \(key) (expected one of \(known.joined(separator: ", ")))")
    }

    /// A positive integer, at most `maximum`: counts and sizes far beyond any machine are
    /// mistakes (and would overflow what is added up from them).
    private mutating func positive(_ node: SpecNode, _ path: String, maximum: Int = 1_000_000) -> Int? {
        guard let value = reader.integer(node, path) else { return nil }
        guard value > 0, value <= maximum else {
            reader.fail(.invalidValue, node, path, "\(path) must be an integer from 1 to \(maximum), found \(value)")
            return nil
        }
        return value
    }

    private mutating func positiveNumber(_ node: SpecNode, _ path: String) -> Double? {
        guard let value = reader.number(node, path) else { return nil }
        guard value > 0 else {
            reader.fail(.invalidValue, node, path, "\(path) must be positive, found \(value)")
            return nil
        }
        return value
    }

    private mutating func decodeDispatcher(_ node: SpecNode) {
        guard let fields = reader.mapping(node, "dispatcher") else { return }
        for (key, value) in fields {
            let path = "dispatcher.\(key)"
            switch key {
            case "poll_interval":
                _ = reader.duration(value, path)  // accepted for old files: dispatch is event-driven, nothing polls
            case "scheduling_policy":
                guard let name = reader.string(value, path) else { continue }
                if let policy = SchedulingPolicy(name: name) {
                    configuration.schedulingPolicy = policy
                } else {
                    reader.fail(
                        .invalidValue, value, path,
                        "unknown scheduling policy \(name) (expected one of \(SchedulingPolicy.all.map(\.name).joined(separator: ", ")))")
                }
            case "max_global_concurrency":
                configuration.maxGlobalConcurrency = positive(value, path)
            case "heartbeat_timeout":
                if let timeout = reader.duration(value, path) {
                    if timeout > .zero {
                        configuration.heartbeatTimeout = timeout
                    } else {
                        reader.fail(.invalidValue, value, path, "\(path) must be more than 0: every runner would be stopped at once")
                    }
                }
            case "retry_max_attempts":
                if let attempts = positive(value, path) { configuration.retry.maxAttempts = attempts }
            case "retry_backoff_base":
                if let base = reader.number(value, path) {
                    if base >= 1 { configuration.retry.base = base } else { reader.fail(.invalidValue, value, path, "\(path) must be at least 1") }
                }
            case "retry_initial_delay":
                if let delay = reader.duration(value, path) { configuration.retry.initialDelay = delay }
            case "retry_max_delay":
                if let delay = reader.duration(value, path) { configuration.retry.maxDelay = delay }
            case "retry_jitter":
                if let jitter = reader.number(value, path) {
                    if (0...1).contains(jitter) { configuration.retry.jitter = jitter } else {
                        reader.fail(.invalidValue, value, path, "\(path) must be between 0 and 1")
                    }
                }
            case "graceful_shutdown_timeout":
                if let timeout = reader.duration(value, path) { configuration.gracefulShutdownTimeout = timeout }
            case "run_optional_tasks":
                if let run = reader.boolean(value, path) { configuration.runOptionalTasks = run }
            case "record_failure_timeout":
                if let timeout = reader.duration(value, path) { configuration.recordFailureTimeout = timeout }
            case "max_request_body_mb":
                if let size = positive(value, path, maximum: 4096) { configuration.maxRequestBodyMB = size }
            case "gate_timeout":
                if let seconds = duration(value, path) { configuration.gateTimeout = .seconds(seconds) }
            case "journal_path":
                if let journal = reader.string(value, path) {
                    if journal.isEmpty || journal.utf8.contains(0) || journal.hasSuffix("/") {
                        reader.fail(.invalidValue, value, path, "\(path) must name a file")
                    } else {
                        configuration.journalPath = journal
                    }
                }
            default:
                unknown(key, value, path, ConfigurationLoader.dispatcherKeys)
            }
        }
    }

    /// A positive duration, as seconds or text such as `90s`, `30m`, `1h`.
    private mutating func duration(_ node: SpecNode, _ path: String) -> Int? {
        guard let duration = reader.duration(node, path) else { return nil }
        guard duration > .zero else {
            reader.fail(.invalidValue, node, path, "\(path) must be more than 0")
            return nil
        }
        return Int(max(1, min(duration.components.seconds, Int64(Int32.max))))
    }

    /// `agent: claude` (a preset), or `agent: {preset, command, args, resume, prompt_via,
    /// prompt_template, steps, stall_timeout}`: what `necro runner` runs.
    private mutating func decodeAgent(_ node: SpecNode) {
        let location = node.line.map { "\(reader.file):\($0)" } ?? reader.file
        let presets = AgentPreset.names.joined(separator: ", ")
        if case .object = node.value {} else {
            guard let name = reader.string(node, "agent") else { return }
            guard var preset = AgentPreset.named(name) else {
                reader.fail(.invalidValue, node, "agent", "unknown agent preset \(name) (known: \(presets)); or give agent: {command: [...]}")
                return
            }
            preset.location = location
            configuration.agent = preset
            return
        }
        guard let fields = reader.mapping(node, "agent") else { return }
        var agent = AgentConfiguration(command: [], location: location)
        if let presetNode = fields.first(where: { $0.key == "preset" })?.value, let name = reader.string(presetNode, "agent.preset") {
            if let preset = AgentPreset.named(name) {
                agent = preset
                agent.location = location
            } else {
                reader.fail(.invalidValue, presetNode, "agent.preset", "unknown agent preset \(name) (known: \(presets))")
            }
        }
        var args: [String] = []
        for (key, value) in fields {
            let path = "agent.\(key)"
            switch key {
            case "preset": break
            case "command":
                let argv = strings(value, path)
                if argv.isEmpty {
                    reader.fail(.invalidValue, value, path, "agent.command must be a non-empty argv list, such as [claude, -p]")
                }
                agent.command = argv
            case "args":
                args = strings(value, path)
            case "resume":
                agent.resume = strings(value, path)
                if !agent.resume.isEmpty && !agent.resume.contains(where: { $0.contains("{agent.session}") }) {
                    reader.fail(.invalidValue, value, path, "agent.resume must hold {agent.session}, the session to resume, such as [--resume, \"{agent.session}\"]")
                }
            case "prompt_via":
                if let via: AgentConfiguration.PromptVia = word(value, path, "arg, file or stdin") { agent.promptVia = via }
            case "prompt_template":
                guard let file = reader.string(value, path) else { continue }
                agent.promptTemplate = template(file, value, path)
            case "steps":
                if let steps: AgentConfiguration.Steps = word(value, path, "once (the agent runs once for the task) or each (once per step)") {
                    agent.steps = steps
                }
            case "stall_timeout":
                if let seconds = duration(value, path) { agent.stallTimeout = .seconds(seconds) }
            default:
                unknown(key, value, path, ConfigurationLoader.agentKeys)
            }
        }
        agent.command += args
        if agent.command.isEmpty && !fields.contains(where: { $0.key == "command" }) {
            reader.fail(.missingField, node, "agent.command", "agent needs command (the agent's argv, such as [claude, -p]) or preset (\(presets))")
        }
        configuration.agent = agent
    }

    /// One of the words `T` is written as; another is refused as `path must be <expected>, found …`.
    private mutating func word<T: RawRepresentable>(_ node: SpecNode, _ path: String, _ expected: String) -> T? where T.RawValue == String {
        guard let text = reader.string(node, path) else { return nil }
        guard let value = T(rawValue: text) else {
            reader.fail(.invalidValue, node, path, "\(path) must be \(expected), found \(text)")
            return nil
        }
        return value
    }

    private mutating func strings(_ node: SpecNode, _ path: String) -> [String] {
        reader.list(node, path).enumerated().compactMap { reader.string($0.element, "\(path)[\($0.offset)]") }
    }

    /// A prompt template file, beside the configuration unless absolute: its text, checked.
    private mutating func template(_ file: String, _ node: SpecNode, _ path: String) -> String? {
        let folder = URL(fileURLWithPath: reader.file).deletingLastPathComponent()
        let full = file.hasPrefix("/") ? file : URL(fileURLWithPath: file, relativeTo: folder).standardizedFileURL.path
        guard let data = FileManager.default.contents(atPath: full) else {
            reader.fail(.invalidValue, node, path, "cannot read the prompt template \(full) (missing or unreadable)")
            return nil
        }
        // It travels in TASK_CONTEXT, an environment variable (128 KiB at most, with the rest).
        guard data.count <= 32 << 10 else {
            reader.fail(.invalidValue, node, path, "the prompt template \(full) is \(data.count) bytes: at most 32 KiB (it travels to the runner in TASK_CONTEXT)")
            return nil
        }
        let text = String(decoding: data, as: UTF8.self)
        do {
            _ = try PromptTemplate(text)
        } catch {
            reader.fail(.invalidValue, node, path, "the prompt template \(full), \(error)")
            return nil
        }
        return text
    }

    /// `budget: {task_usd: 2, taskset_usd: 20}`.
    private mutating func decodeBudget(_ node: SpecNode) {
        guard let fields = reader.mapping(node, "budget") else { return }
        var budget = BudgetConfiguration(location: node.line.map { "\(reader.file):\($0)" } ?? reader.file)
        for (key, value) in fields {
            let path = "budget.\(key)"
            switch key {
            case "task_usd", "taskset_usd":
                guard let amount = reader.number(value, path) else { continue }
                guard amount > 0 else {
                    reader.fail(.invalidValue, value, path, "\(path) must be an amount in US dollars above 0, such as 2.50")
                    continue
                }
                if key == "task_usd" { budget.taskUSD = amount } else { budget.tasksetUSD = amount }
            default:
                unknown(key, value, path, ConfigurationLoader.budgetKeys)
            }
        }
        configuration.budget = budget
    }

    private mutating func decodePools(_ node: SpecNode) {
        guard let pools = reader.mapping(node, "agent_pools") else { return }
        for (name, poolNode) in pools {
            let path = "agent_pools.\(name)"
            guard let fields = reader.mapping(poolNode, path) else { continue }
            var type = PoolType.localProcess
            var limits = PoolLimits(name: name, maxConcurrency: 1)
            var command: [String]?
            var environment: [String: String] = [:]
            var nice = 0
            var configNode: SpecNode?
            var sawConcurrency = false
            for (key, value) in fields {
                let keyPath = "\(path).\(key)"
                switch key {
                case "type":
                    guard let typeName = reader.string(value, keyPath) else { continue }
                    guard let known = PoolType(name: typeName) else {
                        reader.fail(.invalidValue, value, keyPath, "unknown pool type \(typeName) (expected local-process, docker or kubernetes)")
                        continue
                    }
                    type = known
                    guard PoolType.supported.contains(known) else {
                        reader.fail(
                            .invalidValue, value, keyPath,
                            "pool type \(typeName) is not supported yet: local-process and docker pools can run in this version (remove pool \(name), or route its skills to another)")
                        continue
                    }
                case "max_concurrency":
                    sawConcurrency = true
                    if let value = positive(value, keyPath) { limits.maxConcurrency = value }
                case "cpu_quota":
                    limits.cpuQuota = positiveNumber(value, keyPath)
                case "memory_quota":
                    limits.memoryQuotaMB = positive(value, keyPath, maximum: 1 << 30)
                case "enabled":
                    limits.enabled = reader.boolean(value, keyPath) ?? true
                case "default_resources":
                    guard let resourceFields = reader.mapping(value, keyPath) else { continue }
                    for (resource, amount) in resourceFields {
                        switch resource {
                        case "cpu": limits.defaultResources.cpu = positiveNumber(amount, "\(keyPath).cpu")
                        case "memory_mb": limits.defaultResources.memoryMB = positive(amount, "\(keyPath).memory_mb", maximum: 1 << 30)
                        default: unknown(resource, amount, "\(keyPath).\(resource)", ["cpu", "memory_mb"])
                        }
                    }
                case "config":
                    configNode = value
                default:
                    unknown(key, value, keyPath, ConfigurationLoader.poolKeys)
                }
            }
            if !sawConcurrency {
                reader.fail(.missingField, poolNode, "\(path).max_concurrency", "pool \(name) needs max_concurrency")
            }
            var container = ContainerSettings(image: "")
            var sawImage = false
            // (A type not supported yet is refused as such; its settings are not looked at.)
            if let configNode, PoolType.supported.contains(type), let configFields = reader.mapping(configNode, "\(path).config") {
                for (key, value) in configFields {
                    let keyPath = "\(path).config.\(key)"
                    if type == .docker {
                        if decodeContainerSetting(key, value, keyPath, into: &container) {
                            if key == "image" { sawImage = true }
                            continue
                        }
                        if key == "nice" {
                            unknown(key, value, keyPath, ConfigurationLoader.dockerConfigKeys)
                            continue
                        }
                    }
                    switch key {
                    case "command":
                        let argv = reader.list(value, keyPath).enumerated().compactMap { reader.string($0.element, "\(keyPath)[\($0.offset)]") }
                        if argv.isEmpty {
                            reader.fail(.invalidValue, value, keyPath, "command must be a non-empty argv list, such as [claude, -p, \"{task.title}\"]")
                        } else {
                            command = argv
                            for placeholder in CommandTemplate(argv).unknownPlaceholders {
                                reader.fail(
                                    .invalidValue, value, keyPath,
                                    "unknown placeholder {\(placeholder)} (known: \(CommandTemplate.placeholders.sorted().map { "{\($0)}" }.joined(separator: ", ")))")
                            }
                        }
                    case "env":
                        guard let variables = reader.mapping(value, keyPath) else { continue }
                        for (variable, text) in variables {
                            if let text = reader.string(text, "\(keyPath).\(variable)") { environment[variable] = text }
                        }
                    case "nice":
                        guard let number = reader.integer(value, keyPath) else { continue }
                        guard (0...19).contains(number) else {
                            reader.fail(.invalidValue, value, keyPath, "\(keyPath) must be 0 to 19 (added to the dispatcher's own niceness), found \(number)")
                            continue
                        }
                        nice = number
                    default:
                        unknown(key, value, keyPath, type == .docker ? ConfigurationLoader.dockerConfigKeys : ConfigurationLoader.localConfigKeys)
                    }
                }
            }
            // A local pool without a command is accepted: a task routed to it fails, naming what is missing.
            if type == .docker && !sawImage {
                reader.fail(.missingField, configNode ?? poolNode, "\(path).config.image", "docker pool \(name) needs config.image, the image its containers are made from")
            }
            configuration.pools.append(
                PoolConfiguration(
                    name: name, type: type, limits: limits, command: CommandTemplate(command ?? []), environment: environment, nice: nice,
                    container: type == .docker ? container : nil, location: poolNode.line.map { "\(reader.file):\($0)" }))
        }
    }

    /// Takes a docker pool's own `config` key into `container`; false for a key it does not know
    /// (shared ones, `command` and `env`, are read by the caller).
    private mutating func decodeContainerSetting(_ key: String, _ value: SpecNode, _ path: String, into container: inout ContainerSettings) -> Bool {
        switch key {
        case "image":
            if let image = reader.string(value, path) {
                if image.isEmpty || image.contains(where: \.isWhitespace) {
                    reader.fail(.invalidValue, value, path, "\(path) must name an image, such as my-agent:latest")
                }
                container.image = image
            }
        case "mount_repo_pool":
            container.mountRepoPool = reader.boolean(value, path) ?? true
        case "env_from_host":
            container.environmentFromHost = reader.list(value, path).enumerated().compactMap { reader.string($0.element, "\(path)[\($0.offset)]") }
        case "user":
            if let user = reader.string(value, path) {
                if user.isEmpty { reader.fail(.invalidValue, value, path, "\(path) must be uid:gid or a user name the image knows") }
                container.user = user
            }
        case "network":
            if let network = reader.string(value, path) {
                if network.isEmpty { reader.fail(.invalidValue, value, path, "\(path) must be none, host or a network's name") }
                container.network = network
            }
        case "pids_limit":
            container.pidsLimit = positive(value, path, maximum: 1 << 22)
        case "pull":
            if let pull: ContainerSettings.Pull = word(value, path, "never or missing") { container.pull = pull }
        default:
            return false
        }
        return true
    }

    private mutating func decodeRepoPool(_ node: SpecNode) {
        guard let fields = reader.mapping(node, "repo_pool") else { return }
        var repoPool = RepoPoolConfiguration(repository: "")
        var sawRepository = false
        for (key, value) in fields {
            let path = "repo_pool.\(key)"
            switch key {
            case "repo":
                guard let text = reader.string(value, path) else { continue }
                if text.isEmpty { reader.fail(.invalidValue, value, path, "repo_pool.repo must name a git repository") }
                repoPool.repository = text
                sawRepository = true
            case "base_ref":
                repoPool.baseRef = reader.string(value, path)
            case "slots_dir":
                repoPool.slotsDirectory = reader.string(value, path)
            case "max_slots":
                repoPool.maxSlots = positive(value, path, maximum: 1_000)  // each slot is a worktree
            case "branch_template":
                guard let text = reader.string(value, path) else { continue }
                switch BranchTemplate.parse(text) {
                case .success(let template): repoPool.branchTemplate = template
                case .failure(let error): reader.fail(.invalidValue, value, path, "branch_template \(text) \(error.message)")
                }
            default:
                unknown(key, value, path, ConfigurationLoader.repoPoolKeys)
            }
        }
        if !sawRepository {
            reader.fail(.missingField, node, "repo_pool.repo", "repo_pool needs repo, the path of a local git repository")
        }
        configuration.repoPool = repoPool
    }

    private mutating func decodeSkillMapping(_ node: SpecNode) {
        guard let skills = reader.mapping(node, "skill_mapping") else { return }
        let known = Set(configuration.pools.map(\.name))
        for (skill, poolsNode) in skills {
            let path = "skill_mapping.\(skill)"
            var names: [String] = []
            for (i, element) in reader.list(poolsNode, path).enumerated() {
                guard let name = reader.string(element, "\(path)[\(i)]") else { continue }
                if known.contains(name) {
                    names.append(name)
                } else {
                    reader.fail(
                        .invalidValue, element, "\(path)[\(i)]",
                        "skill \(skill) maps to pool \(name), which is not configured under agent_pools")
                }
            }
            configuration.skillMapping[skill] = names
        }
    }
}
