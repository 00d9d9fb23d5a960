import Foundation
import KeywardBlockingIO
#if canImport(Glibc)
import Glibc
#endif

/// Where file contents live: each blob is one ESDK message, written once as a stream and read back
/// as one. The store never sees plaintext; a key names a blob (`files/TENANT/ID`).
public protocol BlobStore: Sendable {
    /// Starts writing the blob `key`. Nothing is readable under `key` until the upload commits; an
    /// upload neither committed nor aborted (a crash) is swept later and never served.
    func upload(_ key: String) async throws -> any BlobUpload
    /// The blob's bytes, in order, in chunks. Throws `notFound` if there is no such blob.
    func download(_ key: String) async throws -> any BlobDownload
    /// Deletes a blob; a missing one is not an error.
    func delete(_ key: String) async throws
    /// Committed blobs under `prefix` last written before `time` (ms since 1970), for the orphan
    /// sweep; on the way, deletes uploads under `prefix` begun (or, where the store can tell, last
    /// written) before `abandoned`, which a crash left behind.
    func sweepable(under prefix: String, before time: Int64, abandoned: Int64) async throws -> [String]
}

/// One blob being written, by one upload at a time (see ``flush()`` for what may run side by side).
public protocol BlobUpload: AnyObject, Sendable {
    /// Appends bytes. It may block (a local file is written here: an upload's batches are
    /// appended from NIO's blocking pool); a store that sends in pieces (S3's parts) keeps them
    /// for ``flush()``.
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Sends what ``append(_:)`` kept, as far as whole pieces allow; nothing where appends write
    /// through. It may run while an append runs on another thread (an upload's sealer appends
    /// while its request's loop flushes), never beside another flush, a commit or an abort.
    func flush() async throws
    /// Makes the whole blob readable under its key, durably.
    func commit() async throws
    /// Discards what was written.
    func abort() async
}

extension BlobUpload {
    /// Appends bytes and sends what whole pieces they complete.
    public func write(_ bytes: [UInt8]) async throws {
        try bytes.withUnsafeBytes { try append($0) }
        try await flush()
    }
}

/// One blob being read.
public protocol BlobDownload: AnyObject, Sendable {
    /// The blob's size in bytes.
    var size: Int { get }
    /// The next bytes (at most `limit`), or nil at the end.
    func next(limit: Int) async throws -> [UInt8]?
    /// Releases the blob (called once, also after an early stop).
    func close()
}

/// A blob whose reads block briefly rather than suspend (a local file), so that a job on a
/// blocking pool can read it beside what it does with the bytes (a download's decryption). A
/// caller on an event loop may read it too, as ``BlobDownload/next(limit:)`` does there.
public protocol LocalBlobDownload: BlobDownload {
    /// Reads the next bytes into `buffer`, blocking; returns how many, 0 at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// The embedded blob store: one file per blob under a folder (`blobs/` in the data folder), written
/// as `NAME.partial-RANDOM` and renamed into place after an fsync, so that a reader never sees a
/// partial blob. Opening, reading, appending and closing are plain blocking calls on the caller's
/// thread (short ones; an upload's appends come from NIO's blocking pool); what can take long (a
/// commit's fsync, a delete, an aborted upload's unlink, the sweep's walk) runs on a ``BlockingIO`` pool's
/// threads (the shared one unless given another).
public struct FolderBlobStore: BlobStore {
    public let root: String
    static let partialMarker = ".partial-"

    /// Where the calls that can take long run.
    let blocking: BlockingIO

    /// - Parameter blocking: where a commit's fsync, deletes and the sweep run (tests pass their own).
    public init(root: String, blocking: BlockingIO = .shared) throws {
        self.root = root
        self.blocking = blocking
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// The path of a key; keys are made by the gateway, but a key that could leave the folder is refused all the same.
    func path(_ key: String) throws -> String {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ p in
            !p.isEmpty && p != "." && p != ".." && p.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
        }), !key.contains(Self.partialMarker) else {
            throw StorageError(.invalidArgument, "blob key \(key) is not a safe relative path")
        }
        return root + "/" + key
    }

    public func upload(_ key: String) async throws -> any BlobUpload {
        let final = try path(key)
        let folder = (final as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let partial = final + Self.partialMarker + UUID().uuidString.lowercased()
        let fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StorageError(.unavailable, "cannot create blob \(key): \(String(cString: strerror(errno)))") }
        return FolderUpload(fd: fd, partial: partial, final: final, folder: folder, blocking: blocking)
    }

