import KeywardStorage
import Logging
import ServiceLifecycle
import Synchronization

/// Takes up unfinished batches whose lease is free (new ones, those given up at a shutdown, those
/// of a replica that died once its lease has lapsed) every second, and runs up to ``BatchesConfiguration/running`` of them at
/// once. At shutdown the running batches stop sending, let their lines in flight finish, and
/// give their leases up.
struct BatchService: Service, CustomStringConvertible {
    var description: String { "BatchService" }
    let runner: BatchRunner
    var store: any RecordStore { runner.store }

    func run() async throws {
        final class Running: Sendable { let ids = Mutex<Set<String>>([]) }
        let running = Running()
        await withTaskGroup(of: Void.self) { group in
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                let now = Gateway.nowMs()
                let until = now + Int64(runner.settings.leaseSeconds * 1000)
                for batch in (try? await store.unfinishedBatches()) ?? [] {
                    guard running.ids.withLock({ $0.count < runner.settings.running && !$0.contains(batch.id) }) else { continue }
                    guard batch.owner == nil || batch.owner == runner.owner || (batch.leaseUntil ?? 0) < now,
                          let claimed = try? await store.claimBatch(id: batch.id, owner: runner.owner, until: until, now: now) else { continue }
                    running.ids.withLock { _ = $0.insert(batch.id) }
                    group.addTask {
                        await runner.run(claimed)
                        running.ids.withLock { _ = $0.remove(batch.id) }
                    }
                }
                try? await Task.sleep(for: .seconds(1))
            }
            await group.waitForAll()
        }
    }
}
