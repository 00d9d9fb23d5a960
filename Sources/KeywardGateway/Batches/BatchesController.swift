import Foundation
import Hummingbird
import KeywardAudit
import KeywardStorage

/// OpenAI's Batches API over ``Batches``. Making a batch is inference (the key policy's
/// `inference` grant, checked again for each line when it is sent); reading and cancelling is
/// retrieval. Another tenant's batch is "not found".
struct BatchesController {
    let batches: Batches
    let policies: KeyPolicies
    let bodyLimit: Int
    var store: any RecordStore { batches.store }

    /// Routes of a group that authenticates app tokens.
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.post("/v1/batches") { request, context -> Response in
            let (principal, tenant, scope) = try await caller(context, .inference)
            let body = try JSONBody.object(try await request.collectBody(limit: bodyLimit).readableBytesView)
            let batch = try await batches.create(body, principal: principal, tenant: tenant, scope: scope)
            return JSONBody.response(Batches.object(batch, metadata: (try Batches.metadata(body["metadata"])) ?? NSNull()))
        }

        router.get("/v1/batches") { request, context -> Response in
            let (_, tenant, scope) = try await caller(context, .retrieval)
            let page = try ListPage(request, defaultOrder: .descending)
            let rows: [Batch]
            do { rows = try await store.batches(tenant: tenant.name, after: page.after, limit: page.limit + 1,
                                                   liveAt: Gateway.nowMs()) } catch let e as StorageError where e.code == .notFound {
                throw GatewayError.invalidRequest("no batch \(page.after ?? "") to list after", code: "invalid_cursor")
            }
            let shown = Array(rows.prefix(page.limit))
            return JSONBody.response(ListPage.list(try await batches.objects(shown, of: tenant, scope: scope), hasMore: rows.count > page.limit))
        }

        router.get("/v1/batches/:id") { _, context -> Response in
            let (_, tenant, scope) = try await caller(context, .retrieval)
            let batch = try await batches.batch(tenant, try context.parameters.require("id"))
            return JSONBody.response(try await batches.objects([batch], of: tenant, scope: scope)[0])
        }

        router.post("/v1/batches/:id/cancel") { _, context -> Response in
            let (_, tenant, scope) = try await caller(context, .retrieval)
            let id = try context.parameters.require("id")
            _ = try await batches.batch(tenant, id)
            try await batches.audit.append(AuditLog.event(.batchCancel, key: tenant.key, record: id, scope: scope))
            if try await !store.cancelBatch(tenant: tenant.name, id: id, at: Gateway.nowMs()) {
                let batch = try await batches.batch(tenant, id)
                // Cancelling one still cancelling is no error; cancelling what has ended (or is being finished) is.
                guard batch.cancellingAt != nil, !batch.status.isTerminal else {
                    throw GatewayError(.conflict, type: "invalid_request_error", code: "batch_not_cancellable",
                                       "batch \(id) is \(batch.status.rawValue) and can no longer be cancelled")
                }
            }
            return JSONBody.response(try await batches.objects([try await batches.batch(tenant, id)], of: tenant, scope: scope)[0])
        }
    }

    /// An app token whose tenant's key policy grants it `purpose`, and the audit scope of its calls.
    private func caller(_ context: GatewayContext, _ purpose: Purpose) async throws -> (Principal, Tenant, AuditScope) {
        let (principal, tenant) = try context.requireTenant()
        try await policies.authorize(principal, tenant: tenant, purpose: purpose)
        try batches.audit.requireAvailable()
        return (principal, tenant, principal.scope(purpose))
    }
}
