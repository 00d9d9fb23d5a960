import Foundation
import KeywardAudit
import KeywardKeyStores
import KeywardStorage
import Logging

/// The key life cycle's logic that routes and tools share: describing a key, and starting the
/// re-key of a tenant (which the job service then runs).
struct KeyLifecycle {
    let store: any RecordStore
    let keyStores: KeyStores
    let audit: AuditLog
    let policies: KeyPolicies
    let replication: Replication
    let logger: Logger

    /// Moves a tenant to another master key: a job (run by the job service) switches new records
    /// to it, then re-wraps the stored ones. Records not yet re-wrapped stay readable meanwhile.
    func startRekey(tenant name: String, to key: String, actor: String) async throws -> Job {
        guard let tenant = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
        let reference: KeyReference
        do { reference = try KeyReference.parse(key) } catch {
            throw GatewayError.invalidRequest("\(error)", code: "invalid_key_reference")
        }
        let description = try await describe(reference, key)
        guard description.state == .enabled else {
            throw GatewayError.invalidRequest("key \(key) is \(description.state.rawValue), not enabled", code: "key_not_enabled")
        }
        if let running = try await store.jobs(status: .running).first(where: { $0.tenant == name }) {
            throw GatewayError(.conflict, type: "invalid_request_error", code: "job_running",
                               "re-key job \(running.id) of \(name) is still running")
        }
        // A move that failed half-way is finished first: some records are still under its old key.
        if let previous = tenant.previousKey, key != tenant.key {
            throw GatewayError(.conflict, type: "invalid_request_error", code: "unfinished_rekey",
                               "\(name)'s move from \(previous) to \(tenant.key) is unfinished: re-key to \(tenant.key) to finish it first")
        }
        let scope = AuditScope(actor: actor, tenant: name)
        let job = Job(id: Tokens.identifier("job_"), tenant: name, fromKey: tenant.previousKey ?? tenant.key, toKey: key,
                      total: try await store.countRecords(tenant: name), createdAt: Gateway.nowMs())
        try await audit.append(AuditLog.event(.rekeyStart, key: job.fromKey, detail: "job=\(job.id) to=\(job.toKey)", scope: scope))
        // The new key inherits the old key's grants if it has no policy of its own.
        if try await store.policy(key: job.toKey) == nil {
            try await policies.save(try await policies.policy(forKey: job.fromKey), forKey: job.toKey, scope: scope)
            await replication.changed(.policy(job.toKey))
        }
        // The job itself switches the tenant to the new key as it starts (and again on resuming).
        try await store.createJob(job)
        // Every replica's job service joins in.
        await replication.changed(.job(job.id))
        logger.notice("re-key submitted", metadata: ["job": "\(job.id)", "tenant": "\(name)", "to": "\(job.toKey)"])
        return job
    }

    func describe(_ reference: KeyReference, _ ref: String) async throws -> KeyDescription {
        do {
            var d = try await keyStores.store(for: reference).describe(keyID: reference.keyID)
            d.reference = ref
            return d
        } catch let e as KeyStoreError where e.code == .keyNotFound {
            throw GatewayError.notFound("no key \(ref)")
        }
    }
}
