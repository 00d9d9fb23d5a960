import KeywardAudit
import KeywardCrypto
import KeywardErrors
import KeywardKeyStores
import KeywardStorage
import Synchronization

/// Turns a tenant's plaintext into encrypted records and back, under the tenant's master key.
///
/// Data keys come through one caching materials manager per master key, so that in steady state
/// a key store is called once per many requests. Data keys are cached per tenant: each is wrapped
/// with the context `keyward:tenant` only, while each record's own header carries the full
/// context (`keyward:tenant`, `keyward:record`, `keyward:kind`) and is authenticated with a key
/// derived from the data key and the record's own message ID. A record moved to another tenant
/// fails to unwrap; one moved to another id or kind fails the required-context check.
public final class Vault: Sendable {
    public static let suite = AlgorithmSuite.aes256GCMHKDFSHA512CommitKey
    public let keyStores: KeyStores
    public let limits: CacheLimits
    let metrics: GatewayMetrics
    let audit: AuditLog
    /// Where a tenant's current key is read, when a sealer may be on a key since switched.
    let tenants: any TenantRepository
    private let managers = Mutex<[String: (cached: CachingMaterialsManager, direct: CountingMaterialsManager)]>([:])
    /// False while this replica may have missed another's revocation: every data key then comes
    /// from the key store, which is authoritative, instead of the cache.
    let cachesTrusted = Atomic<Bool>(true)
    /// How many times a tenant may have changed (see ``tenantsChanged()``); each sealer notes it.
    let tenantChanges = Atomic<Int>(0)

    let traces: Traces

    init(keyStores: KeyStores, limits: CacheLimits, metrics: GatewayMetrics, audit: AuditLog, tenants: any TenantRepository,
         traces: Traces = .off) {
        self.traces = traces
        self.tenants = tenants
        self.keyStores = keyStores
        self.limits = limits
        self.metrics = metrics
        self.audit = audit
    }

    /// The materials manager of one master key: cached, unless the caches are not trusted now.
    func manager(forKey key: String) throws -> any CryptographicMaterialsManager {
        let pair = try managers(forKey: key)
        return cachesTrusted.load(ordering: .relaxed) ? pair.cached : pair.direct
    }

    /// The materials manager of one master key that always asks the key store (audited and
    /// counted), for a data key that is used once (a file's).
    func uncachedManager(forKey key: String) throws -> any CryptographicMaterialsManager {
        try managers(forKey: key).direct
    }

    private func managers(forKey key: String) throws -> (cached: CachingMaterialsManager, direct: CountingMaterialsManager) {
        if let m = managers.withLock({ $0[key] }) { return m }
        let direct = CountingMaterialsManager(backing: DefaultMaterialsManager(keyring: try keyring(key)), key: key,
                                              scheme: try KeyReference.parse(key).scheme, metrics: metrics, audit: audit, traces: traces)
        let fresh = (cached: CachingMaterialsManager(backing: direct, limits: limits), direct: direct)
        return managers.withLock { all in
            if let existing = all[key] { return existing }
            all[key] = fresh
            return fresh
        }
    }

    /// The keyring of one master key, for a call outside the materials managers (a re-key's);
    /// through ``wrap(_:under:context:event:scope:)`` when the call is made for a request.
    func keyring(_ key: String) throws -> KeyStoreKeyring {
        let reference = try KeyReference.parse(key)
        return KeyStoreKeyring(store: try keyStores.store(for: reference), keyID: reference.keyID)
    }

    /// Wraps `dataKey` under `key` with `context` (a data key moved to another key, or named
    /// under another context): one key-store call, audited as `rewrap` in `scope` whether it
    /// succeeds or fails (the event names `event`'s key, record and detail), counted and traced.
    func wrap(_ dataKey: SecretBytes, under key: String, context: EncryptionContext,
              event: (key: String, record: String, detail: String), scope: AuditScope) async throws -> EncryptedDataKey {
        let direct = try managers(forKey: key).direct
        let wrapped = try await AuditScope.$current.withValue(scope) {
            try await direct.call(.rewrap, eventKey: event.key, record: event.record, detail: event.detail) {
                try await keyring(key).onEncrypt(EncryptionMaterials(suite: Self.suite, encryptionContext: context, plaintextDataKey: dataKey))
            }
        }
        guard let edk = wrapped.encryptedDataKeys.last else {
            throw KeywardCryptoError(.internalError, "the key returned no wrapped data key")
        }
        return edk
    }

