import ServiceLifecycle

/// Runs ``Replication/follow()`` beside the server.
struct ChangeFeedService: Service {
    let replication: Replication

    func run() async throws {
        await cancelWhenGracefulShutdown { await replication.follow() }
    }
}
