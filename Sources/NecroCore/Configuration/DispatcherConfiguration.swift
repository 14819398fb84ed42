/// Where a pool runs its runners.
public struct PoolType: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    private init(_ name: String) { self.name = name }

    public static let localProcess = PoolType("local-process")
    public static let docker = PoolType("docker")
    public static let kubernetes = PoolType("kubernetes")

    public static let all: [PoolType] = [.localProcess, .docker, .kubernetes]
    /// The types this build can launch.
    public static let supported: [PoolType] = [.localProcess, .docker]

    public init?(name: String) {
        guard let type = Self.all.first(where: { $0.name == name }) else { return nil }
        self = type
    }

    public var description: String { name }
}

/// One agent pool: its limits and how it starts a runner.
public struct PoolConfiguration: Hashable, Sendable {
    public var name: String
    public var type: PoolType
    public var limits: PoolLimits
    /// The runner's argv; `{task.id}`-style placeholders are filled in per runner.
    public var command: CommandTemplate
    /// Extra environment for the runner.
    public var environment: [String: String]
    /// Added to the dispatcher's niceness for its runners (0 to 19): a pool of CPU-heavy agents can
    /// yield to the dispatcher and to the machine's other work.
    public var nice: Int
    /// How a `docker` pool makes its containers; nil for other types.
    public var container: ContainerSettings?
    /// Where the pool is written (`file:line`), for messages about it.
    public var location: String?

    /// Whether its runners are `necro runner` (they report their own leases and gates): a local
    /// pool without a command runs it, as does a command that names it.
    public var runsNecroRunner: Bool {
        let argv = command.argv
        if argv.isEmpty { return type == .localProcess }
        return argv.count >= 2 && argv[0].split(separator: "/").last == "necro" && argv[1] == "runner"
    }

    public init(
        name: String, type: PoolType = .localProcess, limits: PoolLimits, command: CommandTemplate,
        environment: [String: String] = [:], nice: Int = 0, container: ContainerSettings? = nil, location: String? = nil
    ) {
        self.location = location
        self.name = name
        self.type = type
        self.limits = limits
        self.command = command
        self.environment = environment
        self.nice = nice
        self.container = container
    }
}

/// A `docker` pool's containers (`agent_pools.NAME.config`): one per attempt, made from `image`.
public struct ContainerSettings: Hashable, Sendable {
    public enum Pull: String, Hashable, Sendable, CaseIterable {
        /// The image must be there: a missing one fails the attempt, naming it.
        case never
        /// Pulled from its registry when it is not there.
        case missing
    }

    public var image: String
    /// Whether the task's worktree (and its repository's git folder) is mounted; without it the
    /// container works in an empty folder of its own.
    public var mountRepoPool = true
    /// Names of the dispatcher's environment variables passed on (API keys stay out of the file).
    public var environmentFromHost: [String] = []
    /// `uid:gid` (or a name the image knows); nil: the dispatcher's own uid and gid, so that files
    /// written in the worktree belong to the user.
    public var user: String?
    /// The container's network: `none` (the default), `host`, or a network's name.
    public var network = "none"
    /// The most processes the container may run; nil for the engine's default.
    public var pidsLimit: Int?
    public var pull = Pull.never

    public init(image: String) { self.image = image }
}

