import KeywardAudit
import KeywardCrypto
import Foundation
@testable import KeywardGateway
import KeywardKeyStores
@testable import KeywardPostgres
import KeywardServer
import KeywardStorage
import KeywardTesting
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// Two gateways on one PostgreSQL database, as two replicas would be (KEYWARD_TEST_DATABASE_URL,
/// which the README test command sets; without it these fail, saying so).
@Suite("Replica caches")
struct ReplicaCacheTests {
    /// `n` prepared gateways on one new database, and what keeps their storage running.
    static func replicas(_ n: Int, in dir: TemporaryDirectory) async throws -> ([Gateway], [RunningServices]) {
        let database = try await TestDatabase.create()
        let url = "postgres://\(database.user)@\(database.host):\(database.port)/\(database.database)?sslmode=\(database.sslMode)"
        var out: [Gateway] = []
        var running: [RunningServices] = []
        for i in 0..<n {
            var c = GatewayConfiguration(dataFolder: dir.file("replica\(i)"))
            c.databaseURL = Secret(url)
            c.rootKeyFile = dir.file("root.key")
            let g = try Gateway(configuration: c, logger: Logger(label: "test"))
            running.append(RunningServices(g.storageServices))  // a store runs once: from now until the caller releases it
            _ = try await g.prepare()
            out.append(g)
        }
        return (out, running)
    }

    /// Runs `body` with two replicas on one new database, and stops them after.
    static func withTwoReplicas(_ body: (Gateway, Gateway) async throws -> Void) async throws {
        let dir = try TemporaryDirectory()
        let (gateways, running) = try await replicas(2, in: dir)
        defer {
            _ = running
            for g in gateways { Task { try? await g.upstreams.shutdown() } }
        }
        try await body(gateways[0], gateways[1])
    }

    /// A tenant `acme` on a new local key of `g` (in the database: every replica's), and a record of it.
    static func tenantWithRecord(on g: Gateway) async throws -> (store: any KeyStore, tenant: Tenant, record: Record) {
        let store = try g.keyStores.store(for: KeyReference(scheme: "local", keyID: "acme"))
        _ = try await store.createKey(name: "acme")
        let tenant = Tenant(name: "acme", key: "local:acme", createdAt: 0)
        try await g.store.createTenant(tenant)
        let record = try await g.vault.sealer(for: tenant, plaintextLength: 5)
            .seal(Array("hello".utf8), id: "r1", kind: "chat.request", createdAt: 0, metadata: RecordMetadata())
        return (store, tenant, record)
    }

    func keyStoreCalls(_ g: Gateway) -> Double {
        let text = String(decoding: g.metrics.exposition(), as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix("keyward_keystore_calls_total") }
            .compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
    }

