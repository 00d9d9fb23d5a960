import Foundation
import KeywardAudit
import KeywardStorage
import KeywardStorageTesting
import KeywardTesting
import Testing

/// SQLite, the engine this target runs the conformance suites on (KeywardPostgresTests runs them on
/// PostgreSQL): a database file in a new temporary directory.
struct SQLiteEngine: StoreEngine {
    func open() async throws -> (any RecordStore, AnyObject) {
        let dir = try TemporaryDirectory()
        return (try SQLiteRecordStore(path: dir.file("keyward.sqlite3")), dir)
    }

    func reopen(_ store: any RecordStore) throws -> (any RecordStore, AnyObject?) {
        (try SQLiteRecordStore(path: (store as! SQLiteRecordStore).path), nil)
    }
}

@Suite("RecordStore conformance")
struct RecordStoreConformanceTests {
    /// The engine-independent suite (KeywardStorageTesting), each of its cases on SQLite.
    @Test(arguments: RecordStoreConformance.cases)
    func onSQLite(_ test: StoreConformanceCase) async throws {
        try await test.run(on: SQLiteEngine())
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
