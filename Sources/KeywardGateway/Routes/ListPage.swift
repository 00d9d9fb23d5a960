import Hummingbird
import KeywardStorage

/// The paging parameters of OpenAI's list routes: `after` (an id), `limit` (1 to 100, default 20)
/// and `order` (`asc` or `desc`).
struct ListPage {
    var after: String?
    var limit: Int
    var order: RecordQuery.Order

    init(_ request: Request, defaultOrder: RecordQuery.Order) throws {
        let q = request.uri.queryParameters
        limit = 20
        if let text = q.get("limit") {
            guard let n = Int(text), (1...100).contains(n) else {
                throw GatewayError.invalidRequest("limit must be an integer from 1 to 100", code: "invalid_field")
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
}
