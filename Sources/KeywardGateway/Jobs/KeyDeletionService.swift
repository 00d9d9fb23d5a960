import ServiceLifecycle

/// Destroys, every `interval`, the keys whose deletion Keyward scheduled and whose waiting period
/// has ended (``KeyLifecycle/destroyDueKeys()``). Every replica runs it; each key is claimed once.
struct KeyDeletionService: Service {
    let lifecycle: KeyLifecycle
    let interval: Duration

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            await lifecycle.destroyDueKeys()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
