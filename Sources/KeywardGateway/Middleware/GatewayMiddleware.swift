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
        let route = Self.route(request.uri.path)
        let elapsed = ContinuousClock.now - start
        metrics.request(route: route, method: request.method.rawValue, status: response.status.code, duration: elapsed)
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "route": "\(route)", "status": "\(response.status.code)",
            "ms": "\((elapsed.milliseconds * 1000).rounded() / 1000)",
        ])
        return response
    }

    static let adminActions: Set<String> = [
        "disable", "enable", "rotate", "schedule-deletion", "cancel-deletion", "policy", "rekey", "purge-shredded",
        "provider-keys", "suspend", "resume",
    ]

    /// The route template of a path, so that ids never become metric labels.
    static func route(_ path: String) -> String {
        switch path {
        case "/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics":
            return path  // the busiest routes, without splitting the path
        default: break
        }
        let parts = path.split(separator: "/").map(String.init)
        switch parts.count {
        case 0: return "/"
        case 1, 2: return "/" + parts.joined(separator: "/")
        default: break
        }
        if parts.starts(with: ["v1", "chat", "completions"]) {
            return parts.count == 3 ? "/v1/chat/completions" : parts.count == 5 ? "/v1/chat/completions/{id}/messages" : "/v1/chat/completions/{id}"
        }
        // Admin resources: /admin/v1/<resource>/<id>[/<action>]: the id is never a label, and
        // only known actions are (a label per made-up path would grow the metrics without bound).
        if parts.starts(with: ["admin", "v1"]), (4...6).contains(parts.count),
           let id = ["keys": "{ref}", "tenants": "{name}", "tokens": "{id}", "jobs": "{id}"][parts[2]] {
            var template = "/admin/v1/\(parts[2])/\(id)"
            if parts.count >= 5 {
                guard Self.adminActions.contains(parts[4]) else { return "other" }
                template += "/\(parts[4])"
            }
            if parts.count == 6 {
                guard parts[4] == "provider-keys" else { return "other" }
                template += "/{upstream}"
            }
            return template
        }
        return parts.count <= 3 ? "/" + parts.joined(separator: "/") : "other"
    }
}
