import Foundation
import HTTPTypes
import Hummingbird

/// The request's span: Hummingbird's `TracingMiddleware` (continuing an incoming `traceparent`,
/// named by the matched route, ended when the body is written), shown the request's target with
/// what may be secret replaced by `REDACTED`: the query's parameters that Keyward does not read (a
/// client may put anything there, an `api_key` another gateway takes, and a span leaves the
/// machine; the middleware itself redacts only parameters it is told of), and a path segment or
/// parameter that names a PKCS#11 PIN. No header is recorded either.
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
    /// redacted, and a path segment naming a PKCS#11 PIN (a `keys/:ref` route's percent-encoded
    /// `pin-value=`, which the route refuses) replaced.
    static func redacted(target: String) -> String? {
        let mark = target.firstIndex(of: "?") ?? target.endIndex
        let segments = target[..<mark].split(separator: "/", omittingEmptySubsequences: false)
        let pin = segments.contains(where: namesPIN)
        guard pin || mark != target.endIndex else { return nil }
        let path = pin ? segments.map { namesPIN($0) ? "REDACTED" : $0 }.joined(separator: "/") : String(target[..<mark])
        return mark == target.endIndex ? path : path + "?" + redacted(query: target[target.index(after: mark)...])
    }

    /// `query` with each parameter that is not one of ``shownParameters`` (its name included:
    /// a bare `?sk-…` is a name), or that names a PKCS#11 PIN (an audit list's `key`), replaced
    /// by `REDACTED`.
    static func redacted(query: Substring) -> String {
        query.split(separator: "&", omittingEmptySubsequences: false).map { parameter -> Substring in
            shownParameters.contains(parameter.prefix { $0 != "=" }) && !namesPIN(parameter) ? parameter : "REDACTED"
        }.joined(separator: "&")
    }

    /// Whether `text`, as the routes decode it, names a PIN (in any case: a span need not be exact).
    /// Decoding keeps a literal `pin-value`, so the raw text needs no look of its own.
    private static func namesPIN(_ text: Substring) -> Bool {
        (text.removingPercentEncoding ?? String(text)).range(of: "pin-value", options: .caseInsensitive) != nil
    }
}