/// Everything `necro run` and `necro serve` are configured with; every field has a default.
public struct DispatcherConfiguration: Hashable, Sendable {
    public var schedulingPolicy: SchedulingPolicy
    /// Runners across all pools; nil for no limit beyond the pools' own.
    public var maxGlobalConcurrency: Int?
    /// A runner silent (no heartbeat, no output) this long is killed.
    public var heartbeatTimeout: Duration
    public var retry: RetryPolicy
    /// How long a shutdown waits for running runners before stopping them.
    public var gracefulShutdownTimeout: Duration
    public var pools: [PoolConfiguration]
    /// Skill → pool names, with `default` for the rest.
    public var skillMapping: [String: [String]]
    /// Git worktrees for tasks; nil runs each task in a plain working folder.
    public var repoPool: RepoPoolConfiguration?
    /// Run optional tasks (`- [ ]*`) too; by default they are skipped (`dispatcher.run_optional_tasks`).
    public var runOptionalTasks = false
    /// How long a run goes on, with nothing running, while no record can be written anywhere
    /// (`dispatcher.record_failure_timeout`): then `necro run` gives up, naming the file and the
    /// error. `necro serve` keeps trying.
    public var recordFailureTimeout: Duration = .seconds(30)
    /// Where the dispatcher's write-ahead journal lives (`dispatcher.journal_path`); nil: beside
    /// the registry, `<registry>.fallback.jsonl`. On another disk, it keeps the records when the
    /// registry's disk is full.
    public var journalPath: String?
    /// The largest request body the API takes, in MB (`dispatcher.max_request_body_mb`): a spec
    /// sent to `POST /v1/tasksets` larger than this is refused with 413 before it is read.
    public var maxRequestBodyMB = 64
    /// How long one DONE gate may run before it is stopped and counts as failed
    /// (`dispatcher.gate_timeout`); the task's own timeout still applies.
    public var gateTimeout: Duration = .seconds(30 * 60)
    /// The agent `necro runner` runs for a task that names none (top-level `agent:`).
    public var agent: AgentConfiguration?
    /// What the agents may spend (top-level `budget:`).
    public var budget = BudgetConfiguration()

    public init(
        schedulingPolicy: SchedulingPolicy = .priority,
        maxGlobalConcurrency: Int? = nil,
        heartbeatTimeout: Duration = .seconds(60),
        retry: RetryPolicy = RetryPolicy(),
        gracefulShutdownTimeout: Duration = .seconds(300),
        pools: [PoolConfiguration] = [],
        skillMapping: [String: [String]] = [:],
        repoPool: RepoPoolConfiguration? = nil
    ) {
        self.schedulingPolicy = schedulingPolicy
        self.maxGlobalConcurrency = maxGlobalConcurrency
        self.heartbeatTimeout = heartbeatTimeout
        self.retry = retry
        self.gracefulShutdownTimeout = gracefulShutdownTimeout
        self.pools = pools
        self.skillMapping = skillMapping
        self.repoPool = repoPool
    }

    /// Pool admission as configured: with a repo pool, no more runners than slots.
    public var admission: PoolAdmission {
        let limit = [maxGlobalConcurrency, slotCount].compactMap { $0 }.min()
        return PoolAdmission(pools: pools.map(\.limits), skillMapping: skillMapping, maxGlobalConcurrency: limit)
    }

    /// How many worktrees the repo pool may hold: `max_slots`, else the global concurrency, else
    /// what all pools together may run. Nil without a repo pool.
    public var slotCount: Int? {
        guard let repoPool else { return nil }
        return repoPool.maxSlots ?? maxGlobalConcurrency ?? max(1, pools.reduce(0) { $0 + $1.limits.maxConcurrency })
    }

    public func pool(named name: String) -> PoolConfiguration? { pools.first { $0.name == name } }
}

/// The agent `necro runner` wraps (top-level `agent:` of the configuration, or a preset).
public struct AgentConfiguration: Hashable, Sendable {
    /// How `necro runner` runs the agent for a task's steps.
    public enum Steps: String, Hashable, Sendable {
        /// Once for the whole task, every step in its context (the default).
        case once
        /// Once per step not done yet, with a checkpoint after each.
        case each
    }

    /// How the task's prompt reaches the agent.
    public enum PromptVia: String, Hashable, Sendable, CaseIterable {
        /// As `{prompt}` inside an argv element (else as the last argument).
        case arg
        /// As a file, its path `{prompt.file}` inside an argv element (else the last argument).
        case file
        /// On the agent's stdin (otherwise closed).
        case stdin
    }

