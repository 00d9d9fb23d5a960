import Hummingbird

extension Router {
    /// `GET path`, and `HEAD path` answered with the GET's status and headers and no body (RFC 9110;
    /// health checks and monitors send HEAD). Only for handlers that change nothing and whose bodies
    /// have a known length: a HEAD response must not state a length other than the GET's, and the
    /// API's routes (which audit, decrypt and unwrap keys, some streaming) keep answering HEAD 404.
    func getAndHead(_ path: RouterPath, use handler: @escaping @Sendable (Request, Context) async throws -> Response) {
        get(path, use: handler)
        head(path) { request, context in try await handler(request, context).createHeadResponse() }
    }
}
