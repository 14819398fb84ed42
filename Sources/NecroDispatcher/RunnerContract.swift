import Foundation
public import NecroCore

/// What every runner is given, whatever starts it (a local process, a container, a Job): its argv,
/// and the variables that tell it its task and how to reach the dispatcher. Built here only.
public struct RunnerContract: Sendable {
    public let request: LaunchRequest
    public let pool: PoolConfiguration
    /// The task's folder: its worktree, or its plain work folder.
    public let work: String
    let api: RunnerAPI?
    let checkpoint: [String: JSONValue]?
    /// More of `TASK_CONTEXT`: the previous failure, the agent, the timeouts.
    let context: [String: JSONValue]

    public init(
        request: LaunchRequest, pool: PoolConfiguration, work: String, api: RunnerAPI?, checkpoint: [String: JSONValue]?,
        context: [String: JSONValue] = [:]
    ) {
        self.request = request
        self.pool = pool
        self.work = work
        self.api = api
        self.checkpoint = checkpoint
        self.context = context
    }

    /// The pool's command with the task's placeholders filled in; empty for a container pool that
    /// runs its image's own entrypoint and command.
    public var argv: [String] {
        pool.command.render([
            "task.id": request.task.id.rawValue, "task.title": request.spec.title, "spec": request.task.spec,
            "slot.path": work, "runner.id": request.runner.rawValue,
        ])
    }

    /// The runner's whole environment: for a local process, the dispatcher's own (`base`); for a
    /// container, only the variables its pool names in `env_from_host`. Then the pool's `env`,
    /// then the contract's own variables, which nothing overrides. Never the registry's path nor
    /// an admin token: a runner talks to the API with its own token.
    public func environment(base: [String: String]) -> [String: String] {
        var environment: [String: String]
        if let container = pool.container {
            environment = [:]
            for name in container.environmentFromHost { environment[name] = base[name] }
        } else {
            environment = base
        }
        environment.merge(pool.environment) { $1 }
        environment["RUNNER_ID"] = request.runner.rawValue
        environment["POOL_NAME"] = request.pool
        environment["NECRO_REGISTRY"] = nil
        environment["NECRO_TASK_ID"] = request.task.id.rawValue
        environment["NECRO_SPEC"] = request.task.spec
        environment["NECRO_ATTEMPT"] = String(request.attempt)
        environment["NECRO_SLOT_ID"] = request.slot?.id
        environment["NECRO_BRANCH"] = request.slot?.branch
        environment["NECRO_API_URL"] = nil
        environment["NECRO_API_SOCKET"] = nil
        environment["NECRO_ADMIN_TOKEN"] = nil
        environment["NECRO_RUNNER_TOKEN"] = nil
        if let api {
            if !api.url.isEmpty { environment["NECRO_API_URL"] = api.url }
            if let socket = api.socket { environment["NECRO_API_SOCKET"] = socket }
            environment["NECRO_RUNNER_TOKEN"] = api.token(request.runner)
        }
        environment["TASK_CONTEXT"] = TaskContext.json(request, slotPath: work, checkpoint: checkpoint, more: context)
        return environment
    }
}
