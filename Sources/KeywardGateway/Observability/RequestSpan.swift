import Foundation
import HTTPTypes
import Hummingbird

/// The request's span: Hummingbird's `TracingMiddleware` (continuing an incoming `traceparent`,
/// named by the matched route, ended when the body is written), shown a query whose parameters
/// Keyward does not read are replaced by `REDACTED`, and a path cut before a PKCS#11 PIN. A client may put anything in a query (an
/// `api_key` another gateway accepts there), and a span leaves the machine; the middleware records
/// a query verbatim or redacts only the names it is given. No header is recorded either.
struct RequestSpan: RouterMiddleware {
    typealias Context = GatewayContext
    private let tracing = TracingMiddleware<GatewayContext>()

    /// The query parameters Keyward's routes read, none of them secret: paging, and the
    /// filters of the file, stored-completion and audit lists.
    static let shownParameters: Set<Substring> = ["after", "limit", "order", "purpose", "model", "since", "tenant", "key", "operation"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let shown = request.head.path.flatMap(Self.redacted(target:)) else {
            return try await tracing.handle(request, context: context, next: next)
        }
        var head = request.head
        head.path = shown
        // The span sees the redacted copy; the routes get the request as it came.
        return try await tracing.handle(Request(head: head, body: request.body), context: context) { _, context in
            try await next(request, context)
        }
    }

    /// The request target as a span may show it, or nil if it may show it as it is: the query
    /// redacted, and a path that names a PKCS#11 PIN (a `keys/:ref` route's percent-encoded
    /// `pin-value=`, which the route refuses) cut before the PIN.
    static func redacted(target: String) -> String? {
        let mark = target.firstIndex(of: "?") ?? target.endIndex
        var path = target[..<mark]
        let pin = path.range(of: "pin-value", options: .caseInsensitive)
        guard pin != nil || mark != target.endIndex else { return nil }
        if let pin { path = path[..<pin.upperBound] + "=REDACTED" }
        return mark == target.endIndex ? String(path) : String(path + "?" + redacted(query: target[target.index(after: mark)...]))
    }

    /// `query` with each parameter that is not one of ``shownParameters`` (its name included:
    /// a bare `?sk-…` is a name), or that names a PKCS#11 PIN (an audit list's `key`), replaced
    /// by `REDACTED`.
    static func redacted(query: Substring) -> String {
        query.split(separator: "&", omittingEmptySubsequences: false).map { parameter -> Substring in
            let name = parameter.prefix { $0 != "=" }
            let shown = shownParameters.contains(name) && parameter.range(of: "pin-value", options: .caseInsensitive) == nil
            return shown ? parameter : "REDACTED"
        }.joined(separator: "&")
    }
}
