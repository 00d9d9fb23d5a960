import Hummingbird
import KeywardAudit
import KeywardStorage
import Synchronization

/// Turns a bearer token into a ``Principal``: a hashed look-up, cached for a few seconds (a request
/// then costs no database read to authenticate). Cleared when a token or tenant changes here;
/// another process's change is seen within the TTL, or at once through the change feed.
final class Authenticator: Sendable {
    let store: any RecordStore
    /// Whose flag says whether cached principals may be used (not while the change feed is lost).
    let vault: Vault
    let audit: AuditLog
    let metrics: GatewayMetrics
    /// Token hash → principal.
    private let principals = Mutex(ExpiringCache<[UInt8], Principal>(ttl: Double(Vault.tenantViewLife.components.seconds)))

    init(store: any RecordStore, vault: Vault, audit: AuditLog, metrics: GatewayMetrics) {
        self.store = store
        self.vault = vault
        self.audit = audit
        self.metrics = metrics
    }

    /// Drops every cached principal.
    func forget() { principals.withLock { $0.removeAll() } }

    /// The token of an `Authorization: Bearer …` value (scheme in any case, blanks around the
    /// token dropped); on every request, so bytes rather than `lowercased()` and Foundation's
    /// character sets.
    static func bearerToken(_ header: String) -> String? {
        let u = Array(header.utf8)
        let scheme = Array("bearer ".utf8)
        guard u.count >= scheme.count, zip(u, scheme).allSatisfy({ (0x41...0x5A ~= $0 ? $0 | 0x20 : $0) == $1 }) else { return nil }
        var start = scheme.count, end = u.count
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start += 1 }
        while end > start, u[end - 1] == 0x20 || u[end - 1] == 0x09 { end -= 1 }
        return String(decoding: u[start..<end], as: UTF8.self)
    }

    /// Verifies the bearer token (or `x-api-key`, as Anthropic clients send it) for `role` (nil:
    /// any role): 401 without a known token, 403 for a suspended one, 403 and an audit event for
    /// another role.
    /// - Parameter route: the matched route's template, for the audit event of a refusal.
    func authenticate(_ request: Request, role: TokenRecord.Role?, route: String?) async throws -> Principal {
        var value: String?
        if let header = request.headers[.authorization], let token = Self.bearerToken(header) {
            value = token
        } else if let key = request.headers[.xAPIKey] {
            value = key
        }
        guard let value, !value.isEmpty else { throw GatewayError.unauthorized }
        let hash = Tokens.hash(value)
        let principal: Principal
        let (cached, generation) = principals.withLock { ($0.value(for: hash, now: Gateway.clock()), $0.generation) }
        if vault.cachesTrusted.load(ordering: .relaxed), let cached {
            principal = cached
        } else {
            let view = vault.tenantView()
            guard let token = try await store.token(hash: hash) else { throw GatewayError.unauthorized }
            var tenant: Tenant?
            if let name = token.tenant {
                guard let t = try await store.tenant(named: name) else { throw GatewayError.unauthorized }
                tenant = t
            }
            principal = Principal(tokenID: token.id, role: token.role, tenant: tenant, suspended: token.suspended, rateLimits: token.rateLimits,
                                  tenantView: view)
            principals.withLock { $0.insert(principal, for: hash, now: Gateway.clock(), ifGeneration: generation) }
        }
        guard !principal.suspended else {
            throw GatewayError.forbidden("this token is suspended", code: "token_suspended")
        }
        if let role, principal.role != role {
            metrics.accessDenied("role")
            try await audit.append(AuditLog.event(
                .access, result: .denied, detail: "\(request.method.rawValue) \(route ?? "other") needs role \(role.rawValue)",
                scope: AuditScope(actor: principal.tokenID, tenant: principal.tenant?.name, requestID: AuditScope.requestID)))
            throw GatewayError.forbidden("this token's role (\(principal.role.rawValue)) may not call this route")
        }
        return principal
    }
}

extension Authenticator {
    /// The app token `id` as it stands now, for work done later in its name (a batch's lines):
    /// 403 `token_revoked` once it is deleted, `token_suspended` while it is suspended.
    func principal(tokenID id: String) async throws -> Principal {
        let view = vault.tenantView()
        guard let token = try await store.token(id: id), token.role == .app, let name = token.tenant,
              let tenant = try await store.tenant(named: name) else {
            throw GatewayError.forbidden("the token that made this batch was deleted", code: "token_revoked")
        }
        guard !token.suspended else { throw GatewayError.forbidden("the token that made this batch is suspended", code: "token_suspended") }
        return Principal(tokenID: token.id, role: token.role, tenant: tenant, rateLimits: token.rateLimits, tenantView: view)
    }
}

/// Authenticates every request of a route group for one role (nil: any) and puts the
/// ``Principal`` in the request context, before the handler reads a byte of the body.
struct Authenticate: RouterMiddleware {
    typealias Context = GatewayContext
    let authenticator: Authenticator
    let role: TokenRecord.Role?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.principal = try await authenticator.authenticate(request, role: role, route: context.endpointPath)
        return try await next(request, context)
    }
}
