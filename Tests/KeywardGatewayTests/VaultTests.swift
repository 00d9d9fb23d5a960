import Foundation
import KeywardAudit
import KeywardCrypto
@testable import KeywardGateway
import KeywardKeyStores
import KeywardStorage
import KeywardTesting
import Logging
import Synchronization
import Testing

@Suite("Vault: records under the tenant's key")
struct VaultTests {
    let dir: TemporaryDirectory
    let vault: Vault
    let metrics = GatewayMetrics()
    let store: SQLiteRecordStore

    init() async throws {
        dir = try TemporaryDirectory()
        let stores = KeyStores(configuration: KeyStoreConfiguration(localFolder: dir.file("keys")))
        for name in ["a", "b"] {
            _ = try await stores.store(for: KeyReference(scheme: "local", keyID: "")).createKey(name: name)
        }
        store = try SQLiteRecordStore(path: ":memory:")
        try await store.migrate()
        let audit = AuditLog(store: store, metrics: metrics, logger: Logger(label: "test"), alerts: AlertCenter(configuration: .init()))
        vault = Vault(keyStores: stores, limits: CacheLimits(maxAge: 60, maxMessages: 100_000), metrics: metrics, audit: audit, tenants: store)
    }

    func tenant(_ name: String) -> Tenant { Tenant(name: name, key: "local:\(name)", createdAt: 0) }

