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
    let bodyLimit: Int
    var store: any RecordStore { lifecycle.store }

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

        for action in ["disable", "enable", "rotate", "schedule-deletion", "cancel-deletion"] {
            admin.post("keys/:ref/\(action)") { request, context -> Response in
                let principal = try context.requirePrincipal()
                let ref = try context.keyReference()
                let change: KeyChange = switch action {
                case "disable": .disable
                case "enable": .enable
                case "rotate": .rotate
                case "schedule-deletion":
                    .scheduleDeletion(days: try JSONBody.decode(ScheduleDeletion.self, from: try await request.bodyBytes(limit: bodyLimit)).days)
                default: .cancelDeletion
                }
                return JSONBody.encoded(KeyBody(try await lifecycle.change(change, key: ref, actor: principal.tokenID)))
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
