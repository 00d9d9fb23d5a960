import Synchronization

/// Reuses data keys across messages within ``CacheLimits``, so that a key store is asked once per
/// many messages. Suites without key derivation are never cached (reusing their data key would
/// reuse the content key itself), nor are requests of unknown or over-limit plaintext length.
public final class CachingMaterialsManager: CryptographicMaterialsManager {
    struct EncryptKey: Hashable { let suiteID: UInt16?; let context: EncryptionContext; let policy: CommitmentPolicy }
    struct DecryptKey: Hashable { let suiteID: UInt16; let keys: Set<EncryptedDataKey>; let context: EncryptionContext }

    public let backing: any CryptographicMaterialsManager
    private let encryptCache: Mutex<MaterialsCache<EncryptKey, EncryptionMaterials>>
    private let decryptCache: Mutex<MaterialsCache<DecryptKey, DecryptionMaterials>>
    private let now: @Sendable () -> Double
    /// Moves on every purge: materials fetched across a purge are used once but not cached, or a
    /// key-store call that was in flight when a key was revoked would refill the cache after it.
    private let generation = Atomic<UInt64>(0)

    /// - Parameter now: a monotonic clock in seconds; injectable for tests.
    public init(backing: any CryptographicMaterialsManager, limits: CacheLimits,
                now: @escaping @Sendable () -> Double = CachingMaterialsManager.monotonicSeconds) {
        self.backing = backing
        self.encryptCache = Mutex(MaterialsCache(limits: limits))
        self.decryptCache = Mutex(MaterialsCache(limits: limits))
        self.now = now
    }

    public static let monotonicSeconds: @Sendable () -> Double = {
        let d = ContinuousClock.now - processStart
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    public func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials {
        let limits = encryptCache.withLock { $0.limits }
        guard let length = request.plaintextLength, UInt64(length) <= limits.maxBytes,
              request.suite.map({ $0.kdf != .identity }) ?? true else {
            return try await backing.encryptionMaterials(for: request)
        }
        let key = EncryptKey(suiteID: request.suite?.id, context: request.encryptionContext, policy: request.commitmentPolicy)
        let t = now()
        if let hit = encryptCache.withLock({ $0.useForEncryption(key, bytes: UInt64(length), now: t) }) {
            return hit
        }
        let before = generation.load(ordering: .acquiring)
        let fresh = try await backing.encryptionMaterials(for: request)
        if fresh.suite.kdf != .identity, generation.load(ordering: .acquiring) == before {
            encryptCache.withLock { $0.insert(key, value: fresh, messages: 1, bytes: UInt64(length), now: t) }
        }
        return fresh
    }

    public func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials {
        // The policy is checked on every call, cached or not.
        try request.commitmentPolicy.checkDecrypt(request.suite)
        guard request.suite.kdf != .identity else { return try await backing.decryptionMaterials(for: request) }
        let key = DecryptKey(suiteID: request.suite.id, keys: Set(request.encryptedDataKeys), context: request.encryptionContext)
        let t = now()
        if let hit = decryptCache.withLock({ $0.useForDecryption(key, now: t) }) { return hit }
        let before = generation.load(ordering: .acquiring)
        let fresh = try await backing.decryptionMaterials(for: request)
        if generation.load(ordering: .acquiring) == before {
            decryptCache.withLock { $0.insert(key, value: fresh, messages: 0, bytes: 0, now: t) }
        }
        return fresh
    }

    /// Forgets every cached data key at once (revocation).
    public func purge() {
        generation.add(1, ordering: .releasing)
        encryptCache.withLock { $0.removeAll { _ in true } }
        decryptCache.withLock { $0.removeAll { _ in true } }
    }
}

private let processStart = ContinuousClock.now
