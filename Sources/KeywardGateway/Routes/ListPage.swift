import KeywardJSON
import Foundation
import Hummingbird
import KeywardStorage

/// The paging parameters of OpenAI's list routes: `after` (an id), `limit` (1 to 100, default 20;
/// the Files list's 1 to 10,000, default 10,000) and `order` (`asc` or `desc`).
struct ListPage {
    var after: String?
    var limit: Int
    var order: RecordQuery.Order

    /// The Files list's limits (OpenAI's): an SDK's `files.list().data` is every file.
    static let fileLimits = (range: 1...10_000, default: 10_000)

    init(_ request: Request, defaultOrder: RecordQuery.Order, limits: (range: ClosedRange<Int>, default: Int) = (1...100, 20)) throws {
        let q = request.uri.queryParameters
        limit = limits.default
        if let text = q.get("limit") {
            guard let n = Int(text), limits.range.contains(n) else {
                throw GatewayError.invalidRequest("limit must be an integer from \(limits.range.lowerBound) to \(limits.range.upperBound)",
                                                  code: "invalid_field")
            }
            limit = n
        }
        order = defaultOrder
        if let text = q.get("order") {
            guard let o = RecordQuery.Order(rawValue: text) else {
                throw GatewayError.invalidRequest("order must be asc or desc", code: "invalid_field")
            }
            order = o
        }
        after = q.get("after")
    }

    /// The tenant's records of `kind` (with `label`, if given) after the cursor in the page's
    /// order: one more than the page holds, so that the caller can say whether more follow. A
    /// cursor that names no such record is 400 `invalid_cursor` (`noun` names the kind).
    func records(of tenant: String, kind: String, label: String? = nil, liveAt: Int64? = nil, noun: String,
                 in store: any RecordStore) async throws -> [Record] {
        do {
            return try await store.records(RecordQuery(tenant: tenant, kind: kind, after: after, limit: limit + 1, order: order, label: label,
                                                       liveAt: liveAt))
        } catch let e as StorageError where e.code == .notFound {
            throw GatewayError.invalidRequest("no \(noun) \(after ?? "") to list after", code: "invalid_cursor")
        }
    }

    /// The page of `items` (given oldest first) asked for: in order, after the cursor, at most
    /// `limit`; and whether more follow.
    func slice<T>(_ items: [T], id: (T) -> String?) throws -> (page: [T], hasMore: Bool) {
        var all = order == .descending ? Array(items.reversed()) : items
        if let after {
            guard let index = all.firstIndex(where: { id($0) == after }) else {
                throw GatewayError.invalidRequest("no item \(after) to list after", code: "invalid_cursor")
            }
            all.removeFirst(index + 1)
        }
        return (Array(all.prefix(limit)), all.count > limit)
    }

    /// An OpenAI list object of one page of items.
    static func list(_ items: [[String: Any]], hasMore: Bool) -> [String: Any] {
        ["object": "list", "data": items, "has_more": hasMore, "first_id": items.first?["id"] ?? NSNull(),
         "last_id": items.last?["id"] ?? NSNull()]
    }

    /// An OpenAI list object around already-encoded items, without re-encoding them.
    static func encoded(_ items: [[UInt8]], ids: [String], hasMore: Bool) -> [UInt8] {
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
