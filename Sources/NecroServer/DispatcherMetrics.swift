import CoreMetrics
import Foundation
public import Hummingbird
public import NecroCore
public import NecroDispatcher
import Prometheus
import Synchronization

/// The dispatcher's metrics, through swift-metrics, exported in Prometheus's text format.
///
/// Counters and histograms follow the recorded events (a subscription to the dispatcher's updates,
/// off its loop); gauges are read from its last snapshot when they are scraped.
public final class DispatcherMetrics: Sendable {
    private let collector: PrometheusCollectorRegistry
    private let queueDepth: CoreMetrics.Gauge
    private let running: [String: CoreMetrics.Gauge]
    private let utilization: [String: CoreMetrics.Gauge]
    private let tasks: [TaskState: CoreMetrics.Gauge]
    private let wait: CoreMetrics.Timer
    private let run: CoreMetrics.Timer
    private let retries: CoreMetrics.Counter
    private let heartbeatTimeouts: CoreMetrics.Counter
    private let events: CoreMetrics.Counter
    private let slotFailures: CoreMetrics.Counter
    private let agentCost: CoreMetrics.FloatingPointCounter
    private let agentTokens: [String: CoreMetrics.Counter]
    /// The registry's last event id when counting began, and the events counted since.
    private let eventsCounted: Mutex<(after: Int64, counted: Int64)>

