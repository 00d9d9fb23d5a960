import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The few POSIX file operations the local key store needs, each with a clear error.
public enum FileSystem {
    /// Replaces `path` with `data` so that readers see the old or the new contents, never a mix,
    /// and a crash at any point leaves one of the two: write a temporary file, fsync, rename, fsync
    /// the folder.
    public static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o600) throws {
        let folder = (path as NSString).deletingLastPathComponent
        let temporary = "\(folder)/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw error("cannot create \(temporary)") }
        var ok = data.withUnsafeBytes { writeAll(fd, $0) }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            let e = error("cannot write \(path)")
            unlink(temporary)
            throw e
        }
        syncFolder(folder)
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    static func syncFolder(_ folder: String) {
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func makeFolder(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw error("cannot create the folder \(path)") }
    }

    /// A file's identity and version, to notice that another process replaced it.
    struct Stamp: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    }

    static func stamp(_ path: String) -> Stamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Stamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                     seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec)
    }

    static func error(_ what: String) -> KeyStoreError {
        KeyStoreError(.keyUnavailable, "\(what): \(String(cString: strerror(errno)))")
    }
}

/// An exclusive lock held by one writer at a time, across processes (flock on a lock file) and
/// across threads of this process (flock does not exclude threads sharing the descriptor).
final class FileLock: Sendable {
    private let fd: Int32
    private let threads = Mutex(())

    init(path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystem.error("cannot open the lock \(path)") }
    }

    deinit { close(fd) }

    func withLock<R: Sendable>(_ body: () throws -> R) throws -> R {
        try threads.withLock { _ in
            while flock(fd, LOCK_EX) != 0 {
                guard errno == EINTR else { throw FileSystem.error("cannot lock the key store") }
            }
            defer { flock(fd, LOCK_UN) }
            return try body()
        }
    }
}
