import Foundation
import KeywardAudit
import KeywardStorage
@testable import KeywardPostgres
import PostgresNIO
import KeywardTesting
import Testing

/// The engines the conformance suite runs on. PostgreSQL needs a server: `scripts/postgres-up`
/// starts a throw-away one on loopback and prints the `KEYWARD_TEST_DATABASE_URL` to export (the
/// README test command does both); any server a test may create databases on will do. Without it
/// the PostgreSQL cases fail, saying so, rather than pass unseen.
enum Engine: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// A fresh, migrated store and what keeps it alive.
    func make() async throws -> (any RecordStore, AnyObject) {
        switch self {
        case .sqlite:
            let dir = try TemporaryDirectory()
            let store = try SQLiteRecordStore(path: dir.file("keyward.sqlite3"))
            try await store.migrate()
            try await store.migrate()  // idempotent
            return (store, dir)
        case .postgres:
            let running = try await TestDatabase.fresh()
            try await running.store.migrate()
            try await running.store.migrate()
            return (running.store, running)
        }
    }
}

extension Engine {
    /// A second store on the same database, as a second process or replica would open it, and what keeps it running.
    func reopen(_ store: any RecordStore) throws -> (any RecordStore, AnyObject?) {
        switch store {
        case let s as SQLiteRecordStore: return (try SQLiteRecordStore(path: s.path), nil)
        case let s as PostgresRecordStore:
            let running = RunningStore(try PostgresRecordStore(url: s.url))
            return (running.store, running)
        default: throw TestDatabase.NotConfigured()
        }
    }
}

/// A PostgreSQL store running until ``shutdown()`` or until this is released.
final class RunningStore: Sendable {
    let store: PostgresRecordStore
    private let running: RunningServices

    init(_ store: PostgresRecordStore) {
        self.store = store
        running = RunningServices([store])
    }

    func shutdown() { running.stop() }
}

/// A new, empty database (`keyward_test_…`) on the test server for each case.
enum TestDatabase {
    struct NotConfigured: Error, CustomStringConvertible {
        var description: String { "KEYWARD_TEST_DATABASE_URL is not set: run scripts/postgres-up and export what it prints" }
    }

    static func serverURL() throws -> PostgresURL {
        guard let url = ProcessInfo.processInfo.environment["KEYWARD_TEST_DATABASE_URL"], !url.isEmpty else { throw NotConfigured() }
        return try PostgresURL(url)
    }

    /// Named `keyward_test_<unix time>_<random>`: databases of runs more than an hour old are
    /// dropped on the way (a test cannot drop its own while its store is still connected).
    static func fresh() async throws -> RunningStore {
        let server = try serverURL()
        let now = Int(Date().timeIntervalSince1970)
        let name = "keyward_test_\(now)_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(8).lowercased()
        let running = RunningStore(try PostgresRecordStore(url: server, maxConnections: 1))
        defer { running.shutdown() }
        let admin = running.store
        for old in try await admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'keyward_test_%'", { try $0.text(0) }) {
            guard let stamp = Int(old.split(separator: "_").dropFirst(2).first ?? ""), stamp < now - 3600 else { continue }
            _ = try? await admin.rows(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(old) WITH (FORCE)"))
        }
        // A fixture, not a call under test: copying the template database can take seconds while
        // every suite runs at once, past the 5 s that calls get by default.
        _ = try await admin.rows(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), limit: .seconds(60))
        return RunningStore(try PostgresRecordStore(url: server.with(database: name)))
    }
}

private func record(_ tenant: String, _ id: String, _ kind: String = "chat.response", at time: Int64,
                    expires: Int64? = nil, model: String = "m") -> Record {
    Record(tenant: tenant, id: id, kind: kind, createdAt: time, expiresAt: expires,
           metadata: RecordMetadata(model: model, status: 200, promptTokens: 3, completionTokens: 5, upstreamMs: 1.5, size: 10),
           header: Array("header-\(id)-\(kind)".utf8), body: Array("body-\(id)".utf8))
}

