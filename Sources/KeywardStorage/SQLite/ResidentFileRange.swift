#if canImport(Glibc)
import Glibc
#endif

/// The first bytes of a file, mapped read-only and faulted in, so that the kernel keeps them in
/// its page cache as long as the mapping lives.
///
/// Why the SQLite log needs it: its frames (a 4 KiB page plus a 24-byte header) never line up
/// with memory pages, so appending to a log page the kernel has dropped from its cache first
/// reads that page back from disk — on an event loop thread, and queued behind whatever the
/// checkpoint is writing back: stalls of tens of milliseconds. Each log page is written once per
/// log cycle (about a second under load) and then not touched, which is what proactive reclaim
/// takes for cold: this project's machine runs DAMON's `pageout` on unmapped page-cache pages idle
/// for 6 s. It leaves mapped pages alone; ordinary reclaim takes them only when memory is short.
final class ResidentFileRange: @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    private let length: Int

    /// Maps `length` bytes of the file at `path`; nil if it cannot be opened or mapped (the
    /// database works without it, only slower under some hosts' reclaim).
    init?(path: String, length: Int) {
        // Only our own fd of the log is opened and closed: SQLite holds POSIX locks on the
        // database and -shm files, never on the log, so closing this one drops none of them.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard length > 0, let p = mmap(nil, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0), p != MAP_FAILED else {
            return nil
        }
        base = p
        self.length = length
    }

    deinit { munmap(base, length) }
}
