import Foundation
@testable import KeywardStorage
import KeywardTesting
import Testing

/// The SQLite log file: allocated up front, and kept in the page cache while the store is open.
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

    @Test func anInMemoryDatabaseHasNoLogToKeep() throws {
        #expect(try SQLiteRecordStore(path: ":memory:").residentLog == nil)
    }
}
