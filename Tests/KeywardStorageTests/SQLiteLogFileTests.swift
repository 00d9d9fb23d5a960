import CKeywardSQLiteLog
import CSQLite
import Foundation
import KeywardAudit
@testable import KeywardStorage
import KeywardTesting
import Testing

/// The SQLite log file: allocated up front, kept in the page cache while the store is open, and
/// written a commit at a time.
@Suite struct SQLiteLogFileTests {
    /// Pages of `path`'s first `length` bytes that are in the page cache, through a mapping of our
    /// own that faults nothing in.
    static func residentPages(_ path: String, length: Int) throws -> (resident: Int, total: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        let p = try #require(mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0))
        try #require(p != MAP_FAILED)
        defer { munmap(p, length) }
        let pages = (length + 4095) / 4096
        var vector = [UInt8](repeating: 0, count: pages)
        try #require(mincore(p, length, &vector) == 0)
        return (vector.filter { $0 & 1 == 1 }.count, pages)
    }

    /// The bytes of `file` mapped into this process, from /proc/self/maps.
    static func mappedBytes(of file: String) throws -> Int {
        try String(contentsOfFile: "/proc/self/maps", encoding: .utf8).split(separator: "\n")
            .filter { $0.hasSuffix(" " + file) }
            .map { line -> Int in
                let range = line.prefix { $0 != " " }.split(separator: "-").compactMap { Int($0, radix: 16) }
                return range.count == 2 ? range[1] - range[0] : 0
            }
            .reduce(0, +)
    }

    @Test func theLogIsAllocatedAndKeptMappedInTheCacheWhileTheStoreIsOpen() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyward.sqlite3")
        let length = Int(SQLiteRecordStore.logFileBytes(besides: path))
        #expect(length > 0 && length <= Int(SQLiteRecordStore.maxLogFileBytes))
        var store: SQLiteRecordStore? = try SQLiteRecordStore(path: path)
        try await store!.migrate()
        #expect(store!.residentLog != nil)
        let size = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
        #expect(size == length)
        // The whole log is mapped, so reclaim that takes only unmapped page cache (DAMON's, on
        // this project's machine) leaves it alone; what it would evict after seconds idle cannot
        // be forced here, but every page is cached now.
        #expect(try Self.mappedBytes(of: path + "-wal") == length)
        let (resident, total) = try Self.residentPages(path + "-wal", length: length)
        #expect(resident == total)

