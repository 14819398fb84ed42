public import NecroCore
public import ServiceLifecycle

/// A dispatcher as a service: it runs its tasksets, and whatever is loaded into it later, until
/// it finishes (`necro run`: every task done or stuck) or a graceful shutdown, which it takes as
/// the first SIGTERM of `necro run`: nothing new starts, running runners get up to
/// `graceful_shutdown_timeout` to finish. How it ended is handed to `finished`.
public struct DispatcherService: Service {
    public let dispatcher: Dispatcher<ContinuousClock>
    let tasksets: [(spec: TaskSetSpec, records: [TaskRecord])]
    let recovered: RecoveredRunners
    let finished: @Sendable (RunOutcome) -> Void

    public init(
        _ dispatcher: Dispatcher<ContinuousClock>, tasksets: [(spec: TaskSetSpec, records: [TaskRecord])],
        recovered: RecoveredRunners = RecoveredRunners(), finished: @escaping @Sendable (RunOutcome) -> Void = { _ in }
    ) {
        self.dispatcher = dispatcher
        self.tasksets = tasksets
        self.recovered = recovered
        self.finished = finished
    }

    public func run() async throws {
        let outcome = try await withGracefulShutdownHandler {
            try await dispatcher.run(tasksets, recovered: recovered)
        } onGracefulShutdown: {
            dispatcher.shutdown()
        }
        finished(outcome)
    }
}
