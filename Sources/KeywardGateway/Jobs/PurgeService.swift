import KeywardStorage
import Logging
import ServiceLifecycle

/// Deletes records past their tenant's retention, and the ended batches whose record went with
/// them, every `purgeIntervalSeconds`.
struct PurgeService: Service {
    let store: any RecordStore
    let files: Files
    let interval: Duration
    let metrics: GatewayMetrics
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                let removed = try await store.purgeExpired(before: Gateway.nowMs())
                metrics.recordsPurged(removed)
                if removed > 0 { logger.notice("expired records purged", metadata: ["count": "\(removed)"]) }
                // After the records: an expired file's blob goes in the same pass.
                let blobs = try await files.sweep(now: Gateway.nowMs())
                if blobs > 0 { logger.notice("file blobs without a record deleted", metadata: ["count": "\(blobs)"]) }
            } catch {
                logger.error("purge failed", metadata: ["error": "\(error)"])
            }
            try? await gracefulShutdownSleep(interval)
        }
    }

    private func gracefulShutdownSleep(_ d: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: d) }
    }
}
