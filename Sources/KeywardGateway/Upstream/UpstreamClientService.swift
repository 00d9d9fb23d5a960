import ServiceLifecycle

/// Shuts the upstream HTTP client down after the server has drained.
struct UpstreamClientService: Service {
    let client: UpstreamClient
    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
