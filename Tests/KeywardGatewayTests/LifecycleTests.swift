import Foundation
import Hummingbird
import HummingbirdTesting
import KeywardAudit
import KeywardCrypto
@testable import KeywardGateway
import KeywardKeyStores
import KeywardServer
import KeywardStorage
import KeywardTesting
import Logging
import Synchronization
import Testing

/// A gateway on a temporary folder whose local key store runs on a clock the test moves.
struct TestGateway {
    let dir: TemporaryDirectory
    let gateway: Gateway
    let clock: TestClock
    let local: LocalKeyStore

    final class TestClock: Sendable {
        private let offset = Mutex<TimeInterval>(0)
        func advance(days: Double) { offset.withLock { $0 += days * 86_400 } }
        var now: Date { Date().addingTimeInterval(offset.withLock { $0 }) }
    }

    init(cache: CacheLimits = CacheLimits(maxAge: 60, maxMessages: 100_000)) async throws {
        dir = try TemporaryDirectory()
        var configuration = GatewayConfiguration(dataFolder: dir.file("data"), cacheLimits: cache)
        configuration.rootKeyFile = nil
        let clock = TestClock()
        self.clock = clock
        try FileManager.default.createDirectory(atPath: dir.file("data/keys"), withIntermediateDirectories: true)
        local = try LocalKeyStore(folder: dir.file("data/keys"), rootKey: .fromEnvironment(keyStoreFolder: dir.file("data/keys"), rootKeyFile: nil),
                                  now: { clock.now })
        let stores = KeyStores(configuration: KeyStoreConfiguration(localFolder: dir.file("data/keys")))
        stores.install(local)
        gateway = try Gateway(configuration: configuration, logger: Logger(label: "test"), keyStores: stores)
        // Keyward's deletion dates on the same clock as the store's.
        stores.govern(by: StoredKeyStates(store: gateway.store, now: { clock.now }))
        _ = try await gateway.prepare()
    }

    /// Runs `body` with a fresh gateway, shutting its HTTP client down however `body` ends.
    static func with(cache: CacheLimits = CacheLimits(maxAge: 60, maxMessages: 100_000),
                     _ body: (TestGateway) async throws -> Void) async throws {
        let g = try await TestGateway(cache: cache)
        do { try await body(g) } catch {
            try await g.gateway.upstreams.shutdown()
            throw error
        }
        try await g.gateway.upstreams.shutdown()
    }

    /// A tenant on a new local key, with its default policy, through the admin route's logic.
    func tenant(_ name: String) async throws -> Tenant {
        _ = try await local.createKey(name: name)
        let t = Tenant(name: name, key: "local:\(name)", createdAt: 0)
        try await gateway.store.createTenant(t)
        try await gateway.policies.save(KeyPolicy(grants: [KeyPolicy.tenantDefault(name)]), forKey: t.key, scope: AuditScope(actor: "test"))
        return t
    }

    /// A new token of `role` (of `tenant`, for app tokens), stored as the admin API would.
    func token(_ role: TokenRecord.Role, tenant: String? = nil) async throws -> Secret {
        let (token, id) = Tokens.generate()
        try await gateway.store.insertToken(TokenRecord(id: id, tenant: tenant, role: role, hash: Tokens.hash(token), createdAt: 0))
        return token
    }

    /// Stores `count` exchanges (two records each) of `tenant`.
    func seed(_ tenant: Tenant, exchanges count: Int) async throws -> [Record] {
        var all: [Record] = []
        for i in 0..<count {
            let sealer = try await gateway.vault.sealer(for: tenant, plaintextLength: 10)
            let id = Tokens.identifier("chatcmpl-")
            let records = try ["chat.request", "chat.response"].map {
                try sealer.seal(Array("\(i) \($0)".utf8), id: id, kind: $0, createdAt: Gateway.nowMs(), metadata: RecordMetadata(model: "m"))
            }
            try await gateway.store.insert(records)
            all += records
        }
        return all
    }

