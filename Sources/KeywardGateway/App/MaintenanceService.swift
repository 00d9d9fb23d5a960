import KeywardStorage
import Logging
import ServiceLifecycle

/// Runs the store's upkeep (the SQLite checkpoint) four times a second, and once more at shutdown.
/// Under load the log grows by tens of MB a second; the bound on it is enforced under the writer's
/// lock, for as long as copying what was written since the last pass takes: the more often the
/// passes, the shorter that stall (measured at 4 connections: p99 18-27 ms at 1 s, 9 ms at 200 ms).
struct MaintenanceService: Service {
    let store: any RecordStore
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(250)) }
            do { try await store.maintain() } catch {
                logger.error("storage upkeep failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
