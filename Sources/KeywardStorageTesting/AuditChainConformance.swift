import Crypto
import KeywardAudit
import KeywardStorage
import KeywardTesting
import Testing

/// What every record store does with the audit chain and the key life cycle's data, whatever its
/// engine. Run on SQLite by KeywardStorageTests and on PostgreSQL by KeywardPostgresTests.
public enum AuditChainConformance {
    public static let cases: [StoreConformanceCase] = [
        StoreConformanceCase("concurrentAppendsFormOneVerifiableChain", concurrentAppendsFormOneVerifiableChain),
        StoreConformanceCase("twoWritersOnOneDatabaseFormOneChain", twoWritersOnOneDatabaseFormOneChain),
        StoreConformanceCase("aFailedInsertAppendsNoEventAndTheChainContinues", aFailedInsertAppendsNoEventAndTheChainContinues),
        StoreConformanceCase("auditQueriesFilter", auditQueriesFilter),
        StoreConformanceCase("jobsHeadersPoliciesAndSuspension", jobsHeadersPoliciesAndSuspension),
    ]

    private static func checkpoint(_ store: any RecordStore, signedWith signing: Curve25519.Signing.PrivateKey) async throws {
        let head = try await store.auditHead()
        let bytes = AuditCheckpoint.signedBytes(seq: head.seq, hash: head.hash, time: 5)
        try await store.insertCheckpoint(AuditCheckpoint(seq: head.seq, hash: head.hash, time: 5,
                                                         publicKey: Array(signing.publicKey.rawRepresentation),
                                                         signature: Array(try signing.signature(for: bytes))))
    }