        store = nil
        #expect(try Self.mappedBytes(of: path + "-wal") == 0, "closing the store unmaps the log")
    }

    /// The log's frames are gathered and written once per commit (the "keyward-log" VFS), and
    /// another connection, with SQLite's own VFS and file handles, reads every commit as soon as
    /// the insert returns: nothing is published before it is in the file. Fails if the gathered
    /// bytes are written later (the reader finds the index naming frames the file lacks).
    @Test func eachCommitIsInTheLogFileWhenItIsPublished() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("keyward.sqlite3")
        let store = try SQLiteRecordStore(path: path)
        try await store.migrate()
        try await store.createTenant(Tenant(name: "t", key: "local:t", createdAt: 0))

        let reader = try Self.connect(path, vfs: nil)
        defer { sqlite3_close_v2(reader) }
        func scalar(_ sql: String) throws -> String { try Self.scalar(reader, sql) }

        let before = try #require(try store.run { $0.logWrites })
        let body = [UInt8](repeating: 0xA5, count: 900)
        for i in 0..<300 {
            let records = ["request", "response"].map {
                Record(tenant: "t", id: "r\(i)", kind: $0, createdAt: Int64(i), expiresAt: Int64(i) + 1000, metadata: RecordMetadata(),
                       header: [UInt8(i & 0xFF)], body: body)
            }
            try await store.insert(records, audit: [AuditEvent(time: Int64(i), actor: "test", tenant: "t", operation: .encryptRecord,
                                                               record: "r\(i)")])
            #expect(try scalar("SELECT count(*) || '/' || coalesce(max(length(body)), 0) FROM records WHERE id = 'r\(i)'") == "2/900")
            #expect(try scalar("SELECT count(*) FROM audit_events WHERE record = 'r\(i)'") == "1")
        }
        #expect(try scalar("PRAGMA integrity_check") == "ok")
        // Each commit writes a header and a page per frame, at least four frames here (the table,
        // two of its indexes, the audit table): at least eight of SQLite's calls in each of ours.
        let after = try #require(try store.run { $0.logWrites })
        let (calls, gathered) = (after.calls - before.calls, after.gathered - before.gathered)
        #expect(calls >= 300 && gathered >= 8 * calls, "\(gathered) writes gathered into \(calls)")
    }

    /// A connection of our own, through the keyward-log VFS or (nil) SQLite's default one.
    static func connect(_ path: String, vfs: UnsafePointer<CChar>?) throws -> OpaquePointer {
        #expect(kw_sqlite_log_vfs_register() == SQLITE_OK)
        var db: OpaquePointer?
        try #require(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK)
        return try #require(db)
    }

    static func exec(_ db: OpaquePointer, _ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        try #require(rc == SQLITE_OK, "\(sql): \(String(cString: sqlite3_errmsg(db)))")
    }

    static func scalar(_ db: OpaquePointer, _ sql: String) throws -> String {
        var statement: OpaquePointer?
        try #require(sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, "\(String(cString: sqlite3_errmsg(db)))")
        defer { sqlite3_finalize(statement) }
        let rc = sqlite3_step(statement)
        try #require(rc == SQLITE_ROW, "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        return String(cString: sqlite3_column_text(statement, 0))
    }

    /// Two connections to a new WAL database holding `t(who, x)`: `a` through the keyward-log VFS,
    /// `b` through SQLite's own.
    static func twoConnections(_ dir: TemporaryDirectory) throws -> (a: OpaquePointer, b: OpaquePointer) {
        let path = dir.file("log.sqlite3")
        let a = try connect(path, vfs: kw_sqlite_log_vfs_name)
        try exec(a, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(who TEXT, x BLOB)")
        return (a, try connect(path, vfs: nil))
    }

    /// `b` commits five rows where `a`'s abandoned frames were; `a` reads them whole.
    static func otherCommitIsReadWhole(_ a: OpaquePointer, _ b: OpaquePointer) throws {
        try exec(b, "BEGIN; " + rows(5, "b", bytes: 3000) + "; COMMIT")
        #expect(try scalar(a, "SELECT count(*) || ' ' || sum(length(x)) FROM t GROUP BY who") == "5 15000")
        #expect(try scalar(a, "PRAGMA integrity_check") == "ok")
    }

    static func rows(_ n: Int, _ who: String, bytes: Int) -> String {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(n)) INSERT INTO t SELECT '\(who)', randomblob(\(bytes)) FROM n"
    }

    /// A transaction that spilled its cache into the log (frames gathered, no commit) and rolled
    /// back leaves nothing to write once its write lock is released: another connection then
    /// commits where those frames were, and the first one's next read must not write them over
    /// that commit. Fails (the other commit's rows unreadable or a malformed database) if what was
    /// gathered is written after the release.
    @Test func aRolledBackSpillNeverReachesTheLog() throws {
        let dir = try TemporaryDirectory()
        let (a, b) = try Self.twoConnections(dir)
        defer { sqlite3_close_v2(a); sqlite3_close_v2(b) }

        // An empty log first, so that rolling back reads nothing from it (a read would write
        // the gathered frames while the lock is still held, which is harmless).
        try Self.exec(a, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA cache_size=10; BEGIN; " + Self.rows(30, "a", bytes: 3000))
        var calls: Int64 = 0, gathered: Int64 = 0, pending: Int64 = 0
        try #require(kw_sqlite_log_counts(a, &calls, &gathered, &pending) == SQLITE_OK)
        #expect(pending > 8 * 4096, "the transaction's spilled frames are gathered, not yet written")
        try Self.exec(a, "ROLLBACK")
        var callsAfter: Int64 = 0
        try #require(kw_sqlite_log_counts(a, &callsAfter, &gathered, &pending) == SQLITE_OK)
        #expect(callsAfter == calls, "rolling back wrote nothing: the spilled frames were still gathered at the release")
        #expect(pending == 0, "the release dropped them")
        try Self.otherCommitIsReadWhole(a, b)
        #expect(try Self.scalar(b, "SELECT count(*) FROM t WHERE who = 'b'") == "5")

        // One commit larger than the buffer (and than the 128 KiB the default VFS writes in one
        // call): written in several calls, all before the other connection reads it.
        try Self.exec(a, "PRAGMA cache_size=2000; INSERT INTO t VALUES ('big', randomblob(300000))")
        #expect(try Self.scalar(b, "SELECT length(x) FROM t WHERE who = 'big'") == "300000")
        #expect(try Self.scalar(b, "PRAGMA integrity_check") == "ok")
    }

    /// In exclusive locking mode SQLite takes the log's locks without the shared memory, so the
    /// write lock's release is not seen: nothing is gathered then, and another connection's commit
    /// after the mode ends is read whole. Fails (frames gathered, or the commit unreadable) if the
    /// log's writes are gathered while the database file is locked EXCLUSIVE.
    @Test func exclusiveLockingModeWritesTheLogDirectly() throws {
        let dir = try TemporaryDirectory()
        let (a, b) = try Self.twoConnections(dir)
        defer { sqlite3_close_v2(a); sqlite3_close_v2(b) }
        try Self.exec(a, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA wal_checkpoint(TRUNCATE); PRAGMA cache_size=10; BEGIN; "
                      + Self.rows(30, "a", bytes: 3000))
        var calls: Int64 = 0, gathered: Int64 = 0, pending: Int64 = 0
        try #require(kw_sqlite_log_counts(a, &calls, &gathered, &pending) == SQLITE_OK)
        #expect(pending == 0, "nothing gathered under an EXCLUSIVE lock")
        try Self.exec(a, "ROLLBACK; PRAGMA locking_mode=NORMAL; SELECT count(*) FROM t")
        try Self.otherCommitIsReadWhole(a, b)
    }

    @Test func anInMemoryDatabaseHasNoLogToKeep() throws {
        #expect(try SQLiteRecordStore(path: ":memory:").residentLog == nil)
    }
}
