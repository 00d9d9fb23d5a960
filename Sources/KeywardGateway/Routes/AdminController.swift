import Foundation
import Hummingbird
import KeywardAudit
import KeywardCrypto
import KeywardKeyStores
import KeywardStorage
import Logging

/// `/admin/v1/…` for admin tokens: tenants, tokens, provider keys and key policies. Every change
/// is in the audit log.
struct AdminController {
    let store: any RecordStore
    let keyStores: KeyStores
    let vault: Vault
    let audit: AuditLog
    let policies: KeyPolicies
    let replication: Replication
    /// The configured upstreams: a provider key is for one of them; the API lists them (without keys).
    let upstreams: [UpstreamConfiguration]
    let bodyLimit: Int
    let logger: Logger

    private struct CreateTenant: Decodable {
        var name: String
        var key: String?
        var store: Tenant.StorePolicy?
        var retention_days: Int?
        var encrypted_requests: Tenant.EncryptedRequests?
        var rate_limits: RateLimits?
    }

    /// A partial tenant: the settings given change, the others stay (`rate_limits` replaces both
    /// limits: `{}` returns the tenant to the configured defaults).
    private struct UpdateTenant: Decodable {
        var store: Tenant.StorePolicy?
        var retention_days: Int?
        var encrypted_requests: Tenant.EncryptedRequests?
        var rate_limits: RateLimits?
    }

    private static func checkLimits(_ limits: RateLimits?) throws {
        if let limits, !limits.isValid {
            throw GatewayError.invalidRequest("each rate limit must be from 1 to \(RateLimits.maximum), or left out", code: "invalid_field")
        }
    }

    private static func checkRetention(_ days: Int?) throws {
        if let days, !(0...36500).contains(days) {
            throw GatewayError.invalidRequest("retention_days must be between 0 (keep) and 36500", code: "invalid_field")
        }
    }

    private struct CreateToken: Decodable {
        var tenant: String?
        var role: TokenRecord.Role?
        var rate_limits: RateLimits?
    }

    private struct UpdateToken: Decodable {
        var rate_limits: RateLimits
    }

    private struct ProviderKey: Decodable {
        var api_key: String
    }

    /// Routes of a group under `admin/v1` that authenticates admins.
    func addRoutes(to admin: RouterGroup<GatewayContext>) {

        admin.post("tenants") { request, context -> Response in
            let principal = try context.requirePrincipal()
            try audit.requireAvailable()
            let input = try JSONBody.decode(CreateTenant.self, from: try await request.bodyBytes(limit: bodyLimit))
            guard input.name.range(of: #"^[a-z0-9][a-z0-9_-]{0,62}$"#, options: .regularExpression) != nil else {
                throw GatewayError.invalidRequest("a tenant name is 1-63 lowercase letters, digits, '-' or '_'", code: "invalid_name")
            }
            try Self.checkRetention(input.retention_days)
            try Self.checkLimits(input.rate_limits)
            guard try await store.tenant(named: input.name) == nil else {
                throw GatewayError(.conflict, type: "invalid_request_error", code: "already_exists", "tenant \(input.name) exists")
            }
            let key: String
            if let given = input.key {
                _ = try await keyStores.enabledKey(given)
                key = given
            } else {
                let reference = KeyReference(scheme: "local", keyID: input.name)
                let store = try keyStores.store(for: reference)
                do {
                    _ = try await store.createKey(name: input.name)
                } catch let e as KeyStoreError where e.code == .alreadyExists {
                    throw GatewayError(.conflict, type: "invalid_request_error", code: "already_exists",
                                       "a local key named \(input.name) exists; pass it as \"key\": \"local:\(input.name)\" to use it")
                }
                key = "local:\(input.name)"
            }
            let tenant = Tenant(name: input.name, key: key, store: input.store ?? .always,
                                retentionDays: input.retention_days ?? 30, createdAt: Gateway.nowMs(),
                                encryptedRequests: input.encrypted_requests ?? .allowed, rateLimits: input.rate_limits ?? RateLimits())
            do { try await store.createTenant(tenant) } catch let e as StorageError where e.code == .alreadyExists {
                throw GatewayError(.conflict, type: "invalid_request_error", code: "already_exists", "tenant \(input.name) exists")
            }
            let scope = AuditScope(actor: principal.tokenID, tenant: tenant.name)
            try await audit.append(AuditLog.event(.tenantCreate, key: key, scope: scope))
            // Deny by default, with one explicit grant: the tenant's own app tokens may infer and read back.
            var policy = try await policies.policy(forKey: key)
            let grant = KeyPolicy.tenantDefault(tenant.name)
            if !policy.grants.contains(grant) {
                policy.grants.append(grant)
                try await savePolicy(policy, forKey: key, scope: scope)
            }
            logger.notice("tenant created", metadata: ["tenant": "\(tenant.name)", "key": "\(tenant.key)"])
            return JSONBody.encoded(TenantBody(tenant), status: .created)
        }

        admin.get("tenants") { request, context -> Response in
            return JSONBody.encoded(ListBody(data: try await store.tenants().map(TenantBody.init)))
        }

        admin.patch("tenants/:name") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let name = try context.parameters.require("name")
            let input = try JSONBody.decode(UpdateTenant.self, from: try await request.bodyBytes(limit: bodyLimit))
            try Self.checkRetention(input.retention_days)
            try Self.checkLimits(input.rate_limits)
            guard let before = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
            let change = TenantSettingsChange(store: input.store, retentionDays: input.retention_days, encryptedRequests: input.encrypted_requests,
                                              rateLimits: input.rate_limits)
            let given = [input.store.map { "store=\($0.rawValue)" }, input.retention_days.map { "retention_days=\($0)" },
                         input.encrypted_requests.map { "encrypted_requests=\($0.rawValue)" },
                         input.rate_limits.map { "rate_limits={\($0.summary)}" }].compactMap { $0 }
            guard !given.isEmpty else {
                throw GatewayError.invalidRequest("give any of store, retention_days, encrypted_requests, rate_limits", code: "missing_field")
            }
            // Logged first: a setting is in force only if its change is in the log.
            try await audit.append(AuditLog.event(.tenantUpdate, key: before.key, detail: given.joined(separator: " "),
                                                  scope: AuditScope(actor: principal.tokenID, tenant: name)))
            do { try await store.updateTenantSettings(name, change) } catch let e as StorageError where e.code == .notFound {
                throw GatewayError.notFound("no tenant \(name)")
            }
            await replication.changed(.tenant(name))
            logger.notice("tenant updated", metadata: ["tenant": "\(name)", "settings": "\(given.joined(separator: " "))"])
            guard let tenant = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
            return JSONBody.encoded(TenantBody(tenant))
        }

