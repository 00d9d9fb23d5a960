import Dispatch
import Foundation
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage
import Logging
import ServiceLifecycle

/// Moves a tenant's stored records from one master key to another (or, after a rotation, to the
/// same key's newest version) by rewriting record headers only: each distinct data key is
/// unwrapped once with the old key and wrapped with the new one; bodies are never read.
///
/// File blobs are moved the same way, header only, before the records (the bulk) and once more
/// before the job ends (an upload that took the old key before the switch and committed since).
///
/// Resumable: the cursor and counts are saved in the same transaction as each batch of headers,
/// so after a crash the job continues after the last batch that committed. Safe with traffic:
/// a header is replaced only if unchanged since it was read, and new records already use the
/// new key.
struct RekeyJob {
    let store: any RecordStore
    let files: Files
    let keyStores: KeyStores
    let audit: AuditLog
    let replication: Replication
    let metrics: GatewayMetrics
    let logger: Logger
    static let batchSize = 500

    /// Works on `job` until it ends (or until shutdown); returns it as last seen. Several workers
    /// (replicas) may run the same job: each batch is claimed, so each is done once, and the
    /// cursor and counts are the job's, not the worker's.
    func run(_ start: Job) async throws -> Job {
        guard var tenant = try await store.tenant(named: start.tenant) else {
            throw GatewayError.notFound("tenant \(start.tenant) no longer exists")
        }
        // New records go to the new key from here on; idempotent, so a resumed job does it again.
        let previous = start.fromKey == start.toKey ? nil : start.fromKey
        if start.status == .running, tenant.key != start.toKey || tenant.previousKey != previous {
            tenant.key = start.toKey
            tenant.previousKey = previous
            try await store.updateTenantKeys(tenant)
            await replication.changed(.tenant(tenant.name))
        }
        let from = try files.vault.keyring(start.fromKey)
        let to = try files.vault.keyring(start.toKey)
        let scope = Vault.scope(tenant.name)
        // Data keys this worker has moved: records sharing one are rewritten without another unwrap.
        var unwrapped: [[UInt8]: (SecretBytes, EncryptedDataKey)] = [:]
        var produced = Set<[UInt8]>()
        let auditScope = AuditScope(actor: "system", tenant: tenant.name, requestID: start.id, purpose: nil)
        var last = start
        var finished = false
        var blobs = 0
        if start.status == .running {
            blobs += try await files.rewrapBlobs(tenant: tenant.name, from: from, to: to, fromKey: start.fromKey, toKey: start.toKey,
                                                 scope: auditScope)
        }

        while !Task.isShuttingDownGracefully {
            let claim = try await store.withJobClaimed(id: start.id) { current -> (job: Job, headers: [HeaderChange])? in
                guard current.status == .running else { return nil }
                var job = current
                let began = ContinuousClock.now
                let after = job.cursorID.flatMap { id in job.cursorKind.map { (id: id, kind: $0) } }
                let batch = try await store.recordHeaders(tenant: job.tenant, after: after, limit: Self.batchSize)
                // Re-wraps what it can of some records: their new headers and the events that log
                // each newly moved data key (appended before any header is written).
                func rewrap(_ records: [RecordHeader], countUnmatched: Bool) async throws -> ([HeaderChange], [AuditEvent]) {
                    var changes: [HeaderChange] = []
                    var events: [AuditEvent] = []
                    for r in records {
                        let header = try HeaderRewrap.parse(r.header)
                        let edks = header.encryptedDataKeys
                        if edks.contains(where: { produced.contains($0.ciphertext) }) { continue }
                        if job.fromKey != job.toKey, edks.contains(where: to.owns) { continue }
                        guard let edk = edks.first(where: from.owns) else {
                            if countUnmatched { job.unmatched += 1 }
                            continue
                        }
                        if unwrapped[edk.ciphertext] == nil {
                            let opened = try await from.onDecrypt(DecryptionMaterials(suite: header.suite, encryptionContext: scope),
                                                                  encryptedDataKeys: [edk])
                            guard let dataKey = opened.plaintextDataKey else {
                                throw KeywardCryptoError(.noDecryptableKey, "a data key of record \(r.id) did not unwrap")
                            }
                            let wrapped = try await to.onEncrypt(EncryptionMaterials(suite: header.suite, encryptionContext: scope,
                                                                                     plaintextDataKey: dataKey))
                            guard let newEDK = wrapped.encryptedDataKeys.last else {
                                throw KeywardCryptoError(.internalError, "the new key returned no wrapped data key")
                            }
                            unwrapped[edk.ciphertext] = (dataKey, newEDK)
                            produced.insert(newEDK.ciphertext)
                            events.append(AuditLog.event(.rewrap, key: job.fromKey, record: r.id, detail: "to=\(job.toKey)", scope: auditScope))
                            job.dataKeys += 1
                        }
                        let (dataKey, newEDK) = unwrapped[edk.ciphertext]!
                        changes.append(HeaderChange(id: r.id, kind: r.kind, old: r.header,
                                                    new: try HeaderRewrap.rewrap(header, dataKey: dataKey, encryptedDataKeys: [newEDK])))
                    }
                    try await audit.append(events)
                    return (changes, events)
                }
                guard let lastRecord = batch.last else {
                    // Nothing left: this worker ends the job for everyone. First a sweep from the
                    // start: a request that took the tenant's key before the switch may have
                    // stored its records, under the old key, behind the cursor since.
                    var changes: [HeaderChange] = []
                    if job.fromKey != job.toKey {
                        var sweep: (id: String, kind: String)?
                        while true {
                            let page = try await store.recordHeaders(tenant: job.tenant, after: sweep, limit: Self.batchSize)
                            guard let end = page.last else { break }
                            sweep = (end.id, end.kind)
                            changes += try await rewrap(page, countUnmatched: false).0
                        }
                        job.rewrapped += Int64(changes.count)
                    }
                    job.status = job.unmatched == 0 ? .done : .failed
                    if job.unmatched > 0 { job.error = "\(job.unmatched) records are under neither \(job.fromKey) nor \(job.toKey) and were left as they are" }
                    job.updatedAt = Gateway.nowMs()
                    finished = true
                    return (job, changes)
                }
                let (changes, _) = try await rewrap(batch, countUnmatched: true)
                job.cursorID = lastRecord.id
                job.cursorKind = lastRecord.kind
                job.processed += Int64(batch.count)
                job.rewrapped += Int64(changes.count)
                job.updatedAt = Gateway.nowMs()
                job.activeMs += Int64((ContinuousClock.now - began).milliseconds.rounded(.up))
                return (job, changes)
            }
            switch claim {
            case .missing:
                throw GatewayError.notFound("job \(start.id) no longer exists")
            case .busy:
                // Another worker has this batch; ask again shortly.
                try? await Task.sleep(for: .milliseconds(10))
                continue
            case .unchanged(let job):
                return job
            case .saved(let job, let replaced):
                last = job
                metrics.headersRewrapped(replaced)
            }
            if finished { break }
        }
        guard finished else { return last }
        // Stragglers only matter when the key changes: after a rotation the old version still opens them.
        if last.fromKey != last.toKey {
            blobs += try await files.rewrapBlobs(tenant: tenant.name, from: from, to: to, fromKey: start.fromKey, toKey: start.toKey,
                                                 scope: auditScope)
        }

        if var current = try await store.tenant(named: last.tenant), current.previousKey != nil {
            current.previousKey = nil
            try await store.updateTenantKeys(current)
            await replication.changed(.tenant(current.name))
        }
        try await audit.append(AuditLog.event(last.status == .done ? .rekeyDone : .rekeyFailed, key: last.toKey,
                                                      detail: "job=\(last.id) records=\(last.processed) rewrapped=\(last.rewrapped) data_keys=\(last.dataKeys) blobs=\(blobs)",
                                                      scope: auditScope))
        logger.notice("re-key finished", metadata: [
            "job": "\(last.id)", "tenant": "\(last.tenant)", "status": "\(last.status.rawValue)",
            "records": "\(last.processed)", "rewrapped": "\(last.rewrapped)", "blobs": "\(blobs)",
        ])
        return last
    }

}

