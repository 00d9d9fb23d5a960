import KeywardStorage
import KeywardTesting
import Testing

/// What every record store does, whatever its engine: tenants, tokens, records and their listing
/// and expiry. Run on SQLite by KeywardStorageTests and on PostgreSQL by KeywardPostgresTests.
public enum RecordStoreConformance {
    public static let cases: [StoreConformanceCase] = [
        StoreConformanceCase("tenantsAreCreatedOnceAndFound", tenantsAreCreatedOnceAndFound),
        StoreConformanceCase("tokensAreFoundByHashAndDeleted", tokensAreFoundByHashAndDeleted),
        StoreConformanceCase("recordsRoundTripAndStayWithTheirTenant", recordsRoundTripAndStayWithTheirTenant),
        StoreConformanceCase("concurrentInsertsAllLandAndADuplicateFailsAlone", concurrentInsertsAllLandAndADuplicateFailsAlone),
        StoreConformanceCase("metadataWithAnyTextRoundTrips", metadataWithAnyTextRoundTrips),
        StoreConformanceCase("upsertReplaces", upsertReplaces),
        StoreConformanceCase("listingPagesInBothOrders", listingPagesInBothOrders),
        StoreConformanceCase("purgeRemovesOnlyExpired", purgeRemovesOnlyExpired),
        StoreConformanceCase("aBatchLivesAsLongAsItsMetadataRecord", aBatchLivesAsLongAsItsMetadataRecord),
        StoreConformanceCase("keyStatesAreReplacedAndComeDueOnce", keyStatesAreReplacedAndComeDueOnce),
        StoreConformanceCase("batchesAreLeasedCancelledAndHoldTheirResults", batchesAreLeasedCancelledAndHoldTheirResults),
        StoreConformanceCase("rateLimitsAndCountsRoundTrip", rateLimitsAndCountsRoundTrip),
    ]

