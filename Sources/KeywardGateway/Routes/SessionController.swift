import Hummingbird

/// `/admin/v1/session` and `/admin/v1/dashboard`, for a token of any role: who the token is (the
/// console chooses its views by it) and the last hour of the server's own counters.
struct SessionController {
    let metrics: GatewayMetrics

    struct SessionBody: Encodable {
        let token_id: String
        let role: String
        let tenant: String?
    }

    /// Routes of a group under `admin/v1` that authenticates any role.
    func addRoutes(to group: RouterGroup<GatewayContext>) {
        group.get("session") { _, context -> Response in
            let principal = try context.requirePrincipal()
            return JSONBody.encoded(SessionBody(token_id: principal.tokenID, role: principal.role.rawValue, tenant: principal.tenant?.name))
        }
        group.get("dashboard") { _, _ -> Response in JSONBody.encoded(metrics.lastHour) }
    }
}