    /// The agent's argv. `{prompt}`, `{prompt.file}` stand for the task's prompt.
    public var command: [String]
    public var steps: Steps
    /// How long the agent may show no sign of activity (output, CPU time, file changes) before
    /// `necro runner` reports a stall and lets its lease lapse.
    public var stallTimeout: Duration
    /// Where it is written (`file:line`).
    public var location: String?
    /// The preset it comes from (`claude`, `codex`, `aider`), if any.
    public var preset: String?
    /// Arguments added after `command` when the attempt resumes the agent's own session
    /// (`{agent.session}` stands for its id); empty: the agent starts its conversation over.
    public var resume: [String]
    /// How the prompt reaches the agent; nil: only as the file `NECRO_PROMPT_FILE` names, unless
    /// the command holds `{prompt}` or `{prompt.file}`.
    public var promptVia: PromptVia?
    /// The prompt template's text (`agent.prompt_template`, read when the configuration loads, so
    /// that it travels in `TASK_CONTEXT`); nil: the default one.
    public var promptTemplate: String?

    public init(
        command: [String], steps: Steps = .once, stallTimeout: Duration = .seconds(15 * 60), location: String? = nil, preset: String? = nil,
        resume: [String] = [], promptVia: PromptVia? = nil, promptTemplate: String? = nil
    ) {
        self.command = command
        self.steps = steps
        self.stallTimeout = stallTimeout
        self.location = location
        self.preset = preset
        self.resume = resume
        self.promptVia = promptVia
        self.promptTemplate = promptTemplate
    }

    /// The agent for a task: its own `_Agent:_` argv (a preset's name alone is that preset), with
    /// the configured agent's steps, stall timeout and template, but no other agent's resume
    /// arguments or prompt way; else the configured agent.
    public static func forTask(_ metadata: [String: JSONValue], configured: AgentConfiguration?) -> AgentConfiguration? {
        guard case .array(let words)? = metadata["agent"] else { return configured }
        let argv = words.compactMap(\.stringValue)
        guard !argv.isEmpty else { return configured }
        if argv.count == 1, var preset = AgentPreset.named(argv[0]) {
            if let configured {
                preset.steps = configured.steps
                preset.stallTimeout = configured.stallTimeout
                preset.promptTemplate = configured.promptTemplate
            }
            return preset
        }
        var agent = configured ?? AgentConfiguration(command: argv)
        agent.command = argv
        agent.preset = nil
        agent.resume = []
        agent.promptVia = nil
        return agent
    }
}

/// How much the agents may spend (top-level `budget:`): once the cost recorded reaches a limit,
/// no attempt starts that it covers.
public struct BudgetConfiguration: Hashable, Sendable {
    /// Per task, over all its attempts (`budget.task_usd`).
    public var taskUSD: Double?
    /// Per taskset, all its tasks together (`budget.taskset_usd`).
    public var tasksetUSD: Double?
    /// Where it is written (`file:line`).
    public var location: String?

    public init(taskUSD: Double? = nil, tasksetUSD: Double? = nil, location: String? = nil) {
        self.taskUSD = taskUSD
        self.tasksetUSD = tasksetUSD
        self.location = location
    }

    /// Why an attempt may not start, given what the task and its taskset cost so far; nil: it may.
    public func refusal(task: Double, taskset: Double) -> String? {
        let place = location.map { " (\($0))" } ?? ""
        if let limit = taskUSD, task >= limit {
            return "budget reached: the task's agents cost \(Self.dollars(task)), budget.task_usd is \(Self.dollars(limit))\(place): no further attempt starts (raise it, then necro retry the task)"
        }
        if let limit = tasksetUSD, taskset >= limit {
            return "budget reached: the taskset's agents cost \(Self.dollars(taskset)), budget.taskset_usd is \(Self.dollars(limit))\(place): no further attempt starts (raise it, then necro retry the task)"
        }
        return nil
    }

    /// `$0.0123`, `$0.30`, `$12.50`: cents, and below a dollar up to four places.
    public static func dollars(_ amount: Double) -> String {
        guard amount.isFinite, abs(amount) < 1e12 else { return amount.isFinite ? "over $1,000,000,000,000" : "$?" }
        let places = abs(amount) < 1 ? 4 : 2
        let scale = places == 4 ? 10_000 : 100
        let scaled = Int((abs(amount) * Double(scale)).rounded())
        var fraction = String(scaled % scale)
        fraction = String(repeating: "0", count: places - fraction.count) + fraction
        while fraction.count > 2 && fraction.hasSuffix("0") { fraction.removeLast() }
        return (amount < 0 ? "-$" : "$") + "\(scaled / scale).\(fraction)"
    }
}
