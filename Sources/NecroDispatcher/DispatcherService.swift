public import NecroCore
public import ServiceLifecycle

/// A dispatcher as a service (`necro serve`): it runs its tasksets, and whatever is loaded into it
/// later, until a graceful shutdown, which it takes as the first SIGTERM of `necro run`: nothing
/// new starts, running runners get up to `graceful_shutdown_timeout` to finish.
public struct DispatcherService: Service {
    public let dispatcher: Dispatcher<ContinuousClock>
    let tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]
    let recovered: RecoveredRunners

    public init(
        _ dispatcher: Dispatcher<ContinuousClock>, tasksets: [(spec: TaskSetSpec, records: [TaskRecord])],
        recovered: RecoveredRunners = RecoveredRunners()
    ) {
        self.dispatcher = dispatcher
        self.tasksets = tasksets
        self.recovered = recovered
    }

    public func run() async throws {
        _ = try await withGracefulShutdownHandler {
            try await dispatcher.run(tasksets, recovered: recovered)
        } onGracefulShutdown: {
            dispatcher.shutdown()
        }
    }
}
