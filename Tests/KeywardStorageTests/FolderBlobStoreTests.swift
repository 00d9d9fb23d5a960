import Foundation
import KeywardBlockingIO
import KeywardStorage
import KeywardTesting
import Testing

/// The embedded blob store: a blob is readable only once committed, an abandoned upload is swept
/// and never listed, and no key leaves the folder.
@Suite("Folder blob store")
struct FolderBlobStoreTests {
    let dir: TemporaryDirectory
    let blobs: FolderBlobStore

    init() throws {
        dir = try TemporaryDirectory()
        blobs = try FolderBlobStore(root: dir.file("blobs"))
    }

    func readAll(_ key: String) async throws -> [UInt8] {
        let d = try await blobs.download(key)
        defer { d.close() }
        var out: [UInt8] = []
        while let chunk = try await d.next(limit: 3) { out += chunk }
        #expect(d.size == out.count)
        return out
    }

    @Test func aBlobIsReadableOnlyOnceCommitted() async throws {
        let up = try await blobs.upload("files/t/f1")
        try await up.write([1, 2, 3, 4])
        try await up.write([5])
        await #expect(throws: StorageError.self) { _ = try await blobs.download("files/t/f1") }
        try await up.commit()
        #expect(try await readAll("files/t/f1") == [1, 2, 3, 4, 5])
        try await blobs.delete("files/t/f1")
        try await blobs.delete("files/t/f1")  // already gone: not an error
        await #expect(throws: StorageError.self) { _ = try await blobs.download("files/t/f1") }
    }

    @Test func anAbortedUploadLeavesNothing() async throws {
        let up = try await blobs.upload("files/t/f2")
        try await up.write(Array(repeating: 7, count: 1000))
        await up.abort()
        let left = try FileManager.default.subpathsOfDirectory(atPath: dir.file("blobs")).filter { $0.hasPrefix("files/t/") }
        #expect(left.isEmpty)
    }

    @Test func theSweepListsCommittedBlobsAndDeletesAbandonedUploads() async throws {
        let done = try await blobs.upload("files/t/kept")
        try await done.write([1])
        try await done.commit()
        var abandoned: (any BlobUpload)? = try await blobs.upload("files/t/crashed")
        try await abandoned?.write([2])
        // A crash: the process is gone without abort or commit; the partial file stays.
        let partials = try FileManager.default.subpathsOfDirectory(atPath: dir.file("blobs")).filter { $0.contains(".partial-") }
        #expect(partials.count == 1)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(try await blobs.sweepable(under: "files/", before: now - 60_000, abandoned: now - 60_000).isEmpty)  // too recent to judge
        #expect(try await blobs.sweepable(under: "files/", before: now + 60_000, abandoned: now - 60_000) == ["files/t/kept"])
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.file("blobs")).filter { $0.contains(".partial-") }.count == 1)
        #expect(try await blobs.sweepable(under: "other/", before: now + 60_000, abandoned: now + 60_000).isEmpty)
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.file("blobs")).filter { $0.contains(".partial-") }.count == 1)
        #expect(try await blobs.sweepable(under: "files/", before: now + 60_000, abandoned: now + 60_000) == ["files/t/kept"])
        let after = try FileManager.default.subpathsOfDirectory(atPath: dir.file("blobs")).filter { $0.contains(".partial-") }
        #expect(after.isEmpty)
        abandoned = nil
    }

    @Test func keysThatCouldLeaveTheFolderAreRefused() async throws {
        for key in ["../x", "files/../../x", "/etc/passwd", "files//x", "files/t/x.partial-1", "files/t/a b", ""] {
            await #expect(throws: StorageError.self, "\(key)") { _ = try await blobs.upload(key) }
            await #expect(throws: StorageError.self, "\(key)") { _ = try await blobs.download(key) }
        }
    }

    /// A commit and a delete run on the store's pool of blocking threads, not on the caller's:
    /// with the pool's one thread held, neither is done after 200 ms (run on the caller's thread,
    /// each would be done at once); released, both are.
    @Test func commitsAndDeletesWaitForTheBlockingPool() async throws {
        let pool = BlockingIO(label: "test-blobs", threads: 1)
        let held = try FolderBlobStore(root: dir.file("held"), blocking: pool)
        let final = dir.file("held") + "/files/t/h1"
        let up = try await held.upload("files/t/h1")
        try await up.write([1, 2, 3])
        let release = DispatchSemaphore(value: 0)
        func whileHeld(_ what: String, done: () -> Bool, _ call: @escaping @Sendable () async throws -> Void) async throws {
            let holding = BlockingIOTests.Count()
            let holder = Task { try await pool.run { holding.add(1); release.wait() } }
            while holding.now == 0 { try await Task.sleep(for: .milliseconds(5)) }
            let running = Task { try await call() }
            try await Task.sleep(for: .milliseconds(200))
            #expect(!done(), "\(what) waited for the pool")
            release.signal()
            try await holder.value
            try await running.value
            #expect(done(), "\(what) done once the pool is free")
        }
        try await whileHeld("the commit", done: { FileManager.default.fileExists(atPath: final) }) { try await up.commit() }
        try await whileHeld("the delete", done: { !FileManager.default.fileExists(atPath: final) }) { try await held.delete("files/t/h1") }
    }
}