/// Runs re-key jobs one at a time: those left running by a previous process first, then each
/// new one as it is submitted.
struct JobService: Service, CustomStringConvertible {
    var description: String { "JobService" }
    let runner: RekeyJob
    /// Ids of submitted jobs (from this replica or, through the change feed, another).
    let queue: AsyncStream<String>
    /// Ends `queue` at shutdown.
    let stop: AsyncStream<String>.Continuation
    var store: any RecordStore { runner.store }
    var logger: Logger { runner.logger }

    func run() async throws {
        for job in (try? await store.jobs(status: .running)) ?? [] { await runOne(job) }
        await withGracefulShutdownHandler {
            for await id in queue {
                guard let job = try? await store.job(id: id), job.status == .running else { continue }
                await runOne(job)
            }
        } onGracefulShutdown: {
            stop.finish()
        }
    }

    private func runOne(_ job: Job) async {
        logger.notice("re-key running", metadata: ["job": "\(job.id)", "tenant": "\(job.tenant)", "to": "\(job.toKey)"])
        do {
            // Off the event loops: a batch is milliseconds of CPU without a suspension point,
            // which on an event loop would hold up every connection that loop serves.
            _ = try await withTaskExecutorPreference(JobExecutor.shared) { try await runner.run(job) }
        } catch {
            var failed = (try? await store.job(id: job.id)) ?? job
            failed.status = .failed
            failed.error = "\(GatewayError.from(error).message)"
            failed.updatedAt = Gateway.nowMs()
            try? await store.updateJob(failed)
            try? await runner.audit.append(AuditLog.event(.rekeyFailed, key: job.toKey, result: .error(GatewayError.from(error).code),
                                                           detail: "job=\(job.id)", scope: AuditScope(actor: "system", tenant: job.tenant)))
            logger.error("re-key failed", metadata: ["job": "\(job.id)", "error": "\(failed.error ?? "")"])
        }
    }
}

/// One thread of its own for background jobs (and for a blob rewrapped for a re-key that passed an
/// upload by, which then waits behind the job's copy), so their CPU work and blocking reads compete
/// with request handling through the OS scheduler instead of blocking an event loop.
final class JobExecutor: TaskExecutor {
    static let shared = JobExecutor()
    private let queue = DispatchQueue(label: "keyward.jobs")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