    /// Obtains the data key for one exchange of `tenant`: called before any upstream call, so a
    /// disabled or unreachable key stops the request before anything leaves or is stored.
    /// - Parameter seen: when `tenant` was read (``tenantView()``, taken before the read); nil if
    ///   unknown, and then records this sealer makes are checked against the stored tenant.
    public func sealer(for tenant: Tenant, seen: TenantView? = nil, plaintextLength: Int) async throws -> RecordSealer {
        let manager = try manager(forKey: tenant.key)
        let miss = MissFlag()
        let materials = try await MissFlag.$current.withValue(miss) {
            try await manager.encryptionMaterials(for: EncryptionMaterialsRequest(
                encryptionContext: Self.scope(tenant.name), suite: Self.suite, plaintextLength: plaintextLength))
        }
        metrics.dataKeyCache("encrypt", hit: !miss.value)
        return RecordSealer(tenant: tenant, materials: materials, seen: seen)
    }

    /// Decrypts a stored record of `tenant`; nothing is returned unless it authenticates as this
    /// tenant's record with this id and kind.
    public func open(_ record: Record, of tenant: Tenant) async throws -> [UInt8] {
        try await open([record], of: tenant)[0]
    }

    /// Decrypts stored records of `tenant`, each only if it authenticates as this tenant's record
    /// with its id and kind; the metrics are counted once per read, or per half of a long one. The
    /// records of one read that share a data key (an exchange's, a cache period's) are opened with
    /// the materials the first of them got, without asking the cache again. While a re-key job
    /// moves the tenant, a record not yet re-wrapped is opened with the key it is moving from.
    public func open(_ records: [Record], of tenant: Tenant) async throws -> [[UInt8]] {
        // A long context (a deep agent turn) is opened in two halves at once, one on another core.
        guard records.count >= Self.splitReadsFrom, let other = SiblingLoop.other() else {
            return try await openInOrder(records[...], of: tenant)
        }
        let half = records.count / 2
        return try await withThrowingTaskGroup(of: [[UInt8]].self) { group in
            group.addTask(executorPreference: other) { try await self.openInOrder(records[..<half], of: tenant) }
            let second = try await openInOrder(records[half...], of: tenant)
            guard let first = try await group.next() else { throw GatewayError.internalError }
            return first + second
        }
    }

    /// The number of records from which ``open(_:of:)`` opens two halves concurrently.
    static let splitReadsFrom = 32

