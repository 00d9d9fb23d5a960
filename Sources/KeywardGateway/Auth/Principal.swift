import KeywardKeyStores
import KeywardStorage

/// Who is calling: from a verified token.
struct Principal: Sendable {
    let tokenID: String
    let role: TokenRecord.Role
    let tenant: Tenant?
    var suspended = false
    /// The token's own rate limits (its tenant's are the tenant's).
    var rateLimits = RateLimits()
    /// When `tenant` was read (a cached principal keeps its first read's).
    var tenantView: Vault.TenantView?
}

extension Principal {
    /// The audit scope of a request by this principal.
    func scope(_ purpose: Purpose?) -> AuditScope {
        AuditScope(actor: tokenID, tenant: tenant?.name, requestID: AuditScope.requestID, purpose: purpose)
    }
}

extension GatewayContext {
    /// The principal the route group's ``Authenticate`` middleware verified.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw GatewayError.unauthorized }
        return principal
    }

    /// The principal's tenant: every app token has one.
    func requireTenant() throws -> (Principal, Tenant) {
        let principal = try requirePrincipal()
        guard let tenant = principal.tenant else { throw GatewayError.unauthorized }
        return (principal, tenant)
    }

    /// The percent-encoded key reference of a `keys/:ref/…` route. One that holds a PIN is
    /// refused unless a tenant already uses it (kept before the gateway refused such references),
    /// so that its key can still be described, disabled and moved away from.
    func keyReference(in store: any RecordStore) async throws -> String {
        let raw = try parameters.require("ref")
        guard let ref = raw.removingPercentEncoding, let reference = KeyReference(parsing: ref) else {
            throw GatewayError.invalidRequest("the key reference must be percent-encoded local:NAME, aws-kms:ARN or pkcs11:…",
                                              code: "invalid_key_reference")
        }
        if reference.holdsSecret, try await store.tenants(usingKey: ref).isEmpty {
            throw GatewayError.invalidRequest(KeyStores.pinValueRefused, code: "invalid_key_reference")
        }
        return ref
    }
}
