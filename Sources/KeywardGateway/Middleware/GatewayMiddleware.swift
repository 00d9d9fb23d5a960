import Hummingbird

/// Answers every error in OpenAI's shape, counts requests by route and status, and logs one line
/// per request (never a body or a header value).
struct GatewayMiddleware: RouterMiddleware {
    typealias Context = GatewayContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var context = context
        context.started = start
        var response: Response
        do {
            response = try await AuditScope.$requestID.withValue(context.id) { try await next(request, context) }
        } catch {
            let e = GatewayError.from(error)
            if e.code == GatewayError.internalError.code {
                context.logger.error("unhandled error", metadata: ["error_type": "\(type(of: error))"])
            }
            response = try e.response(from: request, context: context)
            context.logger.info("refused", metadata: ["code": "\(e.code)"])
        }
        // The matched route's template (Hummingbird's), so that ids never become metric labels.
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 }
        let elapsed = ContinuousClock.now - start
        metrics.request(route: route, method: request.method.rawValue, status: response.status.code, duration: elapsed)
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "route": "\(route ?? "other")", "status": "\(response.status.code)",
            "ms": "\((elapsed.milliseconds * 1000).rounded() / 1000)",
        ])
        return response
    }
}
