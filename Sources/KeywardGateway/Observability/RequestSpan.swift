import HTTPTypes
import Hummingbird

/// The request's span: Hummingbird's `TracingMiddleware` (continuing an incoming `traceparent`,
/// named by the matched route, ended when the body is written), shown a query whose parameters
/// Keyward does not read are replaced by `REDACTED`. A client may put anything in a query (an
/// `api_key` another gateway accepts there), and a span leaves the machine; the middleware records
/// a query verbatim or redacts only the names it is given. No header is recorded either.
struct RequestSpan: RouterMiddleware {
    typealias Context = GatewayContext
    private let tracing = TracingMiddleware<GatewayContext>()

    /// The query parameters Keyward's routes read, none of them secret: paging, and the
    /// filters of the file, stored-completion and audit lists.
    static let shownParameters: Set<Substring> = ["after", "limit", "order", "purpose", "model", "since", "tenant", "key", "operation"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let path = request.head.path, let mark = path.firstIndex(of: "?") else {
            return try await tracing.handle(request, context: context, next: next)
        }
        var head = request.head
        head.path = path[..<mark] + "?" + Self.redacted(query: path[path.index(after: mark)...])
        // The span sees the redacted copy; the routes get the request as it came.
        return try await tracing.handle(Request(head: head, body: request.body), context: context) { _, context in
            try await next(request, context)
        }
    }

    /// `query` with each parameter that is not one of ``shownParameters`` (its name included:
    /// a bare `?sk-…` is a name) replaced by `REDACTED`.
    static func redacted(query: Substring) -> String {
        query.split(separator: "&", omittingEmptySubsequences: false).map { parameter -> Substring in
            let name = parameter.prefix { $0 != "=" }
            return shownParameters.contains(name) ? parameter : "REDACTED"
        }.joined(separator: "&")
    }
}