    func distinctDataKeys(_ tenant: Tenant) async throws -> Set<[UInt8]> {
        var out = Set<[UInt8]>()
        for h in try await gateway.store.recordHeaders(tenant: tenant.name, after: nil, limit: 1_000_000) {
            let header = try h.header.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }
            out.insert(header.encryptedDataKeys[0].ciphertext)
        }
        return out
    }
}

@Suite("Key life cycle: re-key, rotation, shredding")
struct LifecycleTests {
    @Test func headerRewrapKeepsTheBodyAndChecksTheKey() async throws {
        try await TestGateway.with { g in
            let a = try await g.tenant("a")
            _ = try await g.local.createKey(name: "b")
            let record = try await g.seed(a, exchanges: 1)[0]
            let header = try record.header.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0).0 }
            let from = KeyStoreKeyring(store: g.local, keyID: "a")
            let to = KeyStoreKeyring(store: g.local, keyID: "b")
            let scope = Vault.scope("a")
            let dataKey = try await from.onDecrypt(DecryptionMaterials(suite: header.suite, encryptionContext: scope),
                                                   encryptedDataKeys: header.encryptedDataKeys).plaintextDataKey!
            let wrapped = try await to.onEncrypt(EncryptionMaterials(suite: header.suite, encryptionContext: scope, plaintextDataKey: dataKey))
            var moved = record
            moved.header = try HeaderRewrap.rewrap(record.header, dataKey: dataKey, encryptedDataKeys: wrapped.encryptedDataKeys)
            #expect(moved.header != record.header)
            #expect(try await g.gateway.vault.open(moved, of: Tenant(name: "a", key: "local:b", createdAt: 0)) == Array("0 chat.request".utf8))
            // Without a fallback, the old key no longer opens it.
            await #expect(throws: KeywardCryptoError.self) { _ = try await g.gateway.vault.open(moved, of: a) }
            // A wrong data key or an altered header is refused, nothing rewritten.
            await expectError(.commitmentMismatch, as: KeywardCryptoError.self) {
                _ = try HeaderRewrap.rewrap(record.header, dataKey: SecretBytes(randomCount: 32), encryptedDataKeys: wrapped.encryptedDataKeys)
            }
            var altered = record.header
            altered[altered.count - 1] ^= 1
            await expectError(.authenticationFailed, as: KeywardCryptoError.self) {
                _ = try HeaderRewrap.rewrap(altered, dataKey: dataKey, encryptedDataKeys: wrapped.encryptedDataKeys)
            }
        }
    }

    @Test func rekeyRewrapsEachDataKeyOnceAndTheOldKeyCanGo() async throws {
        // 50 messages per data key: 400 exchanges use 8 data keys (one sealer call is one message).
        try await TestGateway.with(cache: CacheLimits(maxAge: 600, maxMessages: 50)) { g in
            var a = try await g.tenant("a")
            _ = try await g.local.createKey(name: "b")
            let records = try await g.seed(a, exchanges: 400)
            let distinct = try await g.distinctDataKeys(a)
            #expect(distinct.count == 8)

            var job = Job(id: "job_t", tenant: "a", fromKey: "local:a", toKey: "local:b", total: Int64(records.count), createdAt: 0)
            try await g.gateway.store.createJob(job)
            job = try await g.gateway.jobRunner.run(job)
            #expect(job.status == .done)
            #expect(job.processed == 800 && job.rewrapped == 800)
            #expect(job.dataKeys == 8)
            // One rewrap event per distinct data key.
            let rewraps = try await g.gateway.store.auditEvents(AuditQuery(operation: .rewrap, limit: 100))
            #expect(rewraps.count == 8 && rewraps.allSatisfy { $0.detail == "to=local:b" && $0.tenant == "a" })
            a = try #require(try await g.gateway.store.tenant(named: "a"))
            #expect(a.key == "local:b" && a.previousKey == nil)
            // Bodies untouched, headers rewritten; the old key disabled without effect.
            try await g.local.disableKey(keyID: "a")
            g.gateway.vault.purge(key: "local:a")
            for r in records {
                let stored = try #require(try await g.gateway.store.record(tenant: "a", id: r.id, kind: r.kind))
                #expect(stored.body == r.body && stored.header != r.header)
                #expect(try await g.gateway.vault.open(stored, of: a) == (try await Self.plaintext(r, g)))
            }
        }
    }

    @Test func recordsStoredBehindTheCursorUnderTheOldKeyAreSweptAtTheEnd() async throws {
        try await TestGateway.with { g in
            let a = try await g.tenant("a")
            _ = try await g.local.createKey(name: "b")
            let records = try await g.seed(a, exchanges: 3)
            // A request that took the key before the switch stores its records after the cursor
            // passed their place: here, a job whose cursor is already past every record.
            let last = try #require(records.max { ($0.id, $0.kind) < ($1.id, $1.kind) })
            var job = Job(id: "job_s", tenant: "a", fromKey: "local:a", toKey: "local:b", total: 6, createdAt: 0)
            job.cursorID = last.id
            job.cursorKind = last.kind
            try await g.gateway.store.createJob(job)
            job = try await g.gateway.jobRunner.run(job)
            #expect(job.status == .done && job.rewrapped == 6)
            try await g.local.disableKey(keyID: "a")
            g.gateway.vault.purge(key: "local:a")
            let moved = try #require(try await g.gateway.store.tenant(named: "a"))
            for r in records {
                let stored = try #require(try await g.gateway.store.record(tenant: "a", id: r.id, kind: r.kind))
                _ = try await g.gateway.vault.open(stored, of: moved)
            }
        }
    }

    static func plaintext(_ r: Record, _ g: TestGateway) async throws -> [UInt8] {
        // The seed writes "<i> <kind>"; recover it from the record under the new key.
        let a = try #require(try await g.gateway.store.tenant(named: r.tenant))
        return try await g.gateway.vault.open(try #require(try await g.gateway.store.record(tenant: r.tenant, id: r.id, kind: r.kind)), of: a)
    }

    @Test func rotationThenRewrapUsesTheNewVersionAndOldRecordsStayReadable() async throws {
        try await TestGateway.with { g in
            let a = try await g.tenant("a")
            let before = try await g.seed(a, exchanges: 20)
            try await g.local.rotateKey(keyID: "a")
            g.gateway.vault.purge(key: "local:a")
            #expect(try await g.local.describe(keyID: "a").versions == 2)
            // Old records still open after the rotation, before any rewrap.
            for r in before { _ = try await g.gateway.vault.open(r, of: a) }
            let after = try await g.seed(a, exchanges: 5)
            var job = Job(id: "job_r", tenant: "a", fromKey: "local:a", toKey: "local:a", total: 50, createdAt: 0)
            try await g.gateway.store.createJob(job)
            job = try await g.gateway.jobRunner.run(job)
            #expect(job.status == .done && job.processed == 50)
            for r in before + after {
                let stored = try #require(try await g.gateway.store.record(tenant: "a", id: r.id, kind: r.kind))
                _ = try await g.gateway.vault.open(stored, of: a)
            }
            // Every data key is now wrapped by the same (newest) version: one distinct wrapped key per data key.
            #expect(try await g.distinctDataKeys(a).count == 2)
        }
    }

    @Test func aDestroyedKeysRecordsAreShreddedAndPurgeable() async throws {
        try await TestGateway.with { g in
            let a = try await g.tenant("a")
            let records = try await g.seed(a, exchanges: 3)
            let app = Application(router: g.gateway.router())
            let (admin, appToken, keyAdmin) = (try await g.token(.admin), try await g.token(.app, tenant: "a"), try await g.token(.keyAdmin))

            try await app.test(.router) { client in
                func call(_ method: HTTPRequest.Method, _ path: String, _ token: Secret, _ body: String? = nil) async throws -> (HTTPResponse.Status, String) {
                    try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer \(token.exposed())"],
                                             body: body.map { ByteBuffer(string: $0) }) { ($0.status, String(buffer: $0.body)) }
                }
                let read = "/v1/chat/completions/\(records[1].id)"
                #expect(try await call(.get, read, appToken).0 == .ok)
                let scheduled = try await call(.post, "/admin/v1/keys/local%3Aa/schedule-deletion", keyAdmin, #"{"days": 7}"#)
                #expect(scheduled.0 == .ok && scheduled.1.contains("pending-deletion"))
                #expect(try await call(.post, "/admin/v1/keys/local%3Aa/schedule-deletion", keyAdmin, #"{"days": 6}"#).0 == .badRequest)
                // Pending: refused as revoked; a purge is refused, the key is not gone yet.
                #expect(try await call(.get, read, appToken).1.contains("key_revoked"))
                #expect(try await call(.post, "/admin/v1/tenants/a/purge-shredded", admin).0 == .conflict)
                g.clock.advance(days: 8)
                let shredded = try await call(.get, read, appToken)
                #expect(shredded.0 == .gone && shredded.1.contains("key_destroyed"))
                // The deletion service confirms it once (the local store destroyed it itself), and a
                // cancellation then comes too late.
                await g.gateway.keyLifecycle.destroyDueKeys(now: Int64(g.clock.now.timeIntervalSince1970 * 1000))
                #expect(try await g.gateway.store.keyState(key: "local:a").map { [$0.state == .destroyed, $0.deleteAt == nil] } == [true, true])
                await g.gateway.keyLifecycle.destroyDueKeys(now: Int64(g.clock.now.timeIntervalSince1970 * 1000))
                #expect(try await call(.post, "/admin/v1/keys/local%3Aa/cancel-deletion", keyAdmin).0 != .ok)
                let purged = try await call(.post, "/admin/v1/tenants/a/purge-shredded", admin)
                #expect(purged.0 == .ok && purged.1.contains("\"deleted\":6"))
                #expect(try await call(.get, read, appToken).0 == .notFound)
            }
            let operations = try await g.gateway.store.auditEvents(AuditQuery(limit: 1000)).map(\.operation.rawValue)
            #expect(operations.contains("schedule_deletion") && operations.contains("purge_shredded"))
            #expect(operations.filter { $0 == "destroy_key" }.count == 1)
        }
    }

    /// Keyward's own revocation holds whatever the store says: the key enabled again in its store
    /// behind Keyward's back (or a store that has no disable) still refuses every tenant request,
    /// and the key's description shows both states. Enabling through Keyward lifts it.
    @Test func keywardsRevocationHoldsWhateverTheStoreSays() async throws {
        try await TestGateway.with { g in
            let a = try await g.tenant("a")
            let records = try await g.seed(a, exchanges: 1)
            let app = Application(router: g.gateway.router())
            let (appToken, keyAdmin) = (try await g.token(.app, tenant: "a"), try await g.token(.keyAdmin))
            try await app.test(.router) { client in
                func call(_ method: HTTPRequest.Method, _ path: String, _ token: Secret) async throws -> (HTTPResponse.Status, String) {
                    try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer \(token.exposed())"]) {
                        ($0.status, String(buffer: $0.body))
                    }
                }
                let read = "/v1/chat/completions/\(records[0].id)"
                #expect(try await call(.get, read, appToken).0 == .ok)
                let disabled = try await call(.post, "/admin/v1/keys/local%3Aa/disable", keyAdmin)
                #expect(disabled.0 == .ok && disabled.1.contains(#""state":"disabled""#) && !disabled.1.contains("store_state"))
                #expect(try await g.gateway.store.keyState(key: "local:a")?.state == .disabled)
                // Enabled in the store directly: Keyward still refuses, and says why.
                try await g.local.enableKey(keyID: "a")
                g.gateway.vault.purgeAll()
                let refused = try await call(.get, read, appToken)
                #expect(refused.0 == .forbidden && refused.1.contains("key_revoked"))
                let described = try await call(.get, "/admin/v1/keys/local%3Aa", keyAdmin).1
                #expect(described.contains(#""state":"disabled""#) && described.contains(#""store_state":"enabled""#))
                // Nothing was scheduled, so nothing is cancelled.
                #expect(try await call(.post, "/admin/v1/keys/local%3Aa/cancel-deletion", keyAdmin).0 == .badRequest)
                // Enabled through Keyward: served again.
                let enabled = try await call(.post, "/admin/v1/keys/local%3Aa/enable", keyAdmin)
                #expect(enabled.0 == .ok && enabled.1.contains(#""state":"enabled""#))
                #expect(try await g.gateway.store.keyState(key: "local:a") == nil)
                #expect(try await call(.get, read, appToken).0 == .ok)
            }
            let events = try await g.gateway.store.auditEvents(AuditQuery(limit: 1000)).filter { $0.key == "local:a" }.map(\.operation.rawValue)
            #expect(events.contains("disable") && events.contains("enable"))
        }
    }
}