    private func openInOrder(_ records: ArraySlice<Record>, of tenant: Tenant) async throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(records.count)
        var managers: [String: TenantScopedManager] = [:]
        var kinds: [String: Int] = [:]
        var misses = 0
        defer {
            metrics.dataKeyCache("decrypt", hits: out.count - misses, misses: misses)
            for (kind, n) in kinds { metrics.unwrap(kind: kind, count: n) }
        }
        func opened(_ record: Record, key: String) async throws -> [UInt8] {
            let manager: TenantScopedManager
            if let m = managers[key] {
                manager = m
            } else {
                // Materials are remembered only while the cache is trusted: otherwise every data
                // key comes from the key store.
                manager = TenantScopedManager(tenant: tenant.name, inner: try self.manager(forKey: key),
                                              remembers: cachesTrusted.load(ordering: .relaxed))
                managers[key] = manager
            }
            let miss = MissFlag()
            // Header and body as stored, without joining them into one more copy.
            var source = ArraySource(parts: [record.header, record.body])
            var sink = ArraySink()
            try await MissFlag.$current.withValue(miss) {
                _ = try await Message.decrypt(from: &source, to: &sink, materialsManager: manager, options: DecryptionOptions(
                    requiredContext: RecordSealer.context(tenant: tenant.name, id: record.id, kind: record.kind), maxEncryptedDataKeys: 4))
            }
            if miss.value { misses += 1 }
            return sink.bytes
        }
        // While a re-key moves the tenant, the key that opened the last record is tried first:
        // each failed try is a key-store call and an audit event, and a context's records were
        // mostly written under one key.
        var keys = [tenant.key] + [tenant.previousKey].compactMap { $0 }.filter { $0 != tenant.key }
        for record in records {
            for (i, key) in keys.enumerated() {
                do {
                    out.append(try await opened(record, key: key))
                    if i > 0 { keys.swapAt(0, i) }
                    break
                } catch let e as KeywardCryptoError where e.code == .noDecryptableKey && i + 1 < keys.count {
                    continue
                }
            }
            kinds[record.kind, default: 0] += 1
        }
        return out
    }

    /// How a read is logged, before anything is decrypted.
    enum ReadEvents {
        /// One `decrypt_record` event per record (`id/kind`): records a client retrieves.
        case perRecord
        /// One `decrypt_record` event for the context a turn rebuilds from earlier records, which
        /// go to the upstream and not to the reader: `record` names what was continued and
        /// `detail` every id read (about 30 bytes a turn, where a per-record event was about
        /// 500 bytes a record: a 50th turn wrote 98). The anomaly detector still counts each
        /// record.
        case context(record: String, detail: String)
    }

    /// Decrypts records for a reader, after logging their `decrypt_record` events in one append:
    /// nothing is read without its event.
    func read(_ records: [Record], of tenant: Tenant, scope: AuditScope, events: ReadEvents = .perRecord) async throws -> [[UInt8]] {
        switch events {
        case .perRecord:
            try await audit.append(records.map { AuditLog.event(.decryptRecord, key: tenant.key, record: "\($0.id)/\($0.kind)", scope: scope) })
        case .context(let record, let detail):
            guard !records.isEmpty else { return [] }
            try await audit.append([AuditLog.event(.decryptRecord, key: tenant.key, record: record, detail: detail, scope: scope)],
                                   reads: records.count)
        }
        return try await AuditScope.$current.withValue(scope) { try await open(records, of: tenant) }
    }

    /// Forgets every cached data key of `key`: revocation takes effect at once (a read in
    /// progress ends with the materials it had).
    public func purge(key: String) {
        managers.withLock { $0[key] }?.cached.purge()
    }

    /// Forgets every cached data key.
    public func purgeAll() {
        for m in managers.withLock({ Array($0.values) }) { m.cached.purge() }
    }

    static func scope(_ tenant: String) -> EncryptionContext { ["keyward:tenant": tenant] }
}

/// The materials of one exchange: seals each of its records with the shared data key, each under
/// its own message ID and encryption context.
public struct RecordSealer: Sendable {
    public let tenant: Tenant
    let materials: EncryptionMaterials
    /// When its tenant was read (see ``Vault/onCurrentKey(_:sealedBy:scope:)``).
    let seen: Vault.TenantView?

    static func context(tenant: String, id: String, kind: String) -> EncryptionContext {
        ["keyward:tenant": tenant, "keyward:record": id, "keyward:kind": kind]
    }

    /// Encrypts `plaintext` as the record (`id`, `kind`) of the tenant.
    public func seal(_ plaintext: [UInt8], id: String, kind: String, createdAt: Int64, metadata: RecordMetadata) throws -> Record {
        var m = materials
        m.encryptionContext = Self.context(tenant: tenant.name, id: id, kind: kind)
        let (header, body) = try plaintext.withUnsafeBytes { try MessageEncryptor.seal($0, materials: m) }
        var meta = metadata
        meta.size = plaintext.count
        let expires = tenant.retentionDays > 0 ? createdAt + Int64(tenant.retentionDays) * 86_400_000 : nil
        return Record(tenant: tenant.name, id: id, kind: kind, createdAt: createdAt, expiresAt: expires, metadata: meta,
                      header: header, body: body)
    }
}

