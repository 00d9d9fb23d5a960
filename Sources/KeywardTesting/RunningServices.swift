import ServiceLifecycle

/// Services running until ``stop()`` or until this is released: the tests' stand-in for the
/// service group that runs them in `keyward serve` (a database's pool and health monitor).
public final class RunningServices: Sendable {
    private let tasks: [Task<Void, Never>]

    public init(_ services: [any Service]) {
        tasks = services.map { service in Task { try? await service.run() } }
    }

    public func stop() { for t in tasks { t.cancel() } }
    deinit { stop() }
}