    /// Tenants' and tokens' limits are kept and replaced whole; each replica's counts are
    /// replaced (not added to), summed over the other replicas, and deleted by minute.
    private static func rateLimitsAndCountsRoundTrip(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        let big: Int64 = 1 << 40
        try await store.createTenant(Tenant(name: "acme", key: "local:acme", createdAt: 1, rateLimits: RateLimits(requestsPerMinute: 60)))
        #expect(try await store.tenant(named: "acme")?.rateLimits == RateLimits(requestsPerMinute: 60))
        try await store.updateTenantSettings("acme", TenantSettingsChange(retentionDays: 3))
        #expect(try await store.tenant(named: "acme")?.rateLimits == RateLimits(requestsPerMinute: 60), "a change without limits keeps them")
        try await store.updateTenantSettings("acme", TenantSettingsChange(rateLimits: RateLimits(tokensPerMinute: big)))
        #expect(try await store.tenant(named: "acme")?.rateLimits == RateLimits(tokensPerMinute: big), "limits are replaced whole")
        try await store.updateTenantSettings("acme", TenantSettingsChange(rateLimits: RateLimits()))
        #expect(try await store.tenant(named: "acme")?.rateLimits == RateLimits())
        #expect(try await store.tenant(named: "acme")?.retentionDays == 3)

        let app = TokenRecord(id: "tok_1", tenant: "acme", role: .app, hash: [1], createdAt: 5, rateLimits: RateLimits(requestsPerMinute: 2))
        try await store.insertToken(app)
        try await store.insertToken(TokenRecord(id: "tok_2", tenant: nil, role: .admin, hash: [2], createdAt: 6))
        #expect(try await store.token(id: "tok_1") == app)
        #expect(try await store.setTokenRateLimits(id: "tok_1", RateLimits(requestsPerMinute: 3, tokensPerMinute: 4)))
        #expect(try await store.token(id: "tok_1")?.rateLimits == RateLimits(requestsPerMinute: 3, tokensPerMinute: 4))
        #expect(try await !store.setTokenRateLimits(id: "tok_2", RateLimits(requestsPerMinute: 3)), "only app tokens have limits")
        #expect(try await !store.setTokenRateLimits(id: "tok_9", RateLimits(requestsPerMinute: 3)))

        // 450 rows: more than one statement's worth.
        let many = (0..<450).map { RateCount(scope: "token:t\($0)", minute: 100, requests: Int64($0), tokens: 1) }
        try await store.saveRateCounts(many, replica: "a")
        try await store.saveRateCounts([RateCount(scope: "tenant:acme", minute: 100, requests: 5, tokens: 50),
                                        RateCount(scope: "tenant:acme", minute: 101, requests: 1, tokens: 0)], replica: "a")
        try await store.saveRateCounts([RateCount(scope: "tenant:acme", minute: 100, requests: 7, tokens: 70)], replica: "a")
        try await store.saveRateCounts([RateCount(scope: "tenant:acme", minute: 100, requests: 2, tokens: big)], replica: "b")
        let seenByC = try await store.rateCounts(since: 100, excluding: "c").filter { $0.scope == "tenant:acme" }
        #expect(Set(seenByC) == [RateCount(scope: "tenant:acme", minute: 100, requests: 9, tokens: 70 + big),
                                 RateCount(scope: "tenant:acme", minute: 101, requests: 1, tokens: 0)])
        #expect(try await store.rateCounts(since: 100, excluding: "a") == [RateCount(scope: "tenant:acme", minute: 100, requests: 2, tokens: big)])
        #expect(try await store.rateCounts(since: 101, excluding: "b") == [RateCount(scope: "tenant:acme", minute: 101, requests: 1, tokens: 0)])
        #expect(try await store.rateCounts(since: 0, excluding: "b").count == 452)
        try await store.deleteRateCounts(before: 101)
        #expect(try await store.rateCounts(since: 0, excluding: "c").map(\.minute) == [101])
    }

    private static func batchesAreLeasedCancelledAndHoldTheirResults(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        for name in ["a", "b"] { try await store.createTenant(Tenant(name: name, key: "local:\(name)", createdAt: 0)) }
        for (i, id) in ["batch_1", "batch_2", "batch_3"].enumerated() {
            var batch = Batch(id: id, tenant: id == "batch_3" ? "b" : "a", token: "tok_1", endpoint: "/v1/chat/completions",
                              inputFile: "file-1", createdAt: Int64(i), expiresAt: 1000)
            batch.outputExpiresAfter = id == "batch_2" ? 3600 : nil
            try await store.createBatch(batch)
        }
        #expect(try await store.batch(id: "batch_2")?.outputExpiresAfter == 3600)
        #expect(try await store.batch(id: "batch_1")?.outputExpiresAfter == nil)
        #expect(try await store.batches(tenant: "a", after: nil, limit: 10, liveAt: nil).map(\.id) == ["batch_2", "batch_1"])
        #expect(try await store.batches(tenant: "a", after: "batch_2", limit: 10, liveAt: nil).map(\.id) == ["batch_1"])
        await expectError(.notFound, as: StorageError.self) { _ = try await store.batches(tenant: "a", after: "batch_3", limit: 10, liveAt: nil) }
        // One owner at a time until its lease lapses.
        var one = try #require(try await store.claimBatch(id: "batch_1", owner: "r1", until: 100, now: 50))
        #expect(try await store.claimBatch(id: "batch_1", owner: "r2", until: 150, now: 99) == nil)
        one.status = .inProgress
        one.dispatched = 3
        #expect(try await store.saveBatch(one, owner: "r1", now: 99))
        // A lapsed lease is not the owner's to save under or to renew, even before anyone took it.
        #expect(try await !store.saveBatch(one, owner: "r1", now: 101))
        #expect(try await !store.renewBatch(id: "batch_1", owner: "r1", until: 200, now: 101))
        let taken = try #require(try await store.claimBatch(id: "batch_1", owner: "r2", until: 200, now: 101))
        #expect(taken.dispatched == 3 && taken.status == .inProgress)
        #expect(try await !store.saveBatch(one, owner: "r1", now: 102))
        #expect(try await !store.renewBatch(id: "batch_1", owner: "r1", until: 300, now: 102))
        #expect(try await store.renewBatch(id: "batch_1", owner: "r2", until: 220, now: 150))
        #expect(try await store.batch(id: "batch_1")?.leaseUntil == 220)
        // Given up (a shutdown): anyone's at once, and no longer the old owner's to renew.
        try await store.releaseBatch(id: "batch_1", owner: "r1")
        #expect(try await store.batch(id: "batch_1")?.owner == "r2")
        try await store.releaseBatch(id: "batch_1", owner: "r2")
        #expect(try await !store.renewBatch(id: "batch_1", owner: "r2", until: 300, now: 160))
        #expect(try await store.claimBatch(id: "batch_1", owner: "r3", until: 300, now: 160)?.owner == "r3")
        #expect(try await store.claimBatch(id: "batch_1", owner: "r2", until: 300, now: 160) == nil)
        // A cancel is the client's: the runner's saves leave it.
        #expect(try await !store.cancelBatch(tenant: "b", id: "batch_1", at: 7))
        #expect(try await store.cancelBatch(tenant: "a", id: "batch_1", at: 7))
        #expect(try await !store.cancelBatch(tenant: "a", id: "batch_1", at: 8))
        #expect(try await store.saveBatch(taken, owner: "r3", now: 200))
        #expect(try await store.batch(id: "batch_1")?.cancellingAt == 7)
        var done = taken
        done.status = .cancelled
        #expect(try await store.saveBatch(done, owner: "r3", now: 200))
        #expect(try await store.unfinishedBatches().map(\.id) == ["batch_2", "batch_3"])
        #expect(try await store.claimBatch(id: "batch_1", owner: "r2", until: 400, now: 350) == nil)
        // Line results: the records named, of the results' kinds, in the tenant, and only those.
        func record(_ id: String, tenant: String = "a", kind: String = Batch.outputKind) -> Record {
            Record(tenant: tenant, id: id, kind: kind, createdAt: 0, expiresAt: nil, metadata: RecordMetadata(), header: [1], body: [2])
        }
        try await store.insert(["batch_1.0000002", "batch_1.0000000", "batch_10.0000000"].map { record($0) }
                               + [record("batch_1.0000001", kind: Batch.errorKind), record("batch_1.0000000", kind: "file"),
                                  record("batch_1.0000003", tenant: "b")])
        let ids = (0..<5).map { "batch_1.000000\($0)" }
        #expect(try await store.batchResults(tenant: "a", ids: ids).map { "\($0.id) \($0.kind)" }.sorted()
                == ["batch_1.0000000 batch.output", "batch_1.0000001 batch.error", "batch_1.0000002 batch.output"])
        #expect(try await store.batchResults(tenant: "a", ids: []).isEmpty)
        #expect(try await store.deleteBatchResults(tenant: "a", ids: ids) == 3)
        #expect(try await store.batchResults(tenant: "a", ids: ids).isEmpty)
        #expect(try await store.record(tenant: "a", id: "batch_1.0000000", kind: "file") != nil)
        #expect(try await store.record(tenant: "a", id: "batch_10.0000000", kind: Batch.outputKind) != nil)
        #expect(try await store.record(tenant: "b", id: "batch_1.0000003", kind: Batch.outputKind) != nil)
    }

    private static func keyStatesAreReplacedAndComeDueOnce(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        #expect(try await store.keyState(key: "kmip:name=a") == nil)
        let disabled = KeyStateRecord(key: "kmip:name=a", state: .disabled, updatedAt: 1)
        try await store.insertKeyState(disabled)
        await expectError(.alreadyExists, as: StorageError.self) { try await store.insertKeyState(disabled) }
        #expect(try await store.keyState(key: "kmip:name=a") == disabled)
        let pending = KeyStateRecord(key: "kmip:name=a", state: .pendingDeletion, deleteAt: 100, updatedAt: 2)
        #expect(try await store.replaceKeyState(disabled, with: pending))
        // A change from a state read before another change is refused.
        #expect(try await !store.replaceKeyState(disabled, with: KeyStateRecord(key: "kmip:name=a", state: .disabled, updatedAt: 3)))
        try await store.insertKeyState(KeyStateRecord(key: "vault-transit:b", state: .pendingDeletion, deleteAt: 500, updatedAt: 2))
        #expect(try await store.keyState(key: "kmip:name=a") == pending)
        #expect(try await store.keysDueForDeletion(at: 99) == [])
        #expect(try await store.keysDueForDeletion(at: 100) == [pending])
        // Claimed once: a second claim of the same pending state loses.
        let claimed = KeyStateRecord(key: "kmip:name=a", state: .destroyed, deleteAt: 100, updatedAt: 120)
        #expect(try await store.replaceKeyState(pending, with: claimed))
        #expect(try await !store.replaceKeyState(pending, with: claimed))
        #expect(try await store.keysDueForDeletion(at: 120) == [claimed])
        let confirmed = KeyStateRecord(key: "kmip:name=a", state: .destroyed, updatedAt: 121)
        #expect(try await store.replaceKeyState(claimed, with: confirmed))
        #expect(try await store.keysDueForDeletion(at: 1000).map(\.key) == ["vault-transit:b"])
        #expect(try await store.keyStates() == [confirmed, KeyStateRecord(key: "vault-transit:b", state: .pendingDeletion, deleteAt: 500, updatedAt: 2)])
        let b = try #require(try await store.keyState(key: "vault-transit:b"))
        #expect(try await store.replaceKeyState(b, with: nil))
        #expect(try await !store.replaceKeyState(b, with: nil))
        #expect(try await store.keyState(key: "vault-transit:b") == nil)
    }

    private static func tenantsAreCreatedOnceAndFound(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        let a = Tenant(name: "acme", key: "local:acme", store: .onRequest, retentionDays: 7, createdAt: 1)
        try await store.createTenant(a)
        try await store.createTenant(Tenant(name: "beta", key: "local:shared", createdAt: 2))
        try await store.createTenant(Tenant(name: "gamma", key: "local:shared", createdAt: 3))
        await expectError(.alreadyExists, as: StorageError.self) { try await store.createTenant(a) }
        #expect(try await store.tenant(named: "acme") == a)
        #expect(try await store.tenant(named: "nobody") == nil)
        #expect(try await store.tenants().map(\.name) == ["acme", "beta", "gamma"])
        #expect(try await store.tenants(usingKey: "local:shared").map(\.name) == ["beta", "gamma"])
        try await store.ping()
        try await store.maintain()
        #expect(try await store.tenant(named: "acme") == a)
    }

    private static func tokensAreFoundByHashAndDeleted(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "acme", key: "local:acme", createdAt: 1))
        let app = TokenRecord(id: "tok_1", tenant: "acme", role: .app, hash: Array(repeating: 1, count: 32), createdAt: 5)
        let admin = TokenRecord(id: "tok_2", tenant: nil, role: .admin, hash: Array(repeating: 2, count: 32), createdAt: 6)
        try await store.insertToken(app)
        try await store.insertToken(admin)
        await expectError(.alreadyExists, as: StorageError.self) {
            try await store.insertToken(TokenRecord(id: "tok_3", tenant: nil, role: .admin, hash: admin.hash, createdAt: 7))
        }
        // A token of a tenant that does not exist is refused.
        await expectError(.invalidArgument, as: StorageError.self) {
            try await store.insertToken(TokenRecord(id: "tok_4", tenant: "ghost", role: .app, hash: [4], createdAt: 7))
        }
        #expect(try await store.token(hash: app.hash) == app)
        #expect(try await store.token(hash: Array(repeating: 9, count: 32)) == nil)
        #expect(try await store.tokens(role: .admin) == [admin])
        #expect(try await store.deleteToken(id: "tok_1"))
        #expect(try await !store.deleteToken(id: "tok_1"))
        #expect(try await store.token(hash: app.hash) == nil)
    }

    private static func recordsRoundTripAndStayWithTheirTenant(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        for name in ["a", "b"] { try await store.createTenant(Tenant(name: name, key: "local:\(name)", createdAt: 1)) }
        let request = record("a", "r1", "chat.request", at: 10)
        let response = record("a", "r1", "chat.response", at: 10)
        try await store.insert([request, response])
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.request") == request)
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.response") == response)
        #expect(try await store.record(tenant: "b", id: "r1", kind: "chat.response") == nil)
        // By ids, every kind, only the tenant's.
        try await store.insert([record("b", "r9", at: 10)])
        // (Without their metadata: for reading content.)
        var bare = [request, response]
        for i in bare.indices { bare[i].metadata = RecordMetadata() }
        #expect(Set(try await store.records(tenant: "a", ids: ["r1", "nothing"])) == Set(bare))
        let many = (0..<700).map { "x\($0)" } + ["r1", "r9"]
        #expect(try await store.records(tenant: "b", ids: many).map(\.id) == ["r9"])
        #expect(try await store.records(tenant: "a", ids: []) == [])
        // All or nothing: a duplicate in a batch leaves no new row behind.
        await expectError(.alreadyExists, as: StorageError.self) {
            try await store.insert([record("a", "r2", at: 11), record("a", "r1", at: 11)])
        }
        #expect(try await store.record(tenant: "a", id: "r2", kind: "chat.response") == nil)
        // Another tenant's delete removes nothing.
        #expect(try await !store.deleteRecord(tenant: "b", id: "r1", kind: "chat.request"))
        #expect(try await store.deleteRecords(tenant: "b", id: "r1") == 0)
        #expect(try await store.deleteRecord(tenant: "a", id: "r1", kind: "chat.request"))
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.response") == response)
        #expect(try await store.deleteRecords(tenant: "a", id: "r1") == 1)
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.request") == nil)
    }

    private static func concurrentInsertsAllLandAndADuplicateFailsAlone(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        try await store.insert([record("a", "dup", at: 0)])
        let failures = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<200 {
                group.addTask {
                    do {
                        try await store.insert([record("a", i == 100 ? "dup" : "c\(i)", at: Int64(i)),
                                                record("a", i == 100 ? "dup" : "c\(i)", "chat.request", at: Int64(i))])
                        return false
                    } catch let e as StorageError where e.code == .alreadyExists { return true }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 1)
        #expect(try await store.records(RecordQuery(tenant: "a", kind: "chat.response", limit: 1000)).count == 200)
        #expect(try await store.records(RecordQuery(tenant: "a", kind: "chat.request", limit: 1000)).count == 199)
    }

    private static func metadataWithAnyTextRoundTrips(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        var r = record("a", "m", at: 1, model: "we\"ird\\ mødel\n\u{1}")
        r.metadata.upstreamMs = 12.25
        r.metadata.streamed = true
        r.metadata.chain = ["resp_1", "we\"ird"]
        try await store.insert([r])
        #expect(try await store.record(tenant: "a", id: "m", kind: r.kind) == r)
    }

    private static func upsertReplaces(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        var r = record("a", "provider-key:openai", "provider-key", at: 1)
        try await store.upsert(r)
        r.body = [1, 2, 3]
        try await store.upsert(r)
        #expect(try await store.record(tenant: "a", id: r.id, kind: r.kind)?.body == [1, 2, 3])
    }

    private static func listingPagesInBothOrders(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        for name in ["a", "b"] { try await store.createTenant(Tenant(name: name, key: "local:\(name)", createdAt: 1)) }
        // Two records share a timestamp: the id breaks the tie.
        let times: [Int64] = [5, 1, 3, 3, 9]
        for (i, t) in times.enumerated() {
            try await store.insert([record("a", "r\(i)", at: t, model: i == 4 ? "other" : "m"), record("a", "r\(i)", "chat.request", at: t)])
        }
        try await store.insert([record("b", "x", at: 2)])
        func ids(_ q: RecordQuery) async throws -> [String] { try await store.records(q).map(\.id) }
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", limit: 10)) == ["r1", "r2", "r3", "r0", "r4"])
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", limit: 2)) == ["r1", "r2"])
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", after: "r2", limit: 2)) == ["r3", "r0"])
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", limit: 2, order: .descending)) == ["r4", "r0"])
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", after: "r3", limit: 10, order: .descending)) == ["r2", "r1"])
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", limit: 10, label: "other")) == ["r4"])
        #expect(try await ids(RecordQuery(tenant: "b", kind: "chat.response", limit: 10)) == ["x"])
        // Live at a time: records expiring at or before it are left out (the purge deletes them later).
        try await store.insert([record("b", "y", at: 3, expires: 50), record("b", "z", at: 4, expires: 51)])
        #expect(try await ids(RecordQuery(tenant: "b", kind: "chat.response", limit: 10, liveAt: 50)) == ["x", "z"])
        #expect(try await ids(RecordQuery(tenant: "b", kind: "chat.response", after: "x", limit: 10, liveAt: 51)) == [])
        // A cursor from another tenant is not found there.
        await expectError(.notFound, as: StorageError.self) {
            _ = try await store.records(RecordQuery(tenant: "b", kind: "chat.response", after: "r2"))
        }
    }

    private static func aBatchLivesAsLongAsItsMetadataRecord(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        for name in ["a", "b"] { try await store.createTenant(Tenant(name: name, key: "local:\(name)", createdAt: 0)) }
        // Ended and expiring (1), running and expiring (2), ended and kept (3), ended and of the other tenant (4).
        for (i, (id, tenant, expires, ended)) in [("batch_1", "a", 100, true), ("batch_2", "a", 100, false), ("batch_3", "a", nil, true),
                                                  ("batch_4", "b", 100, true)].enumerated() {
            var batch = Batch(id: id, tenant: tenant, token: "tok_1", endpoint: "/v1/chat/completions", inputFile: "file-1",
                              createdAt: Int64(i), expiresAt: 1000)
            if ended { batch.status = .completed }
            try await store.createBatch(batch)
            try await store.insert([record(tenant, id, Batch.metadataKind, at: Int64(i), expires: expires.map(Int64.init))])
        }
        // A record of another kind under an ended batch's id is not its metadata.
        try await store.insert([record("a", "batch_5", Batch.outputKind, at: 5)])
        var five = Batch(id: "batch_5", tenant: "a", token: "tok_1", endpoint: "/v1/embeddings", inputFile: "file-1", createdAt: 5, expiresAt: 1000)
        five.status = .completed
        try await store.createBatch(five)
        // A running batch (2) is listed until it ends, its record expired or not.
        #expect(try await store.batches(tenant: "a", after: nil, limit: 10, liveAt: 99).map(\.id) == ["batch_3", "batch_2", "batch_1"])
        #expect(try await store.batches(tenant: "a", after: nil, limit: 10, liveAt: 100).map(\.id) == ["batch_3", "batch_2"])
        #expect(try await store.batches(tenant: "a", after: nil, limit: 10, liveAt: nil).count == 4)
        #expect(try await store.purgeExpired(before: 101) == 3)  // the records; with them, batches 1, 4 and 5
        for (id, kept) in [("batch_1", false), ("batch_2", true), ("batch_3", true), ("batch_4", false), ("batch_5", false)] {
            #expect(try await (store.batch(id: id) != nil) == kept, "\(id)")
        }
        // Once it ends, a running batch whose record has gone goes at the next pass.
        var two = try #require(try await store.claimBatch(id: "batch_2", owner: "r1", until: 500, now: 200))
        two.status = .failed
        #expect(try await store.saveBatch(two, owner: "r1", now: 200))
        #expect(try await store.purgeExpired(before: 300) == 0)
        #expect(try await store.batch(id: "batch_2") == nil)
        #expect(try await store.batches(tenant: "a", after: nil, limit: 10, liveAt: nil).map(\.id) == ["batch_3"])
    }

    private static func purgeRemovesOnlyExpired(_ engine: any StoreEngine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        try await store.insert([record("a", "old", at: 1, expires: 100), record("a", "new", at: 2, expires: 300), record("a", "kept", at: 3)])
        #expect(try await store.purgeExpired(before: 200) == 1)
        #expect(try await store.records(RecordQuery(tenant: "a", kind: "chat.response")).map(\.id) == ["new", "kept"])
    }
}