/// Narrows a record's context to the tenant scope for the data-key cache and the key store, after
/// checking that the record claims the expected tenant. Used for one read: it keeps the last
/// materials it got, for the next record under the same data key (so a purge or a revocation
/// takes effect from the next read: one in progress, milliseconds long, ends as it began).
final class TenantScopedManager: CryptographicMaterialsManager {
    let tenant: String
    let inner: any CryptographicMaterialsManager
    let remembers: Bool
    private let last = Mutex<(request: DecryptionMaterialsRequest, materials: DecryptionMaterials)?>(nil)

    init(tenant: String, inner: any CryptographicMaterialsManager, remembers: Bool = true) {
        self.tenant = tenant
        self.inner = inner
        self.remembers = remembers
    }

    func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials {
        throw KeywardCryptoError(.internalError, "records are sealed through RecordSealer")
    }

    func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials {
        guard request.encryptionContext["keyward:tenant"] == tenant else {
            throw KeywardCryptoError(.encryptionContextMismatch, "the record belongs to another tenant")
        }
        var scoped = request
        scoped.encryptionContext = Vault.scope(tenant)
        if let last = last.withLock({ $0 }), last.request.suite == scoped.suite, last.request.commitmentPolicy == scoped.commitmentPolicy,
           last.request.encryptedDataKeys == scoped.encryptedDataKeys {
            return last.materials
        }
        let materials = try await inner.decryptionMaterials(for: scoped)
        if remembers { last.withLock { $0 = (scoped, materials) } }
        return materials
    }
}

/// Set by ``CountingMaterialsManager`` when a lookup of the current task reached the key store.
final class MissFlag: Sendable {
    @TaskLocal static var current: MissFlag?
    private let flag = Atomic<Bool>(false)
    var value: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}

/// Sits under the cache: counts what reaches the key store and logs each call in the audit log.
/// Fails closed: no call while the audit log is failing, and a call whose event cannot be written
/// is discarded (its data key is neither cached nor used).
struct CountingMaterialsManager: CryptographicMaterialsManager {
    let backing: any CryptographicMaterialsManager
    let key: String
    /// The key store's kind (`local`, `aws-kms`, `pkcs11`), the only part of the key a span names.
    let scheme: String
    let metrics: GatewayMetrics
    let audit: AuditLog
    let traces: Traces

    func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials {
        try await call(.generateDataKey) { try await backing.encryptionMaterials(for: request) }
    }

    func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials {
        try await call(.unwrap) { try await backing.decryptionMaterials(for: request) }
    }

    /// One call to the key store: none while the audit log fails, and its event (in the current
    /// ``AuditScope``) written whether it succeeds or fails; counted and traced.
    /// - Parameters:
    ///   - eventKey: the key the event names, if not this manager's (a data key wrapped anew is
    ///     logged under the key it moves from).
    ///   - record, detail: the event's.
    func call<T>(_ operation: AuditOperation, eventKey: String? = nil, record: String? = nil, detail: String? = nil,
                 _ body: () async throws -> T) async throws -> T {
        try audit.requireAvailable()
        MissFlag.current?.set()
        let started = ContinuousClock.now
        do {
            let result = try await traces.span("keystore \(operation.rawValue)", kind: .client) { span in
                span?.attributes["keyward.keystore.scheme"] = scheme
                return try await body()
            }
            metrics.keyStoreCall(operation.rawValue, ok: true, duration: ContinuousClock.now - started)
            try await audit.append(AuditLog.event(operation, key: eventKey ?? key, record: record, detail: detail))
            return result
        } catch let e as GatewayError {
            throw e
        } catch {
            metrics.keyStoreCall(operation.rawValue, ok: false, duration: ContinuousClock.now - started)
            try await audit.append(AuditLog.event(operation, key: eventKey ?? key, record: record, result: .failure(error), detail: detail))
            throw error
        }
    }
}