    public func download(_ key: String) async throws -> any BlobDownload {
        let fd = open(try path(key), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw StorageError(.notFound, "no blob \(key)") }
            throw StorageError(.unavailable, "cannot open blob \(key): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            Glibc.close(fd)
            throw StorageError(.unavailable, "cannot stat blob \(key)")
        }
        return FolderDownload(fd: fd, size: Int(st.st_size))
    }

    public func delete(_ key: String) async throws {
        let path = try path(key)
        // Freeing a large file's extents takes a while: off the caller's thread.
        try await blocking.run {
            guard unlink(path) == 0 || errno == ENOENT else {
                throw StorageError(.unavailable, "cannot delete blob \(key): \(String(cString: strerror(errno)))")
            }
        }
    }

    public func sweepable(under prefix: String, before time: Int64, abandoned: Int64) async throws -> [String] {
        try await blocking.run { [root] in Self.walk(root: root, under: prefix, before: time, abandoned: abandoned) }
    }

    /// ``sweepable(under:before:abandoned:)``'s walk, blocking.
    private static func walk(root: String, under prefix: String, before time: Int64, abandoned: Int64) -> [String] {
        let base = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        guard let walker = FileManager.default.enumerator(atPath: root + "/" + base) else { return [] }
        var keys: [String] = []
        while let below = walker.nextObject() as? String {
            let relative = base + "/" + below
            var st = stat()
            let full = root + "/" + relative
            guard stat(full, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let modified = Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000
            if relative.contains(Self.partialMarker) {
                if modified < abandoned { unlink(full) }  // an upload a crash left, unwritten since
            } else if modified < time {
                keys.append(relative)
            }
        }
        return keys.sorted()
    }
}

/// A blob being written to its partial file. Used by one request at a time.
final class FolderUpload: BlobUpload, @unchecked Sendable {
    private var fd: Int32
    let partial: String
    let final: String
    let folder: String
    let blocking: BlockingIO

    init(fd: Int32, partial: String, final: String, folder: String, blocking: BlockingIO) {
        self.fd = fd
        self.partial = partial
        self.final = final
        self.folder = folder
        self.blocking = blocking
    }

    deinit { if fd >= 0 { Glibc.close(fd); unlink(partial) } }

    func append(_ b: UnsafeRawBufferPointer) throws {
        var at = 0
        while at < b.count {
            let n = Glibc.write(fd, b.baseAddress! + at, b.count - at)
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageError(.unavailable, "cannot write a blob: \(String(cString: strerror(errno)))")
            }
            at += n
        }
    }

    func flush() async throws {}

    func commit() async throws {
        // The fsync writes out the whole blob (a large one takes a fraction of a second or more):
        // off the caller's thread, an event loop in the gateway.
        try await blocking.run { [self] in try commitBlocking() }
    }

    private func commitBlocking() throws {
        guard fsync(fd) == 0 else { throw StorageError(.unavailable, "cannot sync a blob: \(String(cString: strerror(errno)))") }
        Glibc.close(fd)
        fd = -1
        guard rename(partial, final) == 0 else {
            unlink(partial)
            throw StorageError(.unavailable, "cannot commit a blob: \(String(cString: strerror(errno)))")
        }
        // The rename is durable once the folder is.
        let dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            Glibc.close(dir)
        }
    }

    func abort() async {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
        _ = try? await blocking.run { [partial] in unlink(partial) }
    }
}

/// A blob being read from its file.
final class FolderDownload: LocalBlobDownload, @unchecked Sendable {
    private var fd: Int32
    let size: Int

    init(fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
    }

    deinit { close() }

    func next(limit: Int) async throws -> [UInt8]? {
        let bytes = try [UInt8](unsafeUninitializedCapacity: limit) { b, n in
            n = try read(into: UnsafeMutableRawBufferPointer(b))
        }
        return bytes.isEmpty ? nil : bytes
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        // A read after close is a caller's fault, not the end: it must not pass for one.
        guard fd >= 0 else { throw StorageError(.unavailable, "a blob was read after it was closed") }
        guard buffer.count > 0 else { return 0 }
        while true {
            let r = Glibc.read(fd, buffer.baseAddress!, buffer.count)
            if r < 0, errno == EINTR { continue }
            guard r >= 0 else { throw StorageError(.unavailable, "cannot read a blob: \(String(cString: strerror(errno)))") }
            return r
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