    private static func concurrentAppendsFormOneVerifiableChain(_ engine: any StoreEngine) async throws {
        let signing = Curve25519.Signing.PrivateKey()
        let (store, _dir) = try await engine.make(); _ = _dir
        #expect(try await store.auditHead().seq == 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    if i % 3 == 0 {
                        // Records and their events together, as the gateway stores an exchange.
                        try await store.createTenant(Tenant(name: "t\(i)", key: "local:k", createdAt: 0))
                        let r = Record(tenant: "t\(i)", id: "x", kind: "k", createdAt: 0, expiresAt: nil, metadata: RecordMetadata(),
                                       header: [1], body: [2])
                        let appended = try await store.insert([r], audit: [event(i), event(i)])
                        #expect(appended.count == 2 && appended[1].seq == appended[0].seq + 1)
                    } else {
                        try await store.appendAudit([event(i)])
                    }
                }
            }
            try await group.waitForAll()
        }
        let all = try await store.auditEvents(AuditQuery(limit: 1000))
        #expect(all.count == 267)
        #expect(all.map(\.seq) == Array(1...267))
        try await checkpoint(store, signedWith: signing)
        let result = try await AuditVerifier.verify(store, trustedKeys: [Array(signing.publicKey.rawRepresentation)])
        #expect(result.events == 267 && result.signedThrough == 267)
        // An untrusted key's checkpoint is refused.
        await #expect(throws: AuditVerifier.Failure.self) {
            _ = try await AuditVerifier.verify(store, trustedKeys: [Array(Curve25519.Signing.PrivateKey().publicKey.rawRepresentation)])
        }
    }

    private static func twoWritersOnOneDatabaseFormOneChain(_ engine: any StoreEngine) async throws {
        let (first, keep) = try await engine.make(); _ = keep
        let (second, keepSecond) = try engine.reopen(first); _ = keepSecond
        // Each writer's idea of the head goes stale as the other appends.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (n, store) in [first, second].enumerated() {
                group.addTask {
                    for i in 0..<100 { try await store.appendAudit([event(n * 1000 + i)]) }
                }
            }
            try await group.waitForAll()
        }
        let all = try await first.auditEvents(AuditQuery(limit: 1000))
        #expect(all.map(\.seq) == Array(1...200))
        #expect(try await AuditVerifier.verify(second, trustedKeys: []).events == 200)
    }

    private static func aFailedInsertAppendsNoEventAndTheChainContinues(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.appendAudit([event(1)])
        // The record refers to no tenant: the transaction fails, its event with it.
        let orphan = Record(tenant: "nobody", id: "x", kind: "k", createdAt: 0, expiresAt: nil, metadata: RecordMetadata(), header: [1], body: [2])
        await #expect(throws: StorageError.self) { try await store.insert([orphan], audit: [event(2)]) }
        try await store.appendAudit([event(3)])
        let all = try await store.auditEvents(AuditQuery(limit: 10))
        #expect(all.map(\.record) == ["r1", "r3"])
        #expect(all.map(\.seq) == [1, 2])
        #expect(try await AuditVerifier.verify(store, trustedKeys: []).events == 2)
    }

    private static func auditQueriesFilter(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        var other = event(3)
        other.tenant = "beta"
        other.operation = .rotate
        try await store.appendAudit([event(1), event(2), other, event(4)])
        #expect(try await store.auditEvents(AuditQuery(tenant: "beta", limit: 10)).map(\.seq) == [3])
        #expect(try await store.auditEvents(AuditQuery(operation: .decryptRecord, limit: 10)).map(\.seq) == [1, 2, 4])
        #expect(try await store.auditEvents(AuditQuery(afterSeq: 2, limit: 1)).map(\.seq) == [3])
        #expect(try await store.auditEvents(AuditQuery(since: 1_004, limit: 10)).map(\.seq) == [4])
    }

    private static func jobsHeadersPoliciesAndSuspension(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        var tenant = Tenant(name: "acme", key: "local:a", createdAt: 0)
        try await store.createTenant(tenant)
        tenant.key = "local:b"
        tenant.previousKey = "local:a"
        try await store.updateTenantKeys(tenant)
        #expect(try await store.tenant(named: "acme") == tenant)
        #expect(try await store.tenants(usingKey: "local:a").map(\.name) == ["acme"])
        await expectError(.notFound, as: StorageError.self) { try await store.updateTenantKeys(Tenant(name: "zed", key: "k", createdAt: 0)) }
        // Settings and keys are written apart, each setting alone: no write carries others back.
        try await store.updateTenantSettings("acme", TenantSettingsChange(store: .never))
        try await store.updateTenantSettings("acme", TenantSettingsChange(retentionDays: 7, encryptedRequests: .required))
        tenant.store = .never
        tenant.retentionDays = 7
        tenant.encryptedRequests = .required
        #expect(try await store.tenant(named: "acme") == tenant)
        var keys = tenant
        keys.previousKey = nil
        keys.encryptedRequests = .allowed
        try await store.updateTenantKeys(keys)
        tenant.previousKey = nil
        #expect(try await store.tenant(named: "acme") == tenant)
        await expectError(.notFound, as: StorageError.self) { try await store.updateTenantSettings("zed", TenantSettingsChange(store: .never)) }
        tenant.previousKey = "local:a"
        try await store.updateTenantKeys(tenant)

        let records = (0..<5).map { i in
            Record(tenant: "acme", id: "r\(i)", kind: i % 2 == 0 ? "a" : "b", createdAt: Int64(i), expiresAt: nil,
                   metadata: RecordMetadata(), header: [UInt8(i)], body: [9])
        }
        try await store.insert(records)
        #expect(try await store.countRecords(tenant: "acme") == 5)
        let first = try await store.recordHeaders(tenant: "acme", after: nil, limit: 3)
        #expect(first.map(\.id) == ["r0", "r1", "r2"])
        let rest = try await store.recordHeaders(tenant: "acme", after: (id: "r2", kind: "a"), limit: 10)
        #expect(rest.map(\.id) == ["r3", "r4"])

        var job = Job(id: "job_1", tenant: "acme", fromKey: "local:a", toKey: "local:b", total: 5, createdAt: 1)
        try await store.createJob(job)
        job.cursorID = "r1"
        job.cursorKind = "b"
        job.processed = 2
        job.rewrapped = 2
        // r1 changed meanwhile: only r0 is replaced; the job is saved with the headers, its count
        // corrected to what was written.
        let claim = try await store.withJobClaimed(id: "job_1") { current in
            #expect(current.processed == 0)
            // While one worker holds the job, another is told it is busy.
            let other = try await store.withJobClaimed(id: "job_1") { _ in nil }
            #expect(other == .busy)
            return (job, [HeaderChange(id: "r0", kind: "a", old: [0], new: [100]), HeaderChange(id: "r1", kind: "b", old: [42], new: [101])])
        }
        job.rewrapped = 1
        #expect(claim == .saved(job, replaced: 1))
        #expect(try await store.record(tenant: "acme", id: "r0", kind: "a")?.header == [100])
        #expect(try await store.record(tenant: "acme", id: "r1", kind: "b")?.header == [1])
        #expect(try await store.job(id: "job_1") == job)
        #expect(try await store.withJobClaimed(id: "job_1") { _ in nil } == .unchanged(job))
        #expect(try await store.withJobClaimed(id: "job_none") { _ in nil } == .missing)
        // A batch that fails saves nothing: neither headers nor job.
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            _ = try await store.withJobClaimed(id: "job_1") { _ in throw Boom() }
        }
        #expect(try await store.job(id: "job_1") == job)
        #expect(try await store.jobs(status: .running).map(\.id) == ["job_1"])
        job.status = .done
        try await store.updateJob(job)
        #expect(try await store.jobs(status: .running).isEmpty)

        #expect(try await store.policy(key: "local:a") == nil)
        try await store.setPolicy(key: "local:a", document: "{\"grants\":[]}", at: 1)
        #expect(try await store.policy(key: "local:a") == "{\"grants\":[]}")

        try await store.insertToken(TokenRecord(id: "tok_1", tenant: "acme", role: .auditor, hash: [1, 2], createdAt: 0))
        #expect(try await store.token(id: "tok_1")?.suspended == false)
        #expect(try await store.setTokenSuspended(id: "tok_1", true))
        #expect(try await store.token(hash: [1, 2])?.suspended == true)
        #expect(try await store.setTokenSuspended(id: "tok_none", true) == false)

        #expect(try await store.deleteAllRecords(tenant: "acme") == 5)
    }
}