    /// The value of one metric line, e.g. `keyward_keystore_calls_total{operation="decrypt",result="ok"}`.
    func metric(_ prefix: String) -> Double {
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix(prefix) }.compactMap { Double($0.split(separator: " ").last!) }.reduce(0, +)
    }

    @Test func sealsAsAnESDKMessageAndOpens() async throws {
        let sealer = try await vault.sealer(for: tenant("a"), plaintextLength: 5)
        let record = try sealer.seal(Array("hello".utf8), id: "r1", kind: "chat.request", createdAt: 1000, metadata: RecordMetadata(model: "m"))
        #expect(record.expiresAt == Int64(1000 + 30 * 86_400_000))
        #expect(record.metadata.size == 5)
        let (header, length) = try record.header.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0) }
        #expect(length == record.header.count)
        #expect(header.suite == Vault.suite)
        #expect(header.encryptionContext == ["keyward:tenant": "a", "keyward:record": "r1", "keyward:kind": "chat.request"])
        #expect(try await vault.open(record, of: tenant("a")) == Array("hello".utf8))
    }

    @Test func recordsSealedBeforeAKeySwitchAreWrittenOnTheNewKey() async throws {
        try await store.createTenant(tenant("a"))
        let scope = AuditScope(actor: "tok_1", tenant: "a", requestID: "req", purpose: nil)
        func keyIDs(_ r: Record) throws -> [String] {
            try HeaderRewrap.parse(r.header).encryptedDataKeys.map { String(decoding: $0.providerInfo, as: UTF8.self) }
        }
        func sealed(_ sealer: RecordSealer) throws -> [Record] {
            try ["r1", "r2"].map { try sealer.seal(Array("hello \($0)".utf8), id: $0, kind: "chat.request", createdAt: 0, metadata: RecordMetadata()) }
        }
        // Read just now, with no change since: as sealed. (The store's tenant is on another key
        // below; only a read of it would move the records.)
        let seen = vault.tenantView()
        let before = try await vault.sealer(for: tenant("a"), seen: seen, plaintextLength: 5)
        let records = try sealed(before)
        var switched = tenant("a")
        switched.key = "local:b"
        try await store.updateTenantKeys(switched)
        #expect(try await vault.onCurrentKey(records, sealedBy: before, scope: scope) == (records, "local:a"))
        // The re-key's change notice came: its records go on b, bodies untouched, the key named.
        vault.tenantsChanged()
        let (moved, key) = try await vault.onCurrentKey(records, sealedBy: before, scope: scope)
        #expect(key == "local:b" && moved.map(\.body) == records.map(\.body))
        #expect(try moved.map(keyIDs) == [["b"], ["b"]] && records.map(keyIDs) == [["a"], ["a"]])
        #expect(try await vault.open(moved, of: switched) == [Array("hello r1".utf8), Array("hello r2".utf8)])
        // A tenant read before the notice and a sealer made after it (a cached principal): moved too.
        let late = try await vault.sealer(for: tenant("a"), seen: seen, plaintextLength: 0)
        #expect(try await vault.onCurrentKey(try sealed(late), sealedBy: late, scope: scope).key == "local:b")
        // Not knowing when the tenant was read: the store says.
        let unknown = try await vault.sealer(for: tenant("a"), plaintextLength: 0)
        #expect(try await vault.onCurrentKey(try sealed(unknown), sealedBy: unknown, scope: scope).key == "local:b")
        // A sealer made on the current key after the notice: as sealed.
        let after = try await vault.sealer(for: switched, seen: vault.tenantView(), plaintextLength: 0)
        let fresh = try sealed(after)
        #expect(try await vault.onCurrentKey(fresh, sealedBy: after, scope: scope) == (fresh, "local:b"))
        // A key store that refuses: the error, and its event.
        switched.key = "local:missing"
        try await store.updateTenantKeys(switched)
        vault.tenantsChanged()
        await #expect(throws: (any Error).self) { _ = try await vault.onCurrentKey(records, sealedBy: before, scope: scope) }
        let rewraps = try await store.auditEvents(AuditQuery(operation: .rewrap))
        #expect(rewraps.map { "\($0.actor) \($0.key ?? "") \($0.record ?? "") \($0.detail ?? "") \($0.result.rawValue.prefix(6))" } == [
            "tok_1 local:a r1 to=local:b ok", "tok_1 local:a r1 to=local:b ok", "tok_1 local:a r1 to=local:b ok",
            "tok_1 local:a r1 to=local:missing error:",
        ])
    }

    @Test func aRecordMovedToAnotherTenantIDOrKindDoesNotOpen() async throws {
        let sealer = try await vault.sealer(for: tenant("a"), plaintextLength: 5)
        let record = try sealer.seal(Array("hello".utf8), id: "r1", kind: "chat.request", createdAt: 0, metadata: RecordMetadata())
        var moved = record
        moved.tenant = "b"
        await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) { _ = try await vault.open(moved, of: tenant("b")) }
        moved = record
        moved.id = "r2"
        await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) { _ = try await vault.open(moved, of: tenant("a")) }
        moved = record
        moved.kind = "chat.response"
        await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) { _ = try await vault.open(moved, of: tenant("a")) }
        // Tenant b's key cannot unwrap a's data key even when asked as if it were a's tenant name.
        let imposter = Tenant(name: "a", key: "local:b", createdAt: 0)
        await #expect(throws: (any Error).self) { _ = try await vault.open(record, of: imposter) }
        var flipped = record
        flipped.body[flipped.body.count - 1] ^= 1
        await expectError(.authenticationFailed, as: KeywardCryptoError.self) { _ = try await vault.open(flipped, of: tenant("a")) }
    }

    @Test func oneKeyStoreCallServesThousandsOfRequests() async throws {
        var records: [Record] = []
        for i in 0..<2000 {
            let sealer = try await vault.sealer(for: tenant("a"), plaintextLength: 100)
            records.append(try sealer.seal(Array(repeating: 7, count: 100), id: "r\(i)", kind: "k", createdAt: 0, metadata: RecordMetadata()))
        }
        for r in records.prefix(500) { _ = try await vault.open(r, of: tenant("a")) }
        #expect(metric("keyward_keystore_calls_total{operation=\"generate_data_key\"") == 1)
        #expect(metric("keyward_keystore_calls_total{operation=\"unwrap\"") == 1)
        #expect(metric("keyward_datakey_cache_total{direction=\"encrypt\",result=\"hit\"}") == 1999)
        #expect(metric("keyward_datakey_cache_total{direction=\"decrypt\",result=\"miss\"}") == 1)
        // Each key-store call is one audit event, with the key it used.
        let events = try await store.auditEvents(AuditQuery(limit: 100))
        #expect(events.map(\.operation.rawValue) == ["generate_data_key", "unwrap"])
        #expect(events.allSatisfy { $0.key == "local:a" && $0.result == .ok })
    }

    /// A long read (two halves at once, each remembering its last data key's materials) returns
    /// every record in order across a change of data key, a re-key's previous key included, and
    /// refuses the whole read for one record moved or of another tenant.
    @Test func aLongReadOpensEveryRecordInOrderAcrossDataKeys() async throws {
        let a = tenant("a")
        var records: [Record] = []
        for i in 0..<(Vault.splitReadsFrom * 3) {
            // A new data key at 20 (inside the first half) and at 70 (inside the second).
            if i == 20 || i == 70 { vault.purge(key: "local:a") }
            let sealer = try await vault.sealer(for: a, plaintextLength: 10)
            records.append(try sealer.seal(Array("record \(i)".utf8), id: "r\(i)", kind: i.isMultiple(of: 2) ? "response" : "response.input",
                                           createdAt: 0, metadata: RecordMetadata()))
        }
        // From 80 on, sealed under key b: a tenant moving from a to b reads both.
        for i in 80..<records.count {
            let sealer = try await vault.sealer(for: Tenant(name: "a", key: "local:b", createdAt: 0), plaintextLength: 10)
            records[i] = try sealer.seal(Array("record \(i)".utf8), id: "r\(i)", kind: records[i].kind, createdAt: 0, metadata: RecordMetadata())
        }
        let moving = Tenant(name: "a", key: "local:b", createdAt: 0, previousKey: "local:a")
        let opened = try await vault.open(records, of: moving)
        #expect(opened == (0..<records.count).map { Array("record \($0)".utf8) })
        // Short reads (one half) give the same.
        #expect(try await vault.open(Array(records[15...30]), of: moving) == (15...30).map { Array("record \($0)".utf8) })
        // While moving, the key that opened the last record is tried first: a failed try is a
        // key-store call and an audit event, once per change of key in each half, not per record.
        let failedTries = try await store.auditEvents(AuditQuery(limit: 10_000)).filter { $0.result.rawValue == "error:no_decryptable_key" }
        #expect(failedTries.count <= 4, "\(failedTries.count) failed tries")
        await expectError(.noDecryptableKey, as: KeywardCryptoError.self) { _ = try await vault.open(records, of: a) }  // b's records need b
        for bad in [5, 60] {
            var moved = records
            moved[bad].id = "elsewhere"
            await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) { _ = try await vault.open(moved, of: moving) }
            // Tenant b's record of the same id and kind, among a's.
            let sealer = try await vault.sealer(for: tenant("b"), plaintextLength: 10)
            moved = records
            moved[bad] = try sealer.seal(Array("record \(bad)".utf8), id: records[bad].id, kind: records[bad].kind, createdAt: 0, metadata: RecordMetadata())
            await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) { _ = try await vault.open(moved, of: moving) }
        }
    }

    /// Within one read, the materials of the last data key serve the next record under the same
    /// data key; another data key, or a manager told not to remember (caches not trusted), asks
    /// the manager below.
    @Test func aReadRemembersTheLastDataKeysMaterialsOnly() async throws {
        final class Counting: CryptographicMaterialsManager {
            let calls = Mutex(0)
            func encryptionMaterials(for request: EncryptionMaterialsRequest) async throws -> EncryptionMaterials {
                throw KeywardCryptoError(.internalError, "unused")
            }
            func decryptionMaterials(for request: DecryptionMaterialsRequest) async throws -> DecryptionMaterials {
                calls.withLock { $0 += 1 }
                return DecryptionMaterials(suite: request.suite, encryptionContext: request.encryptionContext,
                                           plaintextDataKey: SecretBytes(copying: request.encryptedDataKeys[0].ciphertext.prefix(32)))
            }
        }
        func request(_ edk: UInt8, record: String) -> DecryptionMaterialsRequest {
            DecryptionMaterialsRequest(suite: Vault.suite, encryptedDataKeys: [EncryptedDataKey(providerID: Array("p".utf8), providerInfo: [1],
                                                                                                ciphertext: Array(repeating: edk, count: 32))],
                                       encryptionContext: ["keyward:tenant": "a", "keyward:record": record, "keyward:kind": "k"])
        }
        for remembers in [true, false] {
            let inner = Counting()
            let manager = TenantScopedManager(tenant: "a", inner: inner, remembers: remembers)
            for (edk, record) in [(1, "r1"), (1, "r2"), (1, "r3"), (2, "r4"), (2, "r5"), (1, "r6")] as [(UInt8, String)] {
                let m = try await manager.decryptionMaterials(for: request(edk, record: record))
                #expect(m.plaintextDataKey?.withUnsafeBytes { Array($0) } == Array(repeating: edk, count: 32))
            }
            #expect(inner.calls.withLock { $0 } == (remembers ? 3 : 6))
            await expectError(.encryptionContextMismatch, as: KeywardCryptoError.self) {
                var other = request(1, record: "r7")
                other.encryptionContext = ["keyward:tenant": "b", "keyward:record": "r7", "keyward:kind": "k"]
                _ = try await manager.decryptionMaterials(for: other)
            }
        }
    }

    /// While the caches are not trusted (a replica that may have missed a revocation), every
    /// record's data key comes from the key store, within one read too.
    @Test func untrustedCachesRememberNothing() async throws {
        let sealer = try await vault.sealer(for: tenant("a"), plaintextLength: 1)
        let records = try (0..<40).map { try sealer.seal([UInt8($0)], id: "u\($0)", kind: "k", createdAt: 0, metadata: RecordMetadata()) }
        vault.cachesTrusted.store(false, ordering: .relaxed)
        #expect(try await vault.open(records, of: tenant("a")) == (0..<40).map { [UInt8($0)] })
        #expect(try await store.auditEvents(AuditQuery(limit: 1000)).filter { $0.operation == .unwrap }.count == 40)
    }

    @Test func disablingAndPurgingStopsUseAtOnce() async throws {
        let sealer = try await vault.sealer(for: tenant("b"), plaintextLength: 1)
        let record = try sealer.seal([1], id: "r", kind: "k", createdAt: 0, metadata: RecordMetadata())
        _ = try await vault.open(record, of: tenant("b"))
        let store = try vault.keyStores.store(for: KeyReference(scheme: "local", keyID: "b"))
        try await store.disableKey(keyID: "b")
        // Cached: still usable until purged, which is why the admin route purges.
        _ = try await vault.sealer(for: tenant("b"), plaintextLength: 1)
        vault.purge(key: "local:b")
        await expectError(.keyDisabled, as: KeyStoreError.self) { _ = try await vault.sealer(for: tenant("b"), plaintextLength: 1) }
        await expectError(.keyDisabled, as: KeyStoreError.self) { _ = try await vault.open(record, of: tenant("b")) }
        // Refusals are logged too.
        let refused = try await self.store.auditEvents(AuditQuery(limit: 100)).filter { $0.result.rawValue == "error:key_disabled" }
        #expect(refused.map(\.operation.rawValue) == ["generate_data_key", "unwrap"])
        #expect(GatewayError.from(KeyStoreError(.keyDisabled, "x")).code == "key_revoked")
        #expect(GatewayError.from(KeyStoreError(.keyUnavailable, "x")).status == .serviceUnavailable)
    }

    @Test func configurationFileAndEnvironment() throws {
        let path = dir.file("config.json")
        try Data(#"{"upstreams":[{"name":"o","type":"openai-compatible","url":"http://x/v1/","api_key_env":"K","models":["gpt-*"]},{"name":"c","type":"anthropic","url":"https://a","models":["claude-3"]}],"body_limit":1024}"#.utf8)
            .write(to: URL(fileURLWithPath: path))
        let c = try GatewayConfiguration.load(dataFolder: "d", listen: "0.0.0.0:9", configFile: path,
                                              environment: ["K": "sk", "KEYWARD_UPSTREAM_URL": "http://fallback/v1"])
        #expect(c.upstream(for: "gpt-4o")?.name == "o")
        #expect(c.upstream(for: "gpt-4o")?.url == "http://x/v1")
        #expect(c.upstream(for: "claude-3")?.kind == .anthropic)
        #expect(c.upstream(for: "claude-3.5")?.name == "default")
        #expect(c.bodyLimit == 1024 && c.host == "0.0.0.0" && c.port == 9 && c.dataFolder == "d")
        #expect("\(c.upstreams[0].apiKey!)" == "<redacted>")
        var dumped = ""
        dump(c.upstreams[0], to: &dumped)
        #expect(!dumped.contains("\"sk\""), "the provider key shows through reflection: \(dumped)")
        #expect(throws: GatewayError.self) { try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: path, environment: [:]) }
        #expect(throws: GatewayError.self) { try GatewayConfiguration.load(dataFolder: nil, listen: "nope", configFile: nil, environment: [:]) }
    }

    @Test func tlsFromTheConfigFileAndTheCommandLineAndTheListenersLimits() throws {
        let path = dir.file("tls.json")
        try Data(#"{"tls":{"key_file":"k.pem","client_ca_file":"ca.pem","client_certificates":"admin"},"listener":{"max_connections_per_address":0}}"#.utf8)
            .write(to: URL(fileURLWithPath: path))
        // The certificate from the command line, the rest from the file.
        let c = try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: path, tlsCertificate: "c.pem", environment: [:])
        #expect(c.tls == TLSSettings(certificateFile: "c.pem", keyFile: "k.pem", clientCAFile: "ca.pem", clientCertificates: .admin))
        #expect(c.listener.maxConnectionsPerAddress == 0 && c.listener.idleTimeoutSeconds == 30)
        // A key without its certificate, or the reverse, is refused; no TLS setting at all is plain HTTP.
        #expect(throws: GatewayError.self) { try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: path, environment: [:]) }
        #expect(throws: GatewayError.self) {
            try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: nil, tlsCertificate: "c.pem", environment: [:])
        }
        #expect(try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: nil, environment: [:]).tls == nil)
        // Client certificates asked for without the CA that signs them: an error, not silently none.
        try Data(#"{"tls":{"cert_file":"c.pem","key_file":"k.pem","client_certificates":"admin"}}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: GatewayError.self) { try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: path, environment: [:]) }
        try Data(#"{"listener":{"max_header_count":3}}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: GatewayError.self) { try GatewayConfiguration.load(dataFolder: nil, listen: nil, configFile: path, environment: [:]) }
    }
}