@Suite("Anomaly detector")
struct AnomalyDetectorTests {
    let config = AnomalyDetector.Configuration(window: 60, ceiling: 500, ratio: 5, baselineWindows: 5, minimum: 20)

    /// A turn's context is one audit event for many records: each record counts.
    @Test func oneObservationCanCountManyRecords() {
        // The ceiling alone (no baseline alert: its minimum is out of reach).
        var d = AnomalyDetector(configuration: .init(window: 60, ceiling: 500, ratio: 5, baselineWindows: 5, minimum: 1_000_000))
        #expect(d.observe(principal: "tok_w", key: "k", at: 10, count: 490) == nil)
        #expect(d.observe(principal: "tok_w", key: "k", at: 11, count: 10) == nil)
        let alert = d.observe(principal: "tok_w", key: "k", at: 12, count: 98)
        #expect(alert?.reason == "ceiling" && alert?.count == 598)
    }

    @Test func aBurstRaisesExactlyOneAlertPerWindow() {
        var d = AnomalyDetector(configuration: config)
        var alerts: [AnomalyDetector.Alert] = []
        for i in 0..<1000 { if let a = d.observe(principal: "tok_x", key: "local:a", at: 10 + Double(i) * 0.01) { alerts.append(a) } }
        #expect(alerts.count == 1)
        #expect(alerts[0].subjects == ["principal:tok_x", "key:local:a"])
        #expect(alerts[0].count == 20 && alerts[0].reason == "baseline")
        // Not again within a window's length of the alert, however the burst goes on…
        for i in 0..<500 { #expect(d.observe(principal: "tok_x", key: "local:a", at: 25 + Double(i) * 0.05) == nil) }
        // … and not afterwards either once the burst is the baseline: 100 a minute is under 5 × it.
        var later = 0
        for i in 0..<100 { if d.observe(principal: "tok_x", key: "local:a", at: 200 + Double(i) * 0.5) != nil { later += 1 } }
        #expect(later == 0)
    }

    @Test func aBurstAcrossAWindowBoundaryIsSeenWhole() {
        // 15 uses either side of t = 60: no fixed minute holds 20, the sliding window does.
        var d = AnomalyDetector(configuration: config)
        var alerts = 0
        for i in 0..<30 { if d.observe(principal: "tok_y", key: "k", at: 55 + Double(i) / 3) != nil { alerts += 1 } }
        #expect(alerts == 1)
    }

    @Test func steadyTrafficAtItsBaselineNeverAlerts() {
        var d = AnomalyDetector(configuration: config)
        var alerts = 0
        for minute in 0..<30 {
            // 100 uses a minute, every minute: the first minute is a burst over an empty baseline…
            for i in 0..<100 { if d.observe(principal: "tok_s", key: "k", at: Double(minute) * 60 + Double(i) * 0.5) != nil { alerts += 1 } }
        }
        // … and only the first minute alerts.
        #expect(alerts == 1)
    }

    @Test func theCeilingAlertsEvenOverAHighBaseline() {
        var d = AnomalyDetector(configuration: AnomalyDetector.Configuration(window: 60, ceiling: 150, ratio: 100, baselineWindows: 3, minimum: 10))
        var reasons: [String] = []
        for minute in 0..<4 {
            for _ in 0..<140 { if let a = d.observe(principal: "tok_c", key: "k", at: Double(minute) * 60) { reasons.append(a.reason) } }
        }
        #expect(reasons == ["baseline"])  // the first minute, over an empty baseline (> 100 × 1)
        for _ in 0..<200 { if let a = d.observe(principal: "tok_c", key: "k", at: 300) { reasons.append(a.reason) } }
        #expect(reasons == ["baseline", "ceiling"])
    }

    @Test func principalsAndKeysAreCountedApart() {
        var d = AnomalyDetector(configuration: AnomalyDetector.Configuration(window: 60, ceiling: 50, ratio: 1000, baselineWindows: 1, minimum: 1_000_000))
        var fired: [[String]] = []
        // 30 uses by each of two tokens on one key: neither token passes 50, the key does at its 51st use.
        for i in 0..<60 {
            if let a = d.observe(principal: i % 2 == 0 ? "tok_1" : "tok_2", key: "shared", at: 0) { fired.append(a.subjects) }
        }
        #expect(fired == [["key:shared"]])
    }
}

@Suite("Key policy")
struct KeyPolicyTests {
    @Test func denyByDefaultAndGrantsByTokenTenantPurposeAndModel() throws {
        let empty = KeyPolicy()
        for purpose in Purpose.allCases { #expect(!empty.allows(tokenID: "tok_1", tenant: "acme", purpose: purpose, model: "m")) }
        let p = KeyPolicy(grants: [
            KeyPolicy.tenantDefault("acme"),
            KeyPolicy.Grant(principals: ["token:tok_9"], purposes: [.export]),
            KeyPolicy.Grant(principals: ["token:tok_7"], purposes: [.inference], models: ["gpt-4o*", "claude-3"]),
        ])
        #expect(p.allows(tokenID: "tok_1", tenant: "acme", purpose: .inference, model: "anything"))
        #expect(p.allows(tokenID: "tok_1", tenant: "acme", purpose: .retrieval, model: nil))
        #expect(!p.allows(tokenID: "tok_1", tenant: "acme", purpose: .export, model: nil))
        #expect(!p.allows(tokenID: "tok_1", tenant: "beta", purpose: .inference, model: "m"))
        #expect(p.allows(tokenID: "tok_9", tenant: nil, purpose: .export, model: nil))
        #expect(p.allows(tokenID: "tok_7", tenant: "other", purpose: .inference, model: "gpt-4o-mini"))
        #expect(p.allows(tokenID: "tok_7", tenant: "other", purpose: .inference, model: "claude-3"))
        #expect(!p.allows(tokenID: "tok_7", tenant: "other", purpose: .inference, model: "claude-3-opus"))
        #expect(!p.allows(tokenID: "tok_7", tenant: "other", purpose: .retrieval, model: nil))
    }

    @Test func policyDocumentsAreValidated() throws {
        func parse(_ s: String) throws -> KeyPolicy { try KeyPolicy.parse(Array(s.utf8)) }
        #expect(try parse(#"{"grants":[{"principals":["tenant:acme"],"purposes":["retrieval"]}]}"#).grants.count == 1)
        for bad in [
            #"{"grants":[{"principals":[],"purposes":["retrieval"]}]}"#,
            #"{"grants":[{"principals":["acme"],"purposes":["retrieval"]}]}"#,
            #"{"grants":[{"principals":["tenant:acme"],"purposes":["training"]}]}"#,
            #"{"grants":[{"principals":["tenant:acme"],"purposes":["inference"],"models":[]}]}"#,
            #"{"grant":[]}"#,
        ] {
            #expect(throws: GatewayError.self) { _ = try parse(bad) }
        }
    }
}
