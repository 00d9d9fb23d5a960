import Hummingbird

/// Answers every error in OpenAI's shape, counts requests by route and status, marks every answer
/// `cache-control: no-store`, and logs one line per request (never a body or a header value).
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        context.started = start
        var response: Response
        var refusal: String?
        do {
            response = try await AuditScope.$requestID.withValue(context.id) { try await next(request, context) }
        } catch {
            let e = GatewayError.from(error)
            if e.code == GatewayError.internalError.code {
                context.logger.error("unhandled error", metadata: ["error_type": "\(type(of: error))"])
            }
            response = try e.response(from: request, context: context)
            refusal = e.code
            context.logger.info("refused", metadata: ["code": "\(e.code)"])
        }
        // The matched route's template (Hummingbird's), so that ids never become metric labels.
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 }
        let elapsed = ContinuousClock.now - start
        if refusal == nil, response.status.code >= 400 { refusal = "http_\(response.status.code)" }
        // Nothing an API answers is for a cache (the console's assets included: they are small).
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        metrics.request(route: route, method: request.method.rawValue, status: response.status.code, duration: elapsed, refusal: refusal)
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "route": "\(route ?? "other")", "status": "\(response.status.code)",
            "ms": "\((elapsed.milliseconds * 1000).rounded() / 1000)",
        ])
        return response
    }
}