    @Test func aReplicaThatIsNotListeningUsesNoCachedKeyAndCachesOnceItListens() async throws {
        try await Self.withTwoReplicas { a, b in
            // The first replica's local key, in the database, is the second's too.
            let (store, tenant, record) = try await Self.tenantWithRecord(on: a)

            // b has not listened yet: it may have missed a revocation, so every open asks the key store.
            #expect(!b.cachesAreTrusted)
            for _ in 0..<3 { #expect(try await b.vault.open(record, of: tenant) == Array("hello".utf8)) }
            #expect(keyStoreCalls(b) == 3)

            let feed = Task { await b.followChanges() }
            defer { feed.cancel() }
            for _ in 0..<500 where !b.cachesAreTrusted { try await Task.sleep(for: .milliseconds(10)) }
            #expect(b.cachesAreTrusted)
            for _ in 0..<3 { _ = try await b.vault.open(record, of: tenant) }
            #expect(keyStoreCalls(b) == 4)  // one miss, then the cache

            // A revocation through a reaches b's cache through the feed.
            let following = Task { await a.followChanges() }
            defer { following.cancel() }
            try await store.disableKey(keyID: "acme")
            // Unannounced, the change is not seen by b's cache (until its maximum age)...
            #expect(try await b.vault.open(record, of: tenant) == Array("hello".utf8))
            // ...announced, it is.
            await a.changed(.key("local:acme"))
            var refused = false
            for _ in 0..<100 where !refused {
                do { _ = try await b.vault.open(record, of: tenant) } catch { refused = true }
                if !refused { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(refused)
            feed.cancel()
            _ = await feed.value
            #expect(!b.cachesAreTrusted)  // stopped listening: trusts nothing again
        }
    }

    /// Keyward's own revocation, written by one replica, holds on the other at once, even with the
    /// key enabled again in its store behind Keyward's back; enabling through Keyward lifts it.
    @Test func keywardsRevocationHoldsOnEveryReplica() async throws {
        try await Self.withTwoReplicas { a, b in
            let (store, tenant, record) = try await Self.tenantWithRecord(on: a)
            #expect(try await b.vault.open(record, of: tenant) == Array("hello".utf8))

            _ = try await a.keyLifecycle.change(.disable, key: "local:acme", actor: "test")
            try await store.enableKey(keyID: "acme")  // behind Keyward's back
            // b was not told (it follows no feed here): its cache is not trusted, so it asks the
            // store, through Keyward's state in the shared database.
            await expectError(.keyDisabled, as: KeyStoreError.self) { _ = try await b.vault.open(record, of: tenant) }
            #expect(try await b.keyLifecycle.describe(KeyReference(scheme: "local", keyID: "acme"), "local:acme").storeState == .enabled)
            _ = try await b.keyLifecycle.change(.enable, key: "local:acme", actor: "test")
            #expect(try await a.vault.open(record, of: tenant) == Array("hello".utf8))
        }
    }

    /// Two replicas' deletion services find the same keys due at once: each is destroyed in its
    /// store once, and logged once.
    @Test func aKeyDueForDeletionIsDestroyedOnceByTwoReplicas() async throws {
        try await Self.withTwoReplicas { a, b in
            // The replicas' local store (in the shared database), declared to destroy at once and
            // counting the calls: the claim is under test here; real stores that destroy at once
            // (OpenBao, PyKMIP) are in tests/gateway/test_remote_key_stores.py.
            let counting = CountingImmediateStore(inner: try a.keyStores.store(for: KeyReference(scheme: "local", keyID: "x")))
            a.keyStores.install(counting)
            b.keyStores.install(counting)
            for i in 0..<20 {
                _ = try await counting.createKey(name: "k\(i)")
                _ = try await a.keyLifecycle.change(.scheduleDeletion(days: 7), key: "local:k\(i)", actor: "test")
            }
            let later = Gateway.nowMs() + 8 * 86_400_000
            async let first: Void = a.keyLifecycle.destroyDueKeys(now: later)
            async let second: Void = b.keyLifecycle.destroyDueKeys(now: later)
            _ = await (first, second)
            #expect(counting.destroyed.withLock { $0.sorted() } == (0..<20).map { "k\($0)" }.sorted())
            let events = try await a.store.auditEvents(AuditQuery(limit: 10_000)).filter { $0.operation == .destroyKey }
            #expect(events.count == 20 && Set(events.compactMap(\.key)).count == 20)
            #expect(try await a.store.keyStates().allSatisfy { $0.state == .destroyed && $0.deleteAt == nil })
            // Later rounds find nothing left to do.
            await a.keyLifecycle.destroyDueKeys(now: later + KeyLifecycle.deletionLease * 2)
            #expect(counting.destroyed.withLock { $0.count } == 20)
        }
    }
}

/// The store `inner`, but saying it destroys at once, and recording each destruction asked of it
/// instead of destroying.
final class CountingImmediateStore: ForwardingKeyStore {
    let inner: any KeyStore
    let destroyed = Mutex<[String]>([])
    init(inner: any KeyStore) { self.inner = inner }

    var deletion: KeyDeletion { .immediate }
    func destroyKey(keyID: String) async throws { destroyed.withLock { $0.append(keyID) } }
}
