import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import Synchronization

/// The access policies of master keys, and the check every key use goes through. A policy is
/// cached for a few seconds (a request then costs no database read to authorize); cleared on a
/// change here, another process's change is seen within the TTL, or at once through the feed.
final class KeyPolicies: Sendable {
    let store: any RecordStore
    /// Whose flag says whether cached policies may be used.
    let vault: Vault
    let audit: AuditLog
    let metrics: GatewayMetrics
    let logger: Logger
    /// Key reference → its policy.
    private let policies = Mutex(ExpiringCache<String, KeyPolicy>(ttl: 5))

    init(store: any RecordStore, vault: Vault, audit: AuditLog, metrics: GatewayMetrics, logger: Logger) {
        self.store = store
        self.vault = vault
        self.audit = audit
        self.metrics = metrics
        self.logger = logger
    }

    /// Drops every cached policy.
    func forget() { policies.withLock { $0.removeAll() } }

    /// The policy of a master key (none stored: an empty one, which grants nothing).
    func policy(forKey key: String) async throws -> KeyPolicy {
        let (cached, generation) = policies.withLock { ($0.value(for: key, now: Gateway.clock()), $0.generation) }
        if vault.cachesTrusted.load(ordering: .relaxed), let cached { return cached }
        var policy = KeyPolicy()
        if let document = try await store.policy(key: key) {
            do { policy = try JSONDecoder().decode(KeyPolicy.self, from: Data(document.utf8)) } catch {
                logger.error("a stored key policy does not decode: it grants nothing", metadata: ["key": "\(key)"])
            }
        }
        policies.withLock { $0.insert(policy, for: key, now: Gateway.clock(), ifGeneration: generation) }
        return policy
    }

    /// Refuses (403 `access_denied`, audited) unless the tenant's key policy grants `principal`
    /// the purpose (and, for inference, the model).
    func authorize(_ principal: Principal, tenant: Tenant, purpose: Purpose, model: String? = nil) async throws {
        let policy = try await policy(forKey: tenant.key)
        guard !policy.allows(tokenID: principal.tokenID, tenant: principal.tenant?.name, purpose: purpose, model: model) else { return }
        try await deny(principal, tenant: tenant, purpose: purpose, detail: model.map { "model=\($0)" },
                       "no grant of \(tenant.name)'s key allows this token \(purpose.rawValue)" + (model.map { " with model \($0)" } ?? ""))
    }

    /// The check made before an encrypted request is opened, when neither its route's purpose nor
    /// its model has been read: some grant must let `principal` infer (with any model) or read
    /// back. The route checks its own purpose and model once the request is open.
    func authorizeOpening(_ principal: Principal, tenant: Tenant) async throws {
        let policy = try await policy(forKey: tenant.key)
        guard !([Purpose.inference, .retrieval].contains { purpose in
            policy.allows(tokenID: principal.tokenID, tenant: principal.tenant?.name, purpose: purpose, model: nil, anyModel: true)
        }) else { return }
        try await deny(principal, tenant: tenant, purpose: .inference, detail: "encrypted request",
                       "no grant of \(tenant.name)'s key allows this token to have a request opened")
    }

    private func deny(_ principal: Principal, tenant: Tenant, purpose: Purpose, detail: String?, _ message: String) async throws -> Never {
        metrics.accessDenied(purpose.rawValue)
        try await audit.append(AuditLog.event(
            .access, key: tenant.key, result: .denied, detail: detail,
            scope: AuditScope(actor: principal.tokenID, tenant: tenant.name, requestID: AuditScope.requestID, purpose: purpose)))
        throw GatewayError.accessDenied(message)
    }

    /// Stores a key's policy, logged first (no event, no change). The caller tells the replicas.
    func save(_ policy: KeyPolicy, forKey key: String, scope: AuditScope) async throws {
        try await audit.append(AuditLog.event(.policyChange, key: key, detail: policy.json, scope: scope))
        try await store.setPolicy(key: key, document: policy.json, at: Gateway.nowMs())
        forget()
    }
}