    /// Metrics for a dispatcher with these pools; events are counted from those recorded after
    /// `eventsAfter` (the registry's last event id as serving begins).
    public init(pools: [String], eventsAfter: Int64 = 0) {
        eventsCounted = Mutex((eventsAfter, 0))
        collector = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: collector)
        let seconds: [Duration] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400]
            .map { .milliseconds(Int64($0 * 1000)) }
        factory.durationHistogramBuckets = ["necro_task_wait_seconds": seconds, "necro_task_run_seconds": seconds]
        queueDepth = CoreMetrics.Gauge(label: "necro_queue_depth", factory: factory)
        running = Dictionary(uniqueKeysWithValues: pools.map { ($0, CoreMetrics.Gauge(label: "necro_tasks_running", dimensions: [("pool", $0)], factory: factory)) })
        utilization = Dictionary(
            uniqueKeysWithValues: pools.map { ($0, CoreMetrics.Gauge(label: "necro_pool_utilization_ratio", dimensions: [("pool", $0)], factory: factory)) })
        tasks = Dictionary(
            uniqueKeysWithValues: TaskState.allCases.map { ($0, CoreMetrics.Gauge(label: "necro_tasks", dimensions: [("state", $0.rawValue)], factory: factory)) })
        wait = CoreMetrics.Timer(label: "necro_task_wait_seconds", factory: factory)
        run = CoreMetrics.Timer(label: "necro_task_run_seconds", factory: factory)
        retries = CoreMetrics.Counter(label: "necro_retries_total", factory: factory)
        heartbeatTimeouts = CoreMetrics.Counter(label: "necro_heartbeat_timeouts_total", factory: factory)
        events = CoreMetrics.Counter(label: "necro_events_total", factory: factory)
        slotFailures = CoreMetrics.Counter(label: "necro_slot_allocation_failures_total", factory: factory)
        agentCost = CoreMetrics.FloatingPointCounter(label: "necro_agent_cost_usd_total", factory: factory)
        agentTokens = Dictionary(
            uniqueKeysWithValues: AgentUsage.tokenKinds.map {
                ($0, CoreMetrics.Counter(label: "necro_agent_tokens_total", dimensions: [("kind", $0)], factory: factory))
            })
    }

    /// Follows the dispatcher's recorded events until it finishes.
    public func follow(_ updates: AsyncStream<Dispatcher<ContinuousClock>.Update>) async {
        for await update in updates {
            if case .events(let batch) = update { observe(batch) }
        }
    }

    /// Counts what these events tell.
    public func observe(_ batch: [EventRecord]) {
        for event in batch {
            switch event.type {
            case .taskRetryScheduled where event.payload["requested"] == nil:
                retries.increment()
            case .runnerTimedOut where event.payload["reason"]?.stringValue?.hasPrefix("no heartbeat") == true:
                heartbeatTimeouts.increment()
            case .slotAllocationFailed:
                slotFailures.increment()
            case .taskAssigned:
                // How long it waited ready in the queue, as the engine measured it.
                if let seconds = event.payload["wait_seconds"]?.doubleValue { wait.recordNanoseconds(Int64(seconds * 1e9)) }
            case .agentUsage:
                guard let usage = AgentUsage(payload: event.payload) else { break }
                if usage.costUSD > 0 { agentCost.increment(by: usage.costUSD) }
                for (kind, count) in usage.tokens where count > 0 { agentTokens[kind]?.increment(by: count) }
            case .runnerFinished:
                if let seconds = event.payload["execution_time_seconds"]?.doubleValue { run.recordNanoseconds(Int64(seconds * 1e9)) }
            default:
                break
            }
        }
    }

    /// The exposition, with the gauges as of `snapshot`.
    /// `lastEventID`: the registry's, so that every event counts, also those recorded beside the
    /// dispatcher (imports, other processes).
    public func exposition(snapshot: DispatchSnapshot, lastEventID: Int64? = nil) -> Response {
        if let lastEventID {
            let more = eventsCounted.withLock { counted -> Int64 in
                let total = max(0, lastEventID - counted.after)
                defer { counted.counted = max(counted.counted, total) }
                return max(0, total - counted.counted)
            }
            if more > 0 { events.increment(by: more) }
        }
        queueDepth.record(snapshot.queueDepth)
        for pool in snapshot.pools {
            running[pool.limits.name]?.record(pool.usage.running)
            utilization[pool.limits.name]?.record(pool.utilization)
        }
        var counts: [TaskState: Int] = [:]
        for perSpec in snapshot.tasks.values { counts.merge(perSpec, uniquingKeysWith: +) }
        for (state, gauge) in tasks { gauge.record(counts[state] ?? 0) }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.withHelp(collector.emitToBuffer()))))
    }

    /// What each metric counts, and in which unit: its `# HELP` line.
    static let help: [String: String] = [
        "necro_queue_depth": "Tasks ready and waiting for a place in a pool (tasks).",
        "necro_tasks_running": "Runners running now, per pool (runners).",
        "necro_pool_utilization_ratio": "Runners running over the pool's max_concurrency, per pool (0 to 1).",
        "necro_tasks": "Tasks of every loaded taskset in each state, groups aside (tasks).",
        "necro_task_wait_seconds": "Time a task waited from ready to assigned (seconds).",
        "necro_task_run_seconds": "Time a runner ran, from its start to its exit (seconds).",
        "necro_retries_total": "Retries scheduled after a failed attempt (retries).",
        "necro_heartbeat_timeouts_total": "Runners stopped for staying silent past heartbeat_timeout (runners).",
        "necro_events_total": "Events recorded in the registry by this dispatcher and beside it (events).",
        "necro_slot_allocation_failures_total": "Worktree slots that could not be prepared for a runner (slots).",
        "necro_agent_cost_usd_total": "What the agents under necro runner reported they cost, since this dispatcher started (US dollars).",
        "necro_agent_tokens_total": "Tokens the agents under necro runner reported, by kind: input, output, cache_read, cache_creation (tokens).",
    ]

    /// The exposition with a `# HELP` line before each metric's `# TYPE` line (the swift-metrics
    /// factory names none).
    static func withHelp(_ exposition: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(exposition.count + 1024)
        let typePrefix = Array("# TYPE ".utf8)
        for line in exposition.split(separator: 10, omittingEmptySubsequences: false) {
            if line.starts(with: typePrefix) {
                let name = String(decoding: line.dropFirst(typePrefix.count).prefix { $0 != 32 }, as: UTF8.self)
                out += Array("# HELP \(name) \(help[name] ?? name)\n".utf8)
            }
            out += line
            out.append(10)
        }
        if exposition.last == 10 || exposition.isEmpty { out.removeLast() }
        return out
    }
}
