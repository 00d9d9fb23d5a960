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

    func keyStoreCalls(_ g: Gateway) -> Double {
        let text = String(decoding: g.metrics.exposition(), as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix("keyward_keystore_calls_total") }
            .compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
    }

    @Test func aReplicaThatIsNotListeningUsesNoCachedKeyAndCachesOnceItListens() async throws {
        let dir = try TemporaryDirectory()
        let (gateways, running) = try await Self.replicas(2, in: dir)
        defer { _ = running }
        let (a, b) = (gateways[0], gateways[1])
        defer { for g in gateways { Task { try? await g.upstreams.shutdown() } } }
        // The first replica's local key, in the database, is the second's too.
        let store = try a.keyStores.store(for: KeyReference(scheme: "local", keyID: "acme"))
        _ = try await store.createKey(name: "acme")
        let tenant = Tenant(name: "acme", key: "local:acme", createdAt: 0)
        try await a.store.createTenant(tenant)
        let record = try await a.vault.sealer(for: tenant, plaintextLength: 5)
            .seal(Array("hello".utf8), id: "r1", kind: "chat.request", createdAt: 0, metadata: RecordMetadata())

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
