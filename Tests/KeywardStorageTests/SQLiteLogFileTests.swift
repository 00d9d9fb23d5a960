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

        var reader: OpaquePointer?
        try #require(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, nil) == SQLITE_OK)
        defer { sqlite3_close_v2(reader) }
        func scalar(_ sql: String) throws -> String {
            var statement: OpaquePointer?
            try #require(sqlite3_prepare_v2(reader, sql, -1, &statement, nil) == SQLITE_OK)
            defer { sqlite3_finalize(statement) }
            try #require(sqlite3_step(statement) == SQLITE_ROW)
            return String(cString: sqlite3_column_text(statement, 0))
        }

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
        let (calls, replaced) = (after.calls - before.calls, after.replaced - before.replaced)
        #expect(calls >= 300 && replaced >= 8 * calls, "\(replaced) writes gathered into \(calls)")
    }

    @Test func anInMemoryDatabaseHasNoLogToKeep() throws {
        #expect(try SQLiteRecordStore(path: ":memory:").residentLog == nil)
    }
}
