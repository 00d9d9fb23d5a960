import KeywardCrypto
import KeywardAudit
import KeywardStorage
import Synchronization

/// The provider API keys tenants bring: each stored as a record under the tenant's key, read
/// (and audited) on first use, then cached for a few seconds.
final class ProviderKeys: Sendable {
    let store: any RecordStore
    let vault: Vault
    let audit: AuditLog
    /// "tenant/upstream" → the tenant's own provider key (nil: none stored).
    private let cache = Mutex(ExpiringCache<String, Secret?>(ttl: 5))

    init(store: any RecordStore, vault: Vault, audit: AuditLog) {
        self.store = store
        self.vault = vault
        self.audit = audit
    }

    /// The record id of a tenant's key for `upstream`.
    static func recordID(upstream: String) -> String { "provider-key:\(upstream)" }
    static let kind = "provider-key"

    /// Drops every cached key.
    func forget() { cache.withLock { $0.removeAll() } }

    /// The API key to send upstream: the tenant's own, if it stored one, else the configured one.
    func key(for tenant: Tenant, upstream: UpstreamConfiguration, scope: AuditScope) async throws -> Secret? {
        let cacheKey = tenant.name + "/" + upstream.name
        let (cached, generation) = cache.withLock { ($0.value(for: cacheKey, now: Gateway.clock()), $0.generation) }
        if vault.cachesTrusted.load(ordering: .relaxed), let cached {
            return cached ?? upstream.apiKey
        }
        var own: Secret?
        if let record = try await store.record(tenant: tenant.name, id: Self.recordID(upstream: upstream.name), kind: Self.kind) {
            try await audit.append(AuditLog.event(.decryptRecord, key: tenant.key, record: record.id, scope: scope))
            var plaintext = try await AuditScope.$current.withValue(scope) { try await vault.open(record, of: tenant) }
            own = Secret(bytes: SecretBytes(copying: plaintext))
            _ = plaintext.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        }
        cache.withLock { $0.insert(own, for: cacheKey, now: Gateway.clock(), ifGeneration: generation) }
        return own ?? upstream.apiKey
    }
}
