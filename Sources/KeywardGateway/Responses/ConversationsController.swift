import Foundation
import Hummingbird
import KeywardAudit
import KeywardStorage

/// OpenAI's Conversations API over the tenant's encrypted records (``Conversations``). Another
/// tenant's conversation is "not found". Creating and adding items is inference (the key policy's
/// `inference` grant); reading, updating and deleting is retrieval.
struct ConversationsController {
    let conversations: Conversations
    let policies: KeyPolicies
    let bodyLimit: Int
    var store: any RecordStore { conversations.store }
    var audit: AuditLog { conversations.audit }
    var vault: Vault { conversations.vault }

    /// Routes of a group that authenticates app tokens.
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.post("/v1/conversations") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .inference)
            let body = try JSONBody.object(try await request.bodyBytes(limit: bodyLimit))
            let items = try Self.items(body["items"] ?? [Any](), max: 20)
            let metadata = try Self.metadata(body["metadata"])
            let id = Tokens.identifier("conv_")
            let now = Gateway.nowMs()
            let sealer = try await sealer(tenant, scope)
            let (record, object) = try conversations.objectRecord(id: id, createdAt: now, metadata: metadata, sealer: sealer)
            let added = try conversations.itemRecords(items, of: id, after: 0, sealer: sealer, at: now)
            try await audit.insert([record] + added.records, events: [AuditLog.event(.encryptRecord, key: tenant.key, record: id, scope: scope)])
            return JSONBody.response(object)
        }

        router.get("/v1/conversations/:id") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            return JSONBody.bytes(try await open(try await conversations.conversation(tenant, try context.parameters.require("id")), tenant, scope))
        }

        router.post("/v1/conversations/:id") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let existing = try await conversations.conversation(tenant, try context.parameters.require("id"))
            let metadata = try Self.metadata(try JSONBody.object(try await request.bodyBytes(limit: bodyLimit))["metadata"])
            guard let old = try JSONSerialization.jsonObject(with: Data(try await open(existing, tenant, scope))) as? [String: Any] else {
                throw GatewayError.internalError
            }
            let createdAt = Int64((old["created_at"] as? Int) ?? 0) * 1000
            let (record, object) = try conversations.objectRecord(id: existing.id, createdAt: createdAt, metadata: metadata,
                                                                  sealer: try await sealer(tenant, scope))
            try await audit.append(AuditLog.event(.encryptRecord, key: tenant.key, record: "\(existing.id)/\(Conversations.kind)", scope: scope))
            try await store.upsert(record)
            return JSONBody.response(object)
        }

        router.delete("/v1/conversations/:id") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let id = try context.parameters.require("id")
            _ = try await conversations.conversation(tenant, id, includingExpired: true)
            _ = try await store.deleteRecords(tenant: tenant.name, id: id)
            try await audit.append(AuditLog.event(.deleteRecord, key: tenant.key, record: id, scope: scope))
            return JSONBody.response(["id": id, "object": "conversation.deleted", "deleted": true])
        }

        router.get("/v1/conversations/:id/items") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let id = try context.parameters.require("id")
            _ = try await conversations.conversation(tenant, id)
            let now = Gateway.nowMs()
            let live = try await conversations.entries(tenant, id).filter { !$0.isExpired(at: now) }
            let (page, hasMore) = try ListPage(request, defaultOrder: .descending).slice(live) { $0.itemID }
            return JSONBody.response(ListPage.list(try await conversations.items(tenant, id, page, scope: scope), hasMore: hasMore))
        }

        router.post("/v1/conversations/:id/items") { request, context -> Response in
            let (tenant, scope) = try await caller(context, .inference)
            let id = try context.parameters.require("id")
            _ = try await conversations.conversation(tenant, id)
            let items = try Self.items(try JSONBody.object(try await request.bodyBytes(limit: bodyLimit))["items"], max: 20)
            let added = try conversations.itemRecords(items, of: id, after: try await conversations.entries(tenant, id).last?.seq ?? 0,
                                                      sealer: try await sealer(tenant, scope), at: Gateway.nowMs())
            try await audit.insert(added.records, events: [AuditLog.event(.encryptRecord, key: tenant.key, record: id, scope: scope)])
            return JSONBody.response(ListPage.list(added.items, hasMore: false))
        }

        router.get("/v1/conversations/:id/items/:item") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let (id, entry) = try await item(context, tenant)
            guard let item = try await conversations.items(tenant, id, [entry], scope: scope).first else {
                throw GatewayError.notFound("no item \(entry.itemID)")
            }
            return JSONBody.response(item)
        }

        router.delete("/v1/conversations/:id/items/:item") { _, context -> Response in
            let (tenant, scope) = try await caller(context, .retrieval)
            let (id, entry) = try await item(context, tenant)
            guard try await store.deleteRecord(tenant: tenant.name, id: id, kind: entry.kind) else {
                throw GatewayError.notFound("no item \(entry.itemID)")
            }
            try await audit.append(AuditLog.event(.deleteRecord, key: tenant.key, record: "\(id)/\(entry.kind)", scope: scope))
            // OpenAI answers with the conversation.
            return JSONBody.bytes(try await open(try await conversations.conversation(tenant, id), tenant, scope))
        }
    }

    /// An app token whose tenant's key policy grants it `purpose`, and the audit scope of its calls.
    private func caller(_ context: GatewayContext, _ purpose: Purpose) async throws -> (Tenant, AuditScope) {
        let (principal, tenant) = try context.requireTenant()
        try await policies.authorize(principal, tenant: tenant, purpose: purpose)
        try audit.requireAvailable()
        return (tenant, principal.scope(purpose))
    }

    private func sealer(_ tenant: Tenant, _ scope: AuditScope) async throws -> RecordSealer {
        try await AuditScope.$current.withValue(scope) { try await vault.sealer(for: tenant, plaintextLength: 0) }
    }

    private func item(_ context: GatewayContext, _ tenant: Tenant) async throws -> (String, Conversations.Entry) {
        let id = try context.parameters.require("id")
        let itemID = try context.parameters.require("item")
        _ = try await conversations.conversation(tenant, id)
        guard let entry = try await conversations.entries(tenant, id).first(where: { $0.itemID == itemID }) else {
            throw GatewayError.notFound("no item \(itemID) in conversation \(id)")
        }
        return (id, entry)
    }

    private func open(_ record: Record, _ tenant: Tenant, _ scope: AuditScope) async throws -> [UInt8] {
        try await vault.read([record], of: tenant, scope: scope)[0]
    }

    /// Items to add: objects, at most `max` at a time (OpenAI's limit), ids (if given) short strings.
    static func items(_ value: Any?, max: Int) throws -> [Any] {
        guard let items = value as? [Any] else { throw GatewayError.invalidRequest("items must be a list", code: "invalid_field") }
        guard items.count <= max else { throw GatewayError.invalidRequest("at most \(max) items at a time", code: "invalid_field") }
        for case let item in items {
            guard let object = item as? [String: Any] else { throw GatewayError.invalidRequest("every item must be an object", code: "invalid_field") }
            if let id = object["id"] {
                guard let s = id as? String, !s.isEmpty, s.utf8.count <= 128 else {
                    throw GatewayError.invalidRequest("an item's id must be a string of 1 to 128 bytes", code: "invalid_field")
                }
            }
        }
        return items
    }

    /// Metadata: up to 16 string values, as OpenAI allows.
    static func metadata(_ value: Any?) throws -> Any {
        guard let value else { return [String: String]() }
        guard let m = value as? [String: Any], m.count <= 16, m.values.allSatisfy({ $0 is String }) else {
            throw GatewayError.invalidRequest("metadata must be an object of at most 16 string values", code: "invalid_field")
        }
        return m
    }
}
