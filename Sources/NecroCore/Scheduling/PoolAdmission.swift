/// One agent pool as admission sees it: its limits, not how it launches runners.
public struct PoolLimits: Hashable, Sendable {
    public var name: String
    public var maxConcurrency: Int
    /// CPU cores all running tasks together may use.
    public var cpuQuota: Double?
    /// Megabytes all running tasks together may use.
    public var memoryQuotaMB: Int?
    public var enabled: Bool
    /// What a task that names no resources is counted as.
    public var defaultResources: TaskResources

    public init(
        name: String,
        maxConcurrency: Int,
        cpuQuota: Double? = nil,
        memoryQuotaMB: Int? = nil,
        enabled: Bool = true,
        defaultResources: TaskResources = TaskResources(cpu: 1, memoryMB: 1024)
    ) {
        self.name = name
        self.maxConcurrency = maxConcurrency
        self.cpuQuota = cpuQuota
        self.memoryQuotaMB = memoryQuotaMB
        self.enabled = enabled
        self.defaultResources = defaultResources
    }
}

/// Decides which pool may take a task now: per-pool concurrency, CPU and memory quotas, a global
/// limit, skill routing, and load balance.
public struct PoolAdmission: Sendable {
    /// How to choose among the pools a task may run on.
    public enum Choice: Sendable {
        /// The pool with the smallest share of its concurrency in use.
        case leastLoaded
        /// The pool that serves the fewest skills; `default` pools last.
        case mostSpecialised
    }

    /// Why a task cannot be placed, ever, with the pools as they are configured.
    public enum Problem: Hashable, Sendable {
        /// No pool is mapped to the skill and there is no `default` mapping.
        case noPoolForSkill(String?)
        /// The task asks for more than the quota of every pool it may run on.
        case exceedsEveryPool(TaskResources)
    }

    public struct Usage: Hashable, Sendable {
        public var running = 0
        public var cpu: Double = 0
        public var memoryMB = 0
    }

    public private(set) var pools: [PoolLimits]
    public private(set) var usage: [String: Usage] = [:]
    /// Skill → pool names, with `default` for the skills not listed.
    public let skillMapping: [String: [String]]
    public var maxGlobalConcurrency: Int?
    public private(set) var globalRunning = 0
    private let specialisation: [String: Int]

    public init(pools: [PoolLimits], skillMapping: [String: [String]] = [:], maxGlobalConcurrency: Int? = nil) {
        self.pools = pools
        self.skillMapping = skillMapping
        self.maxGlobalConcurrency = maxGlobalConcurrency
        var score: [String: Int] = [:]
        for (skill, names) in skillMapping {
            for name in names { score[name, default: 0] += skill == "default" ? 10_000 : 1 }
        }
        self.specialisation = score
    }

    /// The pools a skill is routed to, in configuration order.
    public func candidatePools(forSkill skill: String?) -> [String] {
        if let skill, let mapped = skillMapping[skill], !mapped.isEmpty { return mapped }
        if let fallback = skillMapping["default"] { return fallback }
        return skillMapping.isEmpty ? pools.map(\.name) : []
    }

    public func limits(of pool: String) -> PoolLimits? { pools.first { $0.name == pool } }

    /// The resources a task counts for in a pool.
    public func effectiveResources(_ resources: TaskResources, in pool: PoolLimits) -> TaskResources {
        TaskResources(
            cpu: resources.cpu ?? pool.defaultResources.cpu ?? 0,
            memoryMB: resources.memoryMB ?? pool.defaultResources.memoryMB ?? 0
        )
    }

    public var hasGlobalCapacity: Bool { maxGlobalConcurrency.map { globalRunning < $0 } ?? true }

    /// Whether the pool can take a task with these resources right now.
    public func canAdmit(_ resources: TaskResources, to poolName: String) -> Bool {
        guard hasGlobalCapacity, let pool = limits(of: poolName), pool.enabled else { return false }
        let used = usage[poolName] ?? Usage()
        guard used.running < pool.maxConcurrency else { return false }
        let need = effectiveResources(resources, in: pool)
        if let quota = pool.cpuQuota, used.cpu + (need.cpu ?? 0) > quota + 1e-9 { return false }
        if let quota = pool.memoryQuotaMB, used.memoryMB + (need.memoryMB ?? 0) > quota { return false }
        return true
    }

    /// The pool to run a task on now, if any can take it.
    public func choosePool(for task: QueuedTask, by choice: Choice) -> String? {
        let candidates = candidatePools(forSkill: task.skill).filter { canAdmit(task.resources, to: $0) }
        switch choice {
        case .leastLoaded:
            return candidates.min { load(of: $0) < load(of: $1) }
        case .mostSpecialised:
            return candidates.min { (specialisation[$0] ?? 0) < (specialisation[$1] ?? 0) }
        }
    }

    /// Why a task could never be placed, or nil if some pool could take it once it has room.
    /// Disabled pools count: they can be enabled again.
    public func placementProblem(for task: QueuedTask) -> Problem? {
        let candidates = candidatePools(forSkill: task.skill).compactMap(limits(of:))
        if candidates.isEmpty { return .noPoolForSkill(task.skill) }
        let fits = candidates.contains { pool in
            let need = effectiveResources(task.resources, in: pool)
            return pool.maxConcurrency > 0 && (pool.cpuQuota.map { (need.cpu ?? 0) <= $0 + 1e-9 } ?? true)
                && (pool.memoryQuotaMB.map { (need.memoryMB ?? 0) <= $0 } ?? true)
        }
        return fits ? nil : .exceedsEveryPool(task.resources)
    }

    /// Share of the pool's concurrency in use.
    public func load(of poolName: String) -> Double {
        guard let pool = limits(of: poolName), pool.maxConcurrency > 0 else { return 1 }
        return Double(usage[poolName]?.running ?? 0) / Double(pool.maxConcurrency)
    }

    public mutating func admit(_ resources: TaskResources, to poolName: String) {
        guard let pool = limits(of: poolName) else { return }
        let need = effectiveResources(resources, in: pool)
        usage[poolName, default: Usage()].running += 1
        usage[poolName, default: Usage()].cpu += need.cpu ?? 0
        usage[poolName, default: Usage()].memoryMB += need.memoryMB ?? 0
        globalRunning += 1
    }

    public mutating func release(_ resources: TaskResources, from poolName: String) {
        guard let pool = limits(of: poolName) else { return }
        let need = effectiveResources(resources, in: pool)
        usage[poolName, default: Usage()].running -= 1
        usage[poolName, default: Usage()].cpu -= need.cpu ?? 0
        usage[poolName, default: Usage()].memoryMB -= need.memoryMB ?? 0
        globalRunning -= 1
    }

    public mutating func setEnabled(_ enabled: Bool, pool poolName: String) {
        guard let i = pools.firstIndex(where: { $0.name == poolName }) else { return }
        pools[i].enabled = enabled
    }
}
