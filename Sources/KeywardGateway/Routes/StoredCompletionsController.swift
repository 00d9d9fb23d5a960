import KeywardJSON
import Foundation
import Hummingbird
import KeywardAudit
import KeywardStorage
import Logging

/// OpenAI's stored-completions API over the tenant's encrypted records. Another tenant's record
/// is "not found", never "forbidden": its existence is not revealed.
struct StoredCompletionsController {
    let store: any RecordStore
    let vault: Vault
    let audit: AuditLog
    let policies: KeyPolicies
    let logger: Logger

    /// Routes of a group that authenticates app tokens.
    func addRoutes(to router: RouterGroup<GatewayContext>) {
        router.get("/v1/chat/completions") { request, context -> Response in
            let (principal, tenant) = try await reader(context, .retrieval)
            let page = try ListPage(request, defaultOrder: .ascending)
            let records = try await page.records(of: tenant.name, kind: "chat.response", label: request.uri.queryParameters.get("model"),
                                                 liveAt: Gateway.nowMs(), noun: "stored completion", in: store)
            let items = try await open(Array(records.prefix(page.limit)), of: tenant, by: principal, .retrieval)
            return JSONBody.bytes(ListPage.encoded(items, ids: records.prefix(page.limit).map(\.id), hasMore: records.count > page.limit))
        }

        router.get("/v1/chat/completions/:id") { request, context -> Response in
            let (principal, tenant) = try await reader(context, .retrieval)
            let record = try await storedRecord(tenant, try context.parameters.require("id"), kind: "chat.response")
            return JSONBody.bytes(try await open([record], of: tenant, by: principal, .retrieval)[0])
        }

        router.get("/v1/chat/completions/:id/messages") { request, context -> Response in
            let (principal, tenant) = try await reader(context, .retrieval)
            let id = try context.parameters.require("id")
            let record = try await storedRecord(tenant, id, kind: "chat.request")
            let plaintext = try await open([record], of: tenant, by: principal, .retrieval)[0]
            let messages = ((try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [String: Any])?["messages"] as? [[String: Any]]) ?? []
            let all = messages.enumerated().map { i, m -> [String: Any] in
                var m = m
                m["id"] = "\(id)-\(i)"
                if m["content"] == nil { m["content"] = NSNull() }
                return m
            }
            let (page, hasMore) = try ListPage(request, defaultOrder: .ascending).slice(all) { $0["id"] as? String }
            return JSONBody.response(ListPage.list(page, hasMore: hasMore))
        }

        router.get("/v1/keyward/export") { _, context in try await export(context) }

        router.delete("/v1/chat/completions/:id") { request, context -> Response in
            let (principal, tenant) = try await reader(context, .retrieval)
            let id = try context.parameters.require("id")
            try audit.requireAvailable()
            guard id.hasPrefix("chatcmpl-"), try await store.deleteRecords(tenant: tenant.name, id: id) > 0 else {
                throw GatewayError.notFound("no stored completion \(id)")
            }
            try await audit.append(AuditLog.event(.deleteRecord, key: tenant.key, record: id, scope: principal.scope(.retrieval)))
            return JSONBody.encoded(CompletionDeletedBody(id: id))
        }
    }

    /// Every stored exchange record of the tenant as JSON lines (`id`, `kind`, `created_at`,
    /// `content`), for tokens granted `export`. Provider keys are never exported. Each page of
    /// records is logged before it is decrypted; a failure ends the stream early, so a reader
    /// must check it got the final `{"object":"export.end"}` line.
    func export(_ context: GatewayContext) async throws -> Response {
        let (principal, tenant) = try await reader(context, .export)
        // The body is written after the handler returns: carry the request id into it.
        let requestID = AuditScope.requestID
        return Response(status: .ok, headers: [.contentType: "application/jsonl"], body: ResponseBody { writer in
            try await AuditScope.$requestID.withValue(requestID) {
                var after: (id: String, kind: String)?
                var count = 0
                while true {
                    let page = try await store.records(tenant: tenant.name, after: after, limit: 500)
                    guard let last = page.last else { break }
                    after = (last.id, last.kind)
                    let now = Gateway.nowMs()
                    let wanted = page.filter { $0.kind != ProviderKeys.kind && !$0.isExpired(at: now) }
                    let plaintexts: [[UInt8]]
                    do { plaintexts = try await open(wanted, of: tenant, by: principal, .export) } catch {
                        // The status line is long gone: the log is the only place that says why.
                        logger.error("export ended early", metadata: ["tenant": "\(tenant.name)", "error": "\(GatewayError.from(error).code)"])
                        throw error
                    }
                    var out: [UInt8] = []
                    for (r, p) in zip(wanted, plaintexts) {
                        out += Array("{\"id\":".utf8) + JSONScanner.quoted(r.id) + Array(",\"kind\":".utf8) + JSONScanner.quoted(r.kind)
                        out += Array(",\"created_at\":\(r.createdAt / 1000),\"content\":".utf8)
                        out += p.first == UInt8(ascii: "{") ? p : JSONScanner.quoted(String(decoding: p, as: UTF8.self))
                        out += Array("}\n".utf8)
                    }
                    count += wanted.count
                    try await writer.write(ByteBuffer(bytes: out))
                }
                try await writer.write(ByteBuffer(string: "{\"object\":\"export.end\",\"records\":\(count)}\n"))
                try await writer.finish(nil)
            }
        })
    }

    /// An app token whose tenant's key policy grants it `purpose`.
    func reader(_ context: GatewayContext, _ purpose: Purpose) async throws -> (Principal, Tenant) {
        let (principal, tenant) = try context.requireTenant()
        try await policies.authorize(principal, tenant: tenant, purpose: purpose)
        return (principal, tenant)
    }

    /// Decrypts records for a reader (``Vault/read(_:of:scope:)``: each after its event).
    func open(_ records: [Record], of tenant: Tenant, by principal: Principal, _ purpose: Purpose) async throws -> [[UInt8]] {
        try await vault.read(records, of: tenant, scope: principal.scope(purpose))
    }

    private func storedRecord(_ tenant: Tenant, _ id: String, kind: String) async throws -> Record {
        guard let record = try await store.record(tenant: tenant.name, id: id, kind: kind), !record.isExpired(at: Gateway.nowMs()) else {
            throw GatewayError.notFound("no stored completion \(id)")
        }
        return record
    }
}

/// OpenAI's answer to deleting a stored completion.
struct CompletionDeletedBody: Encodable {
    let id: String
    let object = "chat.completion.deleted"
    let deleted = true
}
