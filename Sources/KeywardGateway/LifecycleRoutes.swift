import Foundation
import Hummingbird
import KeywardAudit
import KeywardKeyStores
import KeywardStorage

/// `/admin/v1/keys/{ref}/…`, `/admin/v1/tenants/{name}/rekey` and `/admin/v1/jobs/{id}`, for
/// key-admin tokens: the key life cycle. Each operation is in the audit log with its outcome.
extension Gateway {
    private struct ScheduleDeletion: Decodable { var days: Int }
    private struct Rekey: Decodable { var key: String }

    static func keyJSON(_ d: KeyDescription) -> [String: Any] {
        var object: [String: Any] = ["key": d.reference, "state": d.state.rawValue]
        if let v = d.versions { object["versions"] = v }
        if let c = d.created { object["created_at"] = Int(c.timeIntervalSince1970) }
        if let date = d.deletionDate { object["deletion_date"] = Int(date.timeIntervalSince1970) }
        if let r = d.rotationEnabled { object["rotation_enabled"] = r }
        return object
    }

    static func jobJSON(_ j: Job) -> [String: Any] {
        var object: [String: Any] = [
            "id": j.id, "object": "job", "type": "rekey", "tenant": j.tenant, "from_key": j.fromKey, "to_key": j.toKey,
            "status": j.status.rawValue, "records_total": j.total, "records_processed": j.processed,
            "records_rewrapped": j.rewrapped, "data_keys_unwrapped": j.dataKeys,
            "created_at": j.createdAt / 1000, "updated_at": j.updatedAt / 1000,
            "rate_per_second": j.activeMs > 0 ? Double(j.processed) * 1000 / Double(j.activeMs) : 0,
        ]
        if let e = j.error { object["error"] = e }
        return object
    }

    func addLifecycleRoutes(to router: Router<GatewayContext>) {
        let admin = router.group("admin/v1")

        admin.get("keys/:ref") { request, context -> Response in
            _ = try await self.authenticate(request, role: .keyAdmin)
            let ref = try Self.keyReference(context)
            let reference = try KeyReference.parse(ref)
            var object = Self.keyJSON(try await self.describe(reference, ref))
            object["tenants"] = try await self.store.tenants(usingKey: ref).map(\.name)
            return Self.json(object)
        }

        let operations: KeyValuePairs<String, AuditOperation> = [
            "disable": .disable, "enable": .enable, "rotate": .rotate, "schedule-deletion": .scheduleDeletion,
            "cancel-deletion": .cancelDeletion,
        ]
        for (action, operation) in operations {
            admin.post("keys/:ref/\(action)") { request, context -> Response in
                let principal = try await self.authenticate(request, role: .keyAdmin)
                let ref = try Self.keyReference(context)
                let reference = try KeyReference.parse(ref)
                let store = try self.keyStores.store(for: reference)
                var days: Int?
                if action == "schedule-deletion" {
                    days = try Self.decode(ScheduleDeletion.self, from: try await self.body(of: request)).days
                    // The stores' own rule (AWS KMS's), checked before anything is attempted or logged.
                    do { try type(of: store).checkWaitingPeriod(days!) } catch let e as KeyStoreError {
                        throw GatewayError.invalidRequest(e.reason, code: "invalid_field")
                    }
                }
                // No event, no key operation.
                try self.audit.requireAvailable()
                let scope = AuditScope(actor: principal.tokenID)
                do {
                    switch action {
                    case "disable": try await store.disableKey(keyID: reference.keyID)
                    case "enable": try await store.enableKey(keyID: reference.keyID)
                    case "rotate": try await store.rotateKey(keyID: reference.keyID)
                    case "schedule-deletion": _ = try await store.scheduleKeyDeletion(keyID: reference.keyID, days: days!)
                    default: try await store.cancelKeyDeletion(keyID: reference.keyID)
                    }
                } catch {
                    let e = GatewayError.from(error)
                    try await self.audit.append(AuditLog.event(operation, key: ref, result: .error(e.code), detail: days.map { "days=\($0)" }, scope: scope))
                    if let k = error as? KeyStoreError, k.code == .keyNotFound { throw GatewayError.notFound("no key \(ref)") }
                    if let k = error as? KeyStoreError, k.code == .invalidArgument { throw GatewayError.invalidRequest(k.reason, code: "invalid_key_operation") }
                    throw error
                }
                try await self.audit.append(AuditLog.event(operation, key: ref, detail: days.map { "days=\($0)" }, scope: scope))
                await self.changed(.key(ref))
                self.metrics.keyEvent(operation.rawValue)
                self.alerts.keyChanged(ref, operation: operation.rawValue, actor: principal.tokenID,
                                       tenants: (try? await self.store.tenants(usingKey: ref).map(\.name)) ?? [])
                self.logger.notice("key \(operation.rawValue)", metadata: ["key": "\(ref)"])
                return Self.json(Self.keyJSON(try await self.describe(reference, ref)))
            }
        }

        admin.post("tenants/:name/rekey") { request, context -> Response in
            let principal = try await self.authenticate(request, role: .keyAdmin)
            let name = try context.parameters.require("name")
            let input = try Self.decode(Rekey.self, from: try await self.body(of: request))
            let job = try await self.startRekey(tenant: name, to: input.key, actor: principal.tokenID)
            return Self.json(["job": job.id, "status": "running"], status: .accepted)
        }

        admin.get("jobs/:id") { request, context -> Response in
            _ = try await self.authenticate(request, role: .keyAdmin)
            let id = try context.parameters.require("id")
            guard let job = try await self.store.job(id: id) else { throw GatewayError.notFound("no job \(id)") }
            return Self.json(Self.jobJSON(job))
        }
    }

    /// Moves a tenant to another master key: a job (run by the job service) switches new records
    /// to it, then re-wraps the stored ones. Records not yet re-wrapped stay readable meanwhile.
    public func startRekey(tenant name: String, to key: String, actor: String) async throws -> Job {
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
                      total: try await store.countRecords(tenant: name), createdAt: Self.nowMs())
        try await audit.append(AuditLog.event(.rekeyStart, key: job.fromKey, detail: "job=\(job.id) to=\(job.toKey)", scope: scope))
        // The new key inherits the old key's grants if it has no policy of its own.
        if try await store.policy(key: job.toKey) == nil {
            try await savePolicy(try await policy(forKey: job.fromKey), forKey: job.toKey, scope: scope)
        }
        // The job itself switches the tenant to the new key as it starts (and again on resuming).
        try await store.createJob(job)
        // Every replica's job service joins in.
        await changed(.job(job.id))
        logger.notice("re-key submitted", metadata: ["job": "\(job.id)", "tenant": "\(name)", "to": "\(job.toKey)"])
        return job
    }

    /// Runs a job here and now (benchmarks, tools); the server runs them in its job service.
    public func runJob(id: String) async throws -> Job {
        guard let job = try await store.job(id: id) else { throw GatewayError.notFound("no job \(id)") }
        return try await RekeyJob(gateway: self).run(job)
    }

    private func describe(_ reference: KeyReference, _ ref: String) async throws -> KeyDescription {
        do {
            var d = try await keyStores.store(for: reference).describe(keyID: reference.keyID)
            d.reference = ref
            return d
        } catch let e as KeyStoreError where e.code == .keyNotFound {
            throw GatewayError.notFound("no key \(ref)")
        }
    }
}