        admin.put("tenants/:name/provider-keys/:upstream") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let name = try context.parameters.require("name")
            let upstreamName = try context.parameters.require("upstream")
            guard let tenant = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
            guard upstreams.contains(where: { $0.name == upstreamName }) else {
                throw GatewayError.notFound("no upstream \(upstreamName)")
            }
            let input = try JSONBody.decode(ProviderKey.self, from: try await request.bodyBytes(limit: bodyLimit))
            let plaintext = Array(input.api_key.utf8)
            let scope = AuditScope(actor: principal.tokenID, tenant: name, purpose: .inference)
            try audit.requireAvailable()
            let sealer = try await AuditScope.$current.withValue(scope) {
                try await vault.sealer(for: tenant, plaintextLength: plaintext.count)
            }
            var record = try sealer.seal(plaintext, id: ProviderKeys.recordID(upstream: upstreamName), kind: ProviderKeys.kind,
                                         createdAt: Gateway.nowMs(), metadata: RecordMetadata())
            record.expiresAt = nil
            try await audit.append(AuditLog.event(.encryptRecord, key: tenant.key, record: record.id, scope: scope))
            try await store.upsert(record)
            await replication.changed(.providerKeys(name))
            logger.notice("provider key stored", metadata: ["tenant": "\(name)", "upstream": "\(upstreamName)"])
            return Response(status: .noContent)
        }

        admin.get("tokens") { _, _ -> Response in
            var tokens: [TokenRecord] = []
            for role in TokenRecord.Role.allCases { tokens += try await store.tokens(role: role) }
            return JSONBody.encoded(ListBody(data: tokens.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }.map(TokenBody.init)))
        }

        admin.get("upstreams") { _, _ -> Response in JSONBody.encoded(ListBody(data: upstreams.map(UpstreamBody.init))) }

        admin.post("tokens") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let input = try JSONBody.decode(CreateToken.self, from: try await request.bodyBytes(limit: bodyLimit))
            let role = input.role ?? .app
            try Self.checkLimits(input.rate_limits)
            if input.rate_limits != nil, role != .app {
                throw GatewayError.invalidRequest("only app tokens have rate limits", code: "invalid_field")
            }
            switch (role, input.tenant) {
            case (.app, nil): throw GatewayError.invalidRequest("an app token needs a tenant", code: "missing_field")
            case (.app, let name?):
                guard try await store.tenant(named: name) != nil else { throw GatewayError.notFound("no tenant \(name)") }
            case (_, _?): throw GatewayError.invalidRequest("only app tokens belong to a tenant", code: "invalid_field")
            case (_, nil): break
            }
            let (token, id) = Tokens.generate()
            // Logged first: a token exists only if its creation is in the log.
            let limits = input.rate_limits ?? RateLimits()
            try await audit.append(AuditLog.event(.tokenCreate, detail: (["id=\(id) role=\(role.rawValue)"] + (limits.isEmpty ? [] : [limits.summary])).joined(separator: " "),
                                                       scope: AuditScope(actor: principal.tokenID, tenant: input.tenant)))
            try await store.insertToken(TokenRecord(id: id, tenant: input.tenant, role: role, hash: Tokens.hash(token), createdAt: Gateway.nowMs(),
                                                    rateLimits: limits))
            logger.notice("token issued", metadata: ["token_id": "\(id)", "tenant": "\(input.tenant ?? "-")", "role": "\(role.rawValue)"])
            // The token is shown once, in this answer.
            return JSONBody.encoded(TokenCreatedBody(id: id, token: token.exposed(), role: role.rawValue, tenant: input.tenant,
                                                         rate_limits: role == .app ? limits : nil), status: .created)
        }

        // An app token's own limits, replaced whole (`{}`: none of its own).
        admin.patch("tokens/:id") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let id = try context.parameters.require("id")
            let input = try JSONBody.decode(UpdateToken.self, from: try await request.bodyBytes(limit: bodyLimit))
            try Self.checkLimits(input.rate_limits)
            guard let token = try await store.token(id: id), token.role == .app else { throw GatewayError.notFound("no app token \(id)") }
            // Logged first: a limit is in force only if its change is in the log.
            try await audit.append(AuditLog.event(.tokenUpdate, detail: "id=\(id) rate_limits={\(input.rate_limits.summary)}",
                                                  scope: AuditScope(actor: principal.tokenID, tenant: token.tenant)))
            guard try await store.setTokenRateLimits(id: id, input.rate_limits) else { throw GatewayError.notFound("no app token \(id)") }
            await replication.changed(.tokens)
            return JSONBody.encoded(TokenLimitsBody(id: id, rate_limits: input.rate_limits))
        }

        admin.delete("tokens/:id") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let id = try context.parameters.require("id")
            if id == principal.tokenID, try await store.tokens(role: .admin).count == 1 {
                throw GatewayError(.conflict, type: "invalid_request_error", code: "last_admin_token", "the last admin token cannot be deleted")
            }
            guard try await store.deleteToken(id: id) else { throw GatewayError.notFound("no token \(id)") }
            await replication.changed(.tokens)
            try await audit.append(AuditLog.event(.tokenDelete, detail: "id=\(id)", scope: AuditScope(actor: principal.tokenID)))
            logger.notice("token deleted", metadata: ["token_id": "\(id)"])
            return JSONBody.encoded(TokenDeletedBody(id: id))
        }

        for (action, suspended) in [("suspend", true), ("resume", false)] {
            admin.post("tokens/:id/\(action)") { request, context -> Response in
                let principal = try context.requirePrincipal()
                let id = try context.parameters.require("id")
                guard id != principal.tokenID else {
                    throw GatewayError(.conflict, type: "invalid_request_error", code: "own_token", "a token cannot \(action) itself")
                }
                guard try await store.setTokenSuspended(id: id, suspended) else { throw GatewayError.notFound("no token \(id)") }
                await replication.changed(.tokens)
                try await audit.append(AuditLog.event(action == "suspend" ? .tokenSuspend : .tokenResume, detail: "id=\(id)", scope: AuditScope(actor: principal.tokenID)))
                return JSONBody.encoded(TokenSuspensionBody(id: id, suspended: suspended))
            }
        }

        admin.get("keys/:ref/policy") { request, context -> Response in
            let ref = try await context.keyReference(in: store)
            return JSONBody.bytes(Array(try await policies.policy(forKey: ref).json.utf8))
        }

        admin.put("keys/:ref/policy") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let ref = try await context.keyReference(in: store)
            let policy = try KeyPolicy.parse(try await request.bodyBytes(limit: bodyLimit))
            try await savePolicy(policy, forKey: ref, scope: AuditScope(actor: principal.tokenID))
            return JSONBody.bytes(Array(policy.json.utf8))
        }

        admin.post("tenants/:name/purge-shredded") { request, context -> Response in
            let principal = try context.requirePrincipal()
            let name = try context.parameters.require("name")
            guard let tenant = try await store.tenant(named: name) else { throw GatewayError.notFound("no tenant \(name)") }
            let reference = try KeyReference.parse(tenant.key)
            let state: KeyState
            do { state = try await keyStores.store(for: reference).describe(keyID: reference.keyID).state } catch let e as KeyStoreError where e.code == .keyNotFound {
                state = .destroyed
            }
            guard state == .destroyed else {
                throw GatewayError(.conflict, type: "invalid_request_error", code: "key_not_destroyed",
                                   "\(name)'s key is \(state.rawValue): only records under a destroyed key are shredded")
            }
            try await audit.append(AuditLog.event(.purgeShredded, key: tenant.key, scope: AuditScope(actor: principal.tokenID, tenant: name)))
            let removed = try await store.deleteAllRecords(tenant: name)
            return JSONBody.encoded(PurgedBody(tenant: name, deleted: removed))
        }
    }

    /// Stores a key's policy (logged first: no event, no change) and tells the replicas.
    func savePolicy(_ policy: KeyPolicy, forKey key: String, scope: AuditScope) async throws {
        try await policies.save(policy, forKey: key, scope: scope)
        await replication.changed(.policy(key))
    }
}