@Suite("RecordStore conformance")
struct RecordStoreConformanceTests {
    @Test(arguments: Engine.allCases)
    func tenantsAreCreatedOnceAndFound(_ engine: Engine) async throws {
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

    @Test(arguments: Engine.allCases)
    func tokensAreFoundByHashAndDeleted(_ engine: Engine) async throws {
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

    @Test(arguments: Engine.allCases)
    func recordsRoundTripAndStayWithTheirTenant(_ engine: Engine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        for name in ["a", "b"] { try await store.createTenant(Tenant(name: name, key: "local:\(name)", createdAt: 1)) }
        let request = record("a", "r1", "chat.request", at: 10)
        let response = record("a", "r1", "chat.response", at: 10)
        try await store.insert([request, response])
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.request") == request)
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.response") == response)
        #expect(try await store.record(tenant: "b", id: "r1", kind: "chat.response") == nil)
        // All or nothing: a duplicate in a batch leaves no new row behind.
        await expectError(.alreadyExists, as: StorageError.self) {
            try await store.insert([record("a", "r2", at: 11), record("a", "r1", at: 11)])
        }
        #expect(try await store.record(tenant: "a", id: "r2", kind: "chat.response") == nil)
        // Another tenant's delete removes nothing.
        #expect(try await store.deleteRecords(tenant: "b", id: "r1") == 0)
        #expect(try await store.deleteRecords(tenant: "a", id: "r1") == 2)
        #expect(try await store.record(tenant: "a", id: "r1", kind: "chat.request") == nil)
    }

    @Test(arguments: Engine.allCases)
    func concurrentInsertsAllLandAndADuplicateFailsAlone(_ engine: Engine) async throws {
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

    @Test(arguments: Engine.allCases)
    func metadataWithAnyTextRoundTrips(_ engine: Engine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        var r = record("a", "m", at: 1, model: "we\"ird\\ mødel\n\u{1}")
        r.metadata.upstreamMs = 12.25
        r.metadata.streamed = true
        try await store.insert([r])
        #expect(try await store.record(tenant: "a", id: "m", kind: r.kind) == r)
    }

    @Test(arguments: Engine.allCases)
    func upsertReplaces(_ engine: Engine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        var r = record("a", "provider-key:openai", "provider-key", at: 1)
        try await store.upsert(r)
        r.body = [1, 2, 3]
        try await store.upsert(r)
        #expect(try await store.record(tenant: "a", id: r.id, kind: r.kind)?.body == [1, 2, 3])
    }

    @Test(arguments: Engine.allCases)
    func listingPagesInBothOrders(_ engine: Engine) async throws {
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
        #expect(try await ids(RecordQuery(tenant: "a", kind: "chat.response", limit: 10, model: "other")) == ["r4"])
        #expect(try await ids(RecordQuery(tenant: "b", kind: "chat.response", limit: 10)) == ["x"])
        // A cursor from another tenant is not found there.
        await expectError(.notFound, as: StorageError.self) {
            _ = try await store.records(RecordQuery(tenant: "b", kind: "chat.response", after: "r2"))
        }
    }

    @Test(arguments: Engine.allCases)
    func purgeRemovesOnlyExpired(_ engine: Engine) async throws {
        let (store, _dir) = try await engine.make(); _ = _dir
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        try await store.insert([record("a", "old", at: 1, expires: 100), record("a", "new", at: 2, expires: 300), record("a", "kept", at: 3)])
        #expect(try await store.purgeExpired(before: 200) == 1)
        #expect(try await store.records(RecordQuery(tenant: "a", kind: "chat.response")).map(\.id) == ["new", "kept"])
    }

    @Test func sqliteLogIsPreallocatedRestartsOnceLargeAndIsTrimmedPastTwiceThat() async throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteRecordStore(path: dir.file("k.sqlite3"))
        try await store.migrate()
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        let wal = dir.file("k.sqlite3-wal")
        func size() throws -> Int { try FileManager.default.attributesOfItem(atPath: wal)[.size] as! Int }
        var big = record("a", "x", at: 1)
        big.body = Array(repeating: 7, count: 1 << 20)
        var n = 0
        func write(mebibytes: Int) async throws {
            for _ in 0..<mebibytes {
                big.id = "r\(n)"
                n += 1
                try await store.insert([big])
                // An idle store commits on the caller's thread without suspending: 1 MiB
                // commits back to back would hold one of the test run's two executor threads
                // for seconds, and other suites' deadlines would fire before their I/O resumed.
                await Task.yield()
            }
        }
        // The log's blocks are allocated up front, so that no append grows it (see preallocateLog).
        var st = stat()
        #expect(stat(wal, &st) == 0 && Int(st.st_blocks) * 512 >= 128 << 20)
        #expect(try size() == 128 << 20)
        try await write(mebibytes: 70)  // past the 64 MiB bound
        #expect(try size() == 128 << 20)
        try await store.maintain()
        // Writers now start again from the log's beginning: 10 MiB more do not grow the file.
        try await write(mebibytes: 10)
        #expect(try size() == 128 << 20)
        // Past twice the bound (no upkeep meanwhile), the restart trims the file to that.
        try await write(mebibytes: 130)
        #expect(try size() > 128 << 20)
        try await store.maintain()
        try await store.insert([record("a", "after", at: 2)])
        #expect(try size() <= 128 << 20)
        #expect(try await store.record(tenant: "a", id: "r\(n - 1)", kind: big.kind)?.body.count == 1 << 20)
    }

    /// A store of tenant "a" whose log holds 70 MiB (70 records of 1 MiB): past the 64 MiB at
    /// which the next upkeep restarts it, holding writers back.
    private func storeWithALogPastItsBound() async throws -> (SQLiteRecordStore, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        let store = try SQLiteRecordStore(path: dir.file("k.sqlite3"))
        try await store.migrate()
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        var big = record("a", "x", at: 1)
        big.body = Array(repeating: 7, count: 1 << 20)
        for i in 0..<70 {
            big.id = "big\(i)"
            try await store.insert([big])
            await Task.yield()  // as in the test above
        }
        return (store, dir)
    }

    @Test func sqliteInsertsDuringALogRestartAllLand() async throws {
        let (store, _dir) = try await storeWithALogPastItsBound(); _ = _dir
        // The upkeep holds writers back while it restarts the log; inserts meanwhile queue.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.maintain() }
            for i in 0..<300 {
                group.addTask { try await store.insert([record("a", "small\(i)", at: Int64(10 + i))]) }
            }
            try await group.waitForAll()
        }
        #expect(try await store.countRecords(tenant: "a") == 370)
    }

    @Test func sqliteWritersPassTheRoleOnAndACheckpointGetsIt() async throws {
        let (store, _dir) = try await storeWithALogPastItsBound(); _ = _dir
        // Eight writers at once queue behind each other and hand the writer's role on, while
        // the upkeep (whose first pass must restart the log) waits for the role between them.
        let writers = 8, each = 200
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for _ in 0..<20 {
                    try await store.maintain()
                    try await Task.sleep(for: .milliseconds(3))
                }
            }
            for w in 0..<writers {
                group.addTask {
                    for i in 0..<each {
                        let id = "w\(w)-\(i)"
                        let events = try await store.insert([record("a", id, at: Int64(100 + i))],
                                                            audit: [AuditEvent(time: 1, actor: "w\(w)", operation: .encryptRecord, record: id)])
                        #expect(events.count == 1 && events[0].record == id)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.countRecords(tenant: "a") == Int64(70 + writers * each))
        // One unbroken chain holds every insert's event, in commit order.
        #expect(try await AuditVerifier.verify(store, trustedKeys: []).events == Int64(writers * each))
    }

    @Test func sqliteFilesAreOwnerOnly() async throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteRecordStore(path: dir.file("k.sqlite3"))
        try await store.migrate()
        try await store.createTenant(Tenant(name: "a", key: "local:a", createdAt: 1))
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) {
            let mode = try FileManager.default.attributesOfItem(atPath: dir.file(name))[.posixPermissions] as! Int
            #expect(mode & 0o077 == 0, "\(name) has mode \(String(mode, radix: 8))")
        }
    }
}
