import Synchronization
import Testing
@testable import KeywardCrypto

@Suite struct MaterialsCacheTests {
    @Test func entriesExpireByAge() {
        var cache = MaterialsCache<String, Int>(limits: CacheLimits(maxAge: 10))
        cache.insert("a", value: 1, messages: 1, bytes: 0, now: 100)
        #expect(cache.useForEncryption("a", bytes: 0, now: 109.9) == 1)
        #expect(cache.useForEncryption("a", bytes: 0, now: 110) == nil)
        #expect(cache.count == 0, "an expired entry is evicted")
    }

    @Test func entriesAreUsedForAtMostMaxMessages() {
        var cache = MaterialsCache<String, Int>(limits: CacheLimits(maxAge: 100, maxMessages: 3))
        cache.insert("a", value: 1, messages: 1, bytes: 0, now: 0)
        #expect(cache.useForEncryption("a", bytes: 0, now: 1) == 1)  // message 2
        #expect(cache.useForEncryption("a", bytes: 0, now: 1) == 1)  // message 3
        #expect(cache.useForEncryption("a", bytes: 0, now: 1) == nil)  // would be message 4
    }

    @Test func entriesAreUsedForAtMostMaxBytes() {
        var cache = MaterialsCache<String, Int>(limits: CacheLimits(maxAge: 100, maxBytes: 100))
        cache.insert("a", value: 1, messages: 1, bytes: 60, now: 0)
        #expect(cache.useForEncryption("a", bytes: 40, now: 0) == 1)  // exactly 100
        #expect(cache.useForEncryption("a", bytes: 1, now: 0) == nil)
    }

    @Test func capacityEvictsTheLeastRecentlyUsed() {
        var cache = MaterialsCache<String, Int>(limits: CacheLimits(maxAge: 100, capacity: 2))
        cache.insert("a", value: 1, messages: 0, bytes: 0, now: 0)
        cache.insert("b", value: 2, messages: 0, bytes: 0, now: 0)
        _ = cache.useForDecryption("a", now: 1)
        cache.insert("c", value: 3, messages: 0, bytes: 0, now: 1)
        #expect(cache.useForDecryption("a", now: 1) == 1)
        #expect(cache.useForDecryption("b", now: 1) == nil)
        #expect(cache.useForDecryption("c", now: 1) == 3)
    }

    @Test func removeAllWherePurgesMatchingValues() {
        var cache = MaterialsCache<String, Int>(limits: CacheLimits(maxAge: 100))
        for (k, v) in [("a", 1), ("b", 2), ("c", 1)] { cache.insert(k, value: v, messages: 0, bytes: 0, now: 0) }
        cache.removeAll { $0 == 1 }
        #expect(cache.count == 1)
    }
}

@Suite struct CachingMaterialsManagerTests {
    final class Clock: Sendable {
        let t = Mutex(0.0)
        func advance(_ s: Double) { t.withLock { $0 += s } }
        var now: @Sendable () -> Double { { [self] in self.t.withLock { $0 } } }
    }

    @Test func oneKeyringCallServesManyMessagesWithinLimits() async throws {
        let counting = CountingKeyring(try aesKeyring())
        let clock = Clock()
        let manager = CachingMaterialsManager(
            backing: DefaultMaterialsManager(keyring: counting),
            limits: CacheLimits(maxAge: 60, maxMessages: 1000), now: clock.now)
        var messages: [[UInt8]] = []
        for i in 0..<2500 {
            messages.append(try await Message.encrypt([UInt8(i & 0xFF)], materialsManager: manager, context: ["t": "a"],
                                                      suite: .aes256GCMHKDFSHA512CommitKey))
        }
        #expect(counting.encryptCalls == 3, "1000 messages per data key")
        for (i, m) in messages.enumerated() {
            #expect(try await Message.decrypt(m, materialsManager: manager).plaintext == [UInt8(i & 0xFF)])
        }
        #expect(counting.decryptCalls == 3, "each distinct data key is unwrapped once")

        clock.advance(61)
        _ = try await Message.encrypt([1], materialsManager: manager, context: ["t": "a"], suite: .aes256GCMHKDFSHA512CommitKey)
        #expect(counting.encryptCalls == 4, "an aged entry is replaced")

        _ = try await Message.encrypt([1], materialsManager: manager, context: ["t": "b"], suite: .aes256GCMHKDFSHA512CommitKey)
        #expect(counting.encryptCalls == 5, "another context is another entry")

        manager.purge()
        _ = try await Message.encrypt([1], materialsManager: manager, context: ["t": "a"], suite: .aes256GCMHKDFSHA512CommitKey)
        #expect(counting.encryptCalls == 6, "purge forgets every data key")
    }

