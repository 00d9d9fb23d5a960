import Foundation
import Hummingbird
import KeywardAudit
import KeywardKeyStores
import KeywardStorage
import Logging

/// `/admin/v1/keys/{ref}/…`, `/admin/v1/tenants/{name}/rekey` and `/admin/v1/jobs/{id}`, for
/// key-admin tokens: the key life cycle. Each operation is in the audit log with its outcome.
struct KeyLifecycleController {
    let lifecycle: KeyLifecycle
    let metrics: GatewayMetrics
    let alerts: AlertCenter
    let bodyLimit: Int
    var store: any RecordStore { lifecycle.store }
    var keyStores: KeyStores { lifecycle.keyStores }
    var audit: AuditLog { lifecycle.audit }
    var logger: Logger { lifecycle.logger }

    private struct ScheduleDeletion: Decodable { var days: Int }
    private struct Rekey: Decodable { var key: String }

    /// Routes of a group under `admin/v1` that authenticates key admins.
    func addRoutes(to admin: RouterGroup<GatewayContext>) {
        admin.get("keys/:ref") { request, context -> Response in
            let ref = try context.keyReference()
            let reference = try KeyReference.parse(ref)
            return JSONBody.encoded(KeyBody(try await lifecycle.describe(reference, ref),
                                            tenants: try await store.tenants(usingKey: ref).map(\.name)))
        }

        let operations: KeyValuePairs<String, AuditOperation> = [
            "disable": .disable, "enable": .enable, "rotate": .rotate, "schedule-deletion": .scheduleDeletion,
            "cancel-deletion": .cancelDeletion,
        ]
        for (action, operation) in operations {
            admin.post("keys/:ref/\(action)") { request, context -> Response in
                let principal = try context.requirePrincipal()
                let ref = try context.keyReference()
                let reference = try KeyReference.parse(ref)
                let keyStore = try keyStores.store(for: reference)
                var days: Int?
                if action == "schedule-deletion" {
                    days = try JSONBody.decode(ScheduleDeletion.self, from: try await request.bodyBytes(limit: bodyLimit)).days
                    // The stores' own rule (AWS KMS's), checked before anything is attempted or logged.
                    do { try type(of: keyStore).checkWaitingPeriod(days!) } catch let e as KeyStoreError {
                        throw GatewayError.invalidRequest(e.reason, code: "invalid_field")
                    }
                }
                // No event, no key operation.
                try audit.requireAvailable()
                let scope = AuditScope(actor: principal.tokenID)
                do {
                    switch action {
                    case "disable": try await keyStore.disableKey(keyID: reference.keyID)
                    case "enable": try await keyStore.enableKey(keyID: reference.keyID)
                    case "rotate": try await keyStore.rotateKey(keyID: reference.keyID)
                    case "schedule-deletion": _ = try await keyStore.scheduleKeyDeletion(keyID: reference.keyID, days: days!)
                    default: try await keyStore.cancelKeyDeletion(keyID: reference.keyID)
                    }
                } catch {
                    let e = GatewayError.from(error)
                    try await audit.append(AuditLog.event(operation, key: ref, result: .error(e.code), detail: days.map { "days=\($0)" }, scope: scope))
                    if let k = error as? KeyStoreError, k.code == .keyNotFound { throw GatewayError.notFound("no key \(ref)") }
                    if let k = error as? KeyStoreError, k.code == .invalidArgument { throw GatewayError.invalidRequest(k.reason, code: "invalid_key_operation") }
                    throw error
                }
                try await audit.append(AuditLog.event(operation, key: ref, detail: days.map { "days=\($0)" }, scope: scope))
                await lifecycle.replication.changed(.key(ref))
                metrics.keyEvent(operation.rawValue)
                alerts.keyChanged(ref, operation: operation.rawValue, actor: principal.tokenID,
                                       tenants: (try? await store.tenants(usingKey: ref).map(\.name)) ?? [])
                logger.notice("key \(operation.rawValue)", metadata: ["key": "\(ref)"])
                return JSONBody.encoded(KeyBody(try await lifecycle.describe(reference, ref)))
            }
        }

        admin.post("tenants/:name/rekey") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let name = try context.parameters.require("name")
            let input = try JSONBody.decode(Rekey.self, from: try await request.bodyBytes(limit: bodyLimit))
            let job = try await lifecycle.startRekey(tenant: name, to: input.key, actor: principal.tokenID)
            return JSONBody.encoded(JobStartedBody(job: job.id), status: .accepted)
        }

        admin.get("jobs/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            guard let job = try await store.job(id: id) else { throw GatewayError.notFound("no job \(id)") }
            return JSONBody.encoded(JobBody(job))
        }
    }
}
