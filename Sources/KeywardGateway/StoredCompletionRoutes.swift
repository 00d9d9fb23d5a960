import Foundation
import Hummingbird
import KeywardStorage

/// OpenAI's stored-completions API over the tenant's encrypted records. Another tenant's record
/// is "not found", never "forbidden": its existence is not revealed.
extension Gateway {
    func addStoredCompletionRoutes(to router: Router<GatewayContext>) {
        router.get("/v1/chat/completions") { request, _ -> Response in
            let tenant = try await self.appTenant(request)
            let page = try Self.page(request)
            let records: [Record]
            do {
                records = try await self.store.records(RecordQuery(
                    tenant: tenant.name, kind: "chat.response", after: page.after, limit: page.limit + 1,
                    order: page.order, model: request.uri.queryParameters.get("model")))
            } catch let e as StorageError where e.code == .notFound {
                throw GatewayError.invalidRequest("no stored completion \(page.after ?? "") to list after", code: "invalid_cursor")
            }
            var items: [[UInt8]] = []
            for record in records.prefix(page.limit) { items.append(try await self.vault.open(record, of: tenant)) }
            return Self.jsonBytes(Self.list(items, ids: records.prefix(page.limit).map(\.id), hasMore: records.count > page.limit))
        }

        router.get("/v1/chat/completions/:id") { request, context -> Response in
            let tenant = try await self.appTenant(request)
            let record = try await self.storedRecord(tenant, try context.parameters.require("id"), kind: "chat.response")
            return Self.jsonBytes(try await self.vault.open(record, of: tenant))
        }

        router.get("/v1/chat/completions/:id/messages") { request, context -> Response in
            let tenant = try await self.appTenant(request)
            let id = try context.parameters.require("id")
            let record = try await self.storedRecord(tenant, id, kind: "chat.request")
            let plaintext = try await self.vault.open(record, of: tenant)
            let messages = ((try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [String: Any])?["messages"] as? [[String: Any]]) ?? []
            var all = messages.enumerated().map { i, m -> (String, [String: Any]) in
                var m = m
                let mid = "\(id)-\(i)"
                m["id"] = mid
                if m["content"] == nil { m["content"] = NSNull() }
                return (mid, m)
            }
            let page = try Self.page(request)
            if page.order == .descending { all.reverse() }
            if let after = page.after {
                guard let index = all.firstIndex(where: { $0.0 == after }) else {
                    throw GatewayError.invalidRequest("no message \(after) to list after", code: "invalid_cursor")
                }
                all.removeFirst(index + 1)
            }
            let slice = Array(all.prefix(page.limit))
            var object: [String: Any] = ["object": "list", "data": slice.map(\.1), "has_more": all.count > page.limit]
            object["first_id"] = slice.first?.0 ?? NSNull()
            object["last_id"] = slice.last?.0 ?? NSNull()
            return Self.json(object)
        }

        router.delete("/v1/chat/completions/:id") { request, context -> Response in
            let tenant = try await self.appTenant(request)
            let id = try context.parameters.require("id")
            guard id.hasPrefix("chatcmpl-"), try await self.store.deleteRecords(tenant: tenant.name, id: id) > 0 else {
                throw GatewayError.notFound("no stored completion \(id)")
            }
            return Self.json(["id": id, "object": "chat.completion.deleted", "deleted": true])
        }
    }

    private func appTenant(_ request: Request) async throws -> Tenant {
        guard let tenant = try await authenticate(request, role: .app).tenant else { throw GatewayError.unauthorized }
        return tenant
    }

    private func storedRecord(_ tenant: Tenant, _ id: String, kind: String) async throws -> Record {
        guard let record = try await store.record(tenant: tenant.name, id: id, kind: kind) else {
            throw GatewayError.notFound("no stored completion \(id)")
        }
        return record
    }

    private struct Page {
        var after: String?
        var limit: Int
        var order: RecordQuery.Order
    }

    private static func page(_ request: Request) throws -> Page {
        let q = request.uri.queryParameters
        var limit = 20
        if let text = q.get("limit") {
            guard let n = Int(text), (1...100).contains(n) else {
                throw GatewayError.invalidRequest("limit must be an integer from 1 to 100", code: "invalid_field")
            }
            limit = n
        }
        var order = RecordQuery.Order.ascending
        if let text = q.get("order") {
            guard let o = RecordQuery.Order(rawValue: text) else {
                throw GatewayError.invalidRequest("order must be asc or desc", code: "invalid_field")
            }
            order = o
        }
        return Page(after: q.get("after"), limit: limit, order: order)
    }

    /// An OpenAI list object around already-encoded items, without re-encoding them.
    private static func list(_ items: [[UInt8]], ids: [String], hasMore: Bool) -> [UInt8] {
        var out = Array(#"{"object":"list","data":["#.utf8)
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += item
        }
        out += Array("],\"first_id\":".utf8) + (ids.first.map(JSONScanner.quoted) ?? Array("null".utf8))
        out += Array(",\"last_id\":".utf8) + (ids.last.map(JSONScanner.quoted) ?? Array("null".utf8))
        out += Array(",\"has_more\":\(hasMore)}".utf8)
        return out
    }
}