    /// A keyring whose calls run `hook` before answering: a revocation landing mid-call.
    final class HookedKeyring: Keyring {
        let inner: any Keyring
        let hook = Mutex<(@Sendable () -> Void)?>(nil)
        init(_ inner: any Keyring) { self.inner = inner }
        func onEncrypt(_ m: EncryptionMaterials) async throws -> EncryptionMaterials {
            let out = try await inner.onEncrypt(m)
            hook.withLock { $0 }?()
            return out
        }
        func onDecrypt(_ m: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials {
            let out = try await inner.onDecrypt(m, encryptedDataKeys: encryptedDataKeys)
            hook.withLock { $0 }?()
            return out
        }
    }

    @Test func materialsFetchedAcrossAPurgeAreNotCached() async throws {
        let hooked = HookedKeyring(try aesKeyring())
        let counting = CountingKeyring(hooked)
        let manager = CachingMaterialsManager(backing: DefaultMaterialsManager(keyring: counting),
                                              limits: CacheLimits(maxAge: 60, maxMessages: 1000))
        let message = try await Message.encrypt([1], materialsManager: manager, context: ["t": "a"], suite: .aes256GCMHKDFSHA512CommitKey)
        manager.purge()
        // The key is revoked (purge) while its unwrap is in flight: the answer serves this
        // message, but the next one asks the key store again.
        hooked.hook.withLock { $0 = { manager.purge() } }
        _ = try await Message.decrypt(message, materialsManager: manager)
        hooked.hook.withLock { $0 = nil }
        _ = try await Message.decrypt(message, materialsManager: manager)
        #expect(counting.decryptCalls == 2)
        _ = try await Message.decrypt(message, materialsManager: manager)
        #expect(counting.decryptCalls == 2, "cached once nothing purged meanwhile")
        // The same for a data key being generated.
        hooked.hook.withLock { $0 = { manager.purge() } }
        _ = try await Message.encrypt([1], materialsManager: manager, context: ["t": "b"], suite: .aes256GCMHKDFSHA512CommitKey)
        hooked.hook.withLock { $0 = nil }
        _ = try await Message.encrypt([1], materialsManager: manager, context: ["t": "b"], suite: .aes256GCMHKDFSHA512CommitKey)
        #expect(counting.encryptCalls == 3)
    }

    @Test func unknownLengthBypassesTheCache() async throws {
        let counting = CountingKeyring(try aesKeyring())
        let manager = CachingMaterialsManager(backing: DefaultMaterialsManager(keyring: counting), limits: CacheLimits(maxAge: 60))
        for _ in 0..<3 {
            var source = ArraySource([1, 2]), sink = ArraySink()
            try await Message.encrypt(from: &source, to: &sink, materialsManager: manager, context: [:],
                                      suite: .aes256GCMHKDFSHA512CommitKey)
        }
        #expect(counting.encryptCalls == 3)
    }

    @Test func theCachedPathStillEnforcesTheCommitmentPolicy() async throws {
        let manager = CachingMaterialsManager(backing: DefaultMaterialsManager(keyring: try aesKeyring()), limits: CacheLimits(maxAge: 60))
        let request = DecryptionMaterialsRequest(suite: .byID(0x0178)!, encryptedDataKeys: [], encryptionContext: [:])
        await expectCode(.commitmentPolicy) { _ = try await manager.decryptionMaterials(for: request) }
    }
}
